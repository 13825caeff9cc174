-- OPTIONAL, NOT APPLIED BY DEFAULT: ClickHouse reads the topics itself (real servers only).
--
-- Instead of the sink (consumers/sink.py), a ClickHouse server can consume the topics with
-- its Kafka table engine and fill the same tables through materialized views. See README.md
-- in this folder for the steps; in short:
--   1. apply deploy/clickhouse/0*.sql (the tables) as usual;
--   2. install the executable UDF driftwatch_decode (driftwatch_decode.py + the XML in
--      README.md): ClickHouse cannot decode Avro single-object encoding itself;
--   3. edit kafka_broker_list / kafka_topic_list (topic prefix) / kafka_group_name below,
--      and security settings if needed (<kafka> section of the server config);
--   4. run this file, and do not run the sink for the same tables (both would write).
--
-- The tables stay ReplacingMergeTrees keyed by the record ids, so the Kafka engine's
-- at-least-once delivery collapses exactly as the sink's does, and the rollup views of
-- 006_rollups.sql see these inserts too. Records that do not decode are skipped here
-- (WHERE NOT JSONHas(j, '_error')); the sink instead stores them in dead_letters.
-- Generated from consumers/rows.py's column lists; tests/unit/test_kafka_engine_ddl.py
-- checks every view's SELECT gives the sink's rows for the same records.

-- drift_stats <- topic {prefix}.stats (DriftStat)
CREATE TABLE IF NOT EXISTS drift_stats_queue (value String)
ENGINE = Kafka
SETTINGS kafka_broker_list = 'broker1:9092',
         kafka_topic_list = 'drift.stats',
         kafka_group_name = 'clickhouse-drift_stats',
         kafka_format = 'RawBLOB';

CREATE MATERIALIZED VIEW IF NOT EXISTS drift_stats_from_kafka TO drift_stats AS
SELECT
    JSONExtract(j, 'stat_id', 'String') AS stat_id,
    JSONExtract(j, 'schema_version', 'UInt16') AS schema_version,
    JSONExtract(j, 'model', 'String') AS model,
    JSONExtract(j, 'slice', 'String') AS slice,
    JSONExtract(j, 'feature', 'String') AS feature,
    JSONExtract(j, 'detector', 'String') AS detector,
    JSONExtract(j, 'count', 'Int64') AS count,
    JSONExtract(j, 'mean', 'Float64') AS mean,
    JSONExtract(j, 'std', 'Float64') AS std,
    JSONExtract(j, 'missing_rate', 'Float64') AS missing_rate,
    JSONExtract(j, 'drift_score', 'Float64') AS drift_score,
    JSONExtract(j, 'detector_state', 'String') AS detector_state,
    JSONExtract(j, 'topic', 'String') AS topic,
    JSONExtract(j, 'partition', 'Int32') AS partition,
    JSONExtract(j, 'first_offset', 'Int64') AS first_offset,
    JSONExtract(j, 'last_offset', 'Int64') AS last_offset,
    fromUnixTimestamp64Milli(JSONExtractInt(j, 'window_start_event_time'), 'UTC') AS window_start_event_time,
    fromUnixTimestamp64Milli(JSONExtractInt(j, 'window_end_event_time'), 'UTC') AS window_end_event_time,
    JSONExtract(j, 'worker_id', 'String') AS worker_id,
    fromUnixTimestamp64Milli(JSONExtractInt(j, 'emitted_at'), 'UTC') AS emitted_at
FROM (SELECT driftwatch_decode('DriftStat', base64Encode(value)) AS j FROM drift_stats_queue)
WHERE NOT JSONHas(j, '_error');

-- drift_alerts <- topic {prefix}.alerts (DriftAlert)
CREATE TABLE IF NOT EXISTS drift_alerts_queue (value String)
ENGINE = Kafka
SETTINGS kafka_broker_list = 'broker1:9092',
         kafka_topic_list = 'drift.alerts',
         kafka_group_name = 'clickhouse-drift_alerts',
         kafka_format = 'RawBLOB';

CREATE MATERIALIZED VIEW IF NOT EXISTS drift_alerts_from_kafka TO drift_alerts AS
SELECT
    JSONExtract(j, 'alert_id', 'String') AS alert_id,
    JSONExtract(j, 'schema_version', 'UInt16') AS schema_version,
    JSONExtract(j, 'alert_type', 'String') AS alert_type,
    JSONExtract(j, 'severity', 'String') AS severity,
    JSONExtract(j, 'model', 'String') AS model,
    JSONExtract(j, 'slice', 'String') AS slice,
    JSONExtract(j, 'feature', 'Nullable(String)') AS feature,
    JSONExtract(j, 'detector', 'String') AS detector,
    JSONExtract(j, 'detector_params', 'Map(String, String)') AS detector_params,
    JSONExtract(j, 'statistic', 'Float64') AS statistic,
    JSONExtract(j, 'threshold', 'Float64') AS threshold,
    JSONExtract(j, 'confidence', 'Float64') AS confidence,
    JSONExtract(j, 'reference', 'count', 'Int64') AS reference_count,
    JSONExtract(j, 'reference', 'mean', 'Float64') AS reference_mean,
    JSONExtract(j, 'reference', 'std', 'Float64') AS reference_std,
    JSONExtract(j, 'reference', 'min', 'Float64') AS reference_min,
    JSONExtract(j, 'reference', 'max', 'Float64') AS reference_max,
    JSONExtract(j, 'current', 'count', 'Int64') AS current_count,
    JSONExtract(j, 'current', 'mean', 'Float64') AS current_mean,
    JSONExtract(j, 'current', 'std', 'Float64') AS current_std,
    JSONExtract(j, 'current', 'min', 'Float64') AS current_min,
    JSONExtract(j, 'current', 'max', 'Float64') AS current_max,
    JSONExtract(j, 'topic', 'String') AS topic,
    JSONExtract(j, 'partition', 'Int32') AS partition,
    JSONExtract(j, 'first_offset', 'Int64') AS first_offset,
    JSONExtract(j, 'last_offset', 'Int64') AS last_offset,
    fromUnixTimestamp64Milli(JSONExtractInt(j, 'window_start_event_time'), 'UTC') AS window_start_event_time,
    fromUnixTimestamp64Milli(JSONExtractInt(j, 'window_end_event_time'), 'UTC') AS window_end_event_time,
    JSONExtract(j, 'worker_id', 'String') AS worker_id,
    JSONExtract(j, 'app_version', 'String') AS app_version,
    fromUnixTimestamp64Milli(JSONExtractInt(j, 'detected_at'), 'UTC') AS detected_at
FROM (SELECT driftwatch_decode('DriftAlert', base64Encode(value)) AS j FROM drift_alerts_queue)
WHERE NOT JSONHas(j, '_error');

-- dead_letters <- topic {prefix}.events.dlq (DeadLetter)
CREATE TABLE IF NOT EXISTS dead_letters_queue (value String)
ENGINE = Kafka
SETTINGS kafka_broker_list = 'broker1:9092',
         kafka_topic_list = 'drift.events.dlq',
         kafka_group_name = 'clickhouse-dead_letters',
         kafka_format = 'RawBLOB';

CREATE MATERIALIZED VIEW IF NOT EXISTS dead_letters_from_kafka TO dead_letters AS
SELECT
    JSONExtract(j, 'source_topic', 'String') AS source_topic,
    JSONExtract(j, 'source_partition', 'Int32') AS source_partition,
    JSONExtract(j, 'source_offset', 'Int64') AS source_offset,
    JSONExtract(j, 'schema_version', 'UInt16') AS schema_version,
    JSONExtract(j, 'reason', 'String') AS reason,
    JSONExtract(j, 'error_type', 'String') AS error_type,
    JSONExtract(j, 'original_key', 'Nullable(String)') AS original_key_b64,
    JSONExtract(j, 'original_value', 'Nullable(String)') AS original_value_b64,
    toUInt32(length(base64Decode(JSONExtractString(j, 'original_value')))) AS value_size,
    substringUTF8(toValidUTF8(base64Decode(JSONExtractString(j, 'original_value'))), 1, 1024) AS value_preview,
    if(JSONType(j, 'source_timestamp') = 'Null', NULL, fromUnixTimestamp64Milli(JSONExtractInt(j, 'source_timestamp'), 'UTC')) AS source_timestamp,
    JSONExtract(j, 'worker_id', 'String') AS worker_id,
    fromUnixTimestamp64Milli(JSONExtractInt(j, 'failed_at'), 'UTC') AS failed_at
FROM (SELECT driftwatch_decode('DeadLetter', base64Encode(value)) AS j FROM dead_letters_queue)
WHERE NOT JSONHas(j, '_error');

-- retrain_requests <- topic {prefix}.retrain.requests (RetrainRequest)
CREATE TABLE IF NOT EXISTS retrain_requests_queue (value String)
ENGINE = Kafka
SETTINGS kafka_broker_list = 'broker1:9092',
         kafka_topic_list = 'drift.retrain.requests',
         kafka_group_name = 'clickhouse-retrain_requests',
         kafka_format = 'RawBLOB';

CREATE MATERIALIZED VIEW IF NOT EXISTS retrain_requests_from_kafka TO retrain_requests AS
SELECT
    JSONExtract(j, 'request_id', 'String') AS request_id,
    JSONExtract(j, 'schema_version', 'UInt16') AS schema_version,
    JSONExtract(j, 'alert_ids', 'Array(String)') AS alert_ids,
    JSONExtract(j, 'model', 'String') AS model,
    JSONExtract(j, 'slices', 'Array(String)') AS slices,
    JSONExtract(j, 'modules', 'Array(String)') AS modules,
    JSONExtract(j, 'tier', 'String') AS tier,
    JSONExtractString(j, 'snapshot', 'topic') AS snapshot_topic,
    arrayMap(r -> toInt32(JSONExtractInt(r, 'partition')), JSONExtractArrayRaw(j, 'snapshot', 'ranges')) AS snapshot_partitions,
    arrayMap(r -> JSONExtractInt(r, 'start_offset'), JSONExtractArrayRaw(j, 'snapshot', 'ranges')) AS snapshot_start_offsets,
    arrayMap(r -> JSONExtractInt(r, 'end_offset'), JSONExtractArrayRaw(j, 'snapshot', 'ranges')) AS snapshot_end_offsets,
    JSONExtract(j, 'snapshot', 'slice_filter', 'Array(String)') AS snapshot_slice_filter,
    JSONExtractBool(j, 'snapshot', 'labelled_only') AS snapshot_labelled_only,
    JSONExtract(j, 'priority', 'Int32') AS priority,
    JSONExtract(j, 'policy_version', 'String') AS policy_version,
    fromUnixTimestamp64Milli(JSONExtractInt(j, 'created_at'), 'UTC') AS created_at
FROM (SELECT driftwatch_decode('RetrainRequest', base64Encode(value)) AS j FROM retrain_requests_queue)
WHERE NOT JSONHas(j, '_error');

-- retrain_results <- topic {prefix}.retrain.results (RetrainResult)
CREATE TABLE IF NOT EXISTS retrain_results_queue (value String)
ENGINE = Kafka
SETTINGS kafka_broker_list = 'broker1:9092',
         kafka_topic_list = 'drift.retrain.results',
         kafka_group_name = 'clickhouse-retrain_results',
         kafka_format = 'RawBLOB';

CREATE MATERIALIZED VIEW IF NOT EXISTS retrain_results_from_kafka TO retrain_results AS
SELECT
    JSONExtract(j, 'request_id', 'String') AS request_id,
    JSONExtract(j, 'schema_version', 'UInt16') AS schema_version,
    JSONExtract(j, 'model', 'String') AS model,
    JSONExtract(j, 'new_version', 'Nullable(String)') AS new_version,
    JSONExtract(j, 'parent_version', 'Nullable(String)') AS parent_version,
    JSONExtract(j, 'tier', 'String') AS tier,
    JSONExtract(j, 'slices', 'Array(String)') AS slices,
    JSONExtract(j, 'modules_updated', 'Array(String)') AS modules_updated,
    JSONExtract(j, 'params_updated', 'Int64') AS params_updated,
    JSONExtract(j, 'params_total', 'Int64') AS params_total,
    JSONExtract(j, 'train_seconds', 'Float64') AS train_seconds,
    JSONExtract(j, 'metric_name', 'String') AS metric_name,
    JSONExtract(j, 'metric_before', 'Float64') AS metric_before,
    JSONExtract(j, 'metric_after', 'Float64') AS metric_after,
    JSONExtract(j, 'other_slices_max_regression', 'Float64') AS other_slices_max_regression,
    JSONExtract(j, 'latency_ms', 'Nullable(Float64)') AS latency_ms,
    JSONExtract(j, 'decision', 'String') AS decision,
    JSONExtract(j, 'reason', 'String') AS reason,
    JSONExtract(j, 'artifact_uri', 'Nullable(String)') AS artifact_uri,
    fromUnixTimestamp64Milli(JSONExtractInt(j, 'finished_at'), 'UTC') AS finished_at,
    JSONExtract(j, 'cause', 'Nullable(String)') AS cause,
    JSONExtract(j, 'module_scores', 'Map(String, Float64)') AS module_scores,
    JSONExtract(j, 'checks', 'Map(String, Float64)') AS checks
FROM (SELECT driftwatch_decode('RetrainResult', base64Encode(value)) AS j FROM retrain_results_queue)
WHERE NOT JSONHas(j, '_error');

-- model_rollouts <- topic {prefix}.models (ModelUpdate)
CREATE TABLE IF NOT EXISTS model_rollouts_queue (value String)
ENGINE = Kafka
SETTINGS kafka_broker_list = 'broker1:9092',
         kafka_topic_list = 'drift.models',
         kafka_group_name = 'clickhouse-model_rollouts',
         kafka_format = 'RawBLOB';

CREATE MATERIALIZED VIEW IF NOT EXISTS model_rollouts_from_kafka TO model_rollouts AS
SELECT
    JSONExtract(j, 'update_id', 'String') AS update_id,
    JSONExtract(j, 'schema_version', 'UInt16') AS schema_version,
    JSONExtract(j, 'model', 'String') AS model,
    JSONExtract(j, 'version', 'String') AS version,
    JSONExtract(j, 'previous_version', 'Nullable(String)') AS previous_version,
    JSONExtract(j, 'current_version', 'Nullable(String)') AS current_version,
    JSONExtract(j, 'stage', 'String') AS stage,
    JSONExtract(j, 'canary_fraction', 'Float64') AS canary_fraction,
    JSONExtract(j, 'slices', 'Array(String)') AS slices,
    JSONExtract(j, 'decision', 'Nullable(String)') AS decision,
    JSONExtract(j, 'reason', 'String') AS reason,
    JSONExtract(j, 'request_id', 'Nullable(String)') AS request_id,
    JSONExtract(j, 'statistic', 'Nullable(Float64)') AS statistic,
    JSONExtract(j, 'events', 'Int64') AS events,
    JSONExtract(j, 'candidate_loss', 'Nullable(Float64)') AS candidate_loss,
    JSONExtract(j, 'incumbent_loss', 'Nullable(Float64)') AS incumbent_loss,
    fromUnixTimestamp64Milli(JSONExtractInt(j, 'updated_at'), 'UTC') AS updated_at
FROM (SELECT driftwatch_decode('ModelUpdate', base64Encode(value)) AS j FROM model_rollouts_queue)
WHERE NOT JSONHas(j, '_error');
