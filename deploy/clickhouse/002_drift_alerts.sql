-- drift_alerts: one row per DriftAlert record.
--
-- Deduplication: alert_id is deterministic (a replay makes the same id), and the sink
-- may insert an alert more than once (at-least-once). ReplacingMergeTree collapses rows
-- with the same sorting key (model, slice, alert_id) when parts merge; the key holds no
-- wall-clock column (detected_at differs between replays), so all copies share one key.
-- Until a merge has run, duplicates are visible: exact queries use FINAL
--   SELECT slice, count() FROM drift_alerts FINAL GROUP BY slice
-- or collapse by id: SELECT alert_id, argMax(severity, inserted_at) ... GROUP BY alert_id.
--
-- The reference and current window summaries are flattened to reference_* / current_*.
-- TTL runs on inserted_at (see 001_drift_stats.sql for why not on event time).
CREATE TABLE IF NOT EXISTS drift_alerts
(
    alert_id                String,
    schema_version          UInt16,
    alert_type              LowCardinality(String) COMMENT 'DATA_DRIFT, PERFORMANCE_DRIFT, LABEL_DRIFT, DATA_QUALITY',
    severity                LowCardinality(String) COMMENT 'LOW, MEDIUM, HIGH',
    model                   LowCardinality(String),
    slice                   LowCardinality(String),
    feature                 Nullable(String) COMMENT 'NULL for performance drift',
    detector                LowCardinality(String),
    detector_params         Map(String, String),
    statistic               Float64,
    threshold               Float64,
    confidence              Float64,
    reference_count         Int64,
    reference_mean          Float64,
    reference_std           Float64,
    reference_min           Float64,
    reference_max           Float64,
    current_count           Int64,
    current_mean            Float64,
    current_std             Float64,
    current_min             Float64,
    current_max             Float64,
    topic                   LowCardinality(String),
    partition               Int32,
    first_offset            Int64,
    last_offset             Int64,
    window_start_event_time DateTime64(3, 'UTC'),
    window_end_event_time   DateTime64(3, 'UTC'),
    worker_id               LowCardinality(String),
    app_version             LowCardinality(String),
    detected_at             DateTime64(3, 'UTC'),
    inserted_at             DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (model, slice, alert_id)
TTL toDateTime(inserted_at) + INTERVAL 90 DAY
COMMENT 'DriftAlert records; dedup by alert_id: query with FINAL or argMax(..., inserted_at) GROUP BY alert_id'
