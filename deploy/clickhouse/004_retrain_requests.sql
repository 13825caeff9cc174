-- retrain_requests: one row per RetrainRequest record (written by the policy router).
--
-- The data snapshot is flattened: snapshot_topic, the offset ranges as three parallel
-- arrays (snapshot_partitions[i], snapshot_start_offsets[i], snapshot_end_offsets[i],
-- end exclusive), snapshot_slice_filter and snapshot_labelled_only.
--
-- Deduplication: one row per request_id after merges (sorting key (model, request_id));
-- exact queries use FINAL or argMax(..., inserted_at) GROUP BY request_id.
-- TTL runs on inserted_at (see 001_drift_stats.sql for why not on event time).
CREATE TABLE IF NOT EXISTS retrain_requests
(
    request_id             String,
    schema_version         UInt16,
    alert_ids              Array(String),
    model                  LowCardinality(String),
    slices                 Array(String),
    modules                Array(String),
    tier                   LowCardinality(String) COMMENT 'ADAPTER, MODULE, FULL',
    snapshot_topic         LowCardinality(String),
    snapshot_partitions    Array(Int32),
    snapshot_start_offsets Array(Int64),
    snapshot_end_offsets   Array(Int64) COMMENT 'exclusive',
    snapshot_slice_filter  Array(String),
    snapshot_labelled_only Bool,
    priority               Int32,
    policy_version         LowCardinality(String),
    created_at             DateTime64(3, 'UTC'),
    inserted_at            DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (model, request_id)
TTL toDateTime(inserted_at) + INTERVAL 90 DAY
COMMENT 'RetrainRequest records; dedup by request_id: query with FINAL or argMax(..., inserted_at) GROUP BY request_id'
