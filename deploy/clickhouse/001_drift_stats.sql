-- drift_stats: one row per DriftStat record (periodic summary of one model x slice x feature).
--
-- Deduplication: at-least-once delivery may insert the same stat_id more than once.
-- ReplacingMergeTree keeps one row per sorting key, but only when parts merge, so
-- exact queries read with FINAL (SELECT ... FROM drift_stats FINAL) or collapse with
-- GROUP BY stat_id / argMax(col, inserted_at). The sorting key holds only columns that
-- are fixed for a given stat_id (never wall-clock times), so duplicates share one key.
--
-- TTL runs on inserted_at, not on event time: replayed or synthetic historical events
-- carry old event times and would be dropped right at insert by an event-time TTL.
CREATE TABLE IF NOT EXISTS drift_stats
(
    stat_id                 String,
    schema_version          UInt16,
    model                   LowCardinality(String),
    slice                   LowCardinality(String),
    feature                 LowCardinality(String),
    detector                LowCardinality(String),
    count                   Int64,
    mean                    Float64,
    std                     Float64,
    missing_rate            Float64,
    drift_score             Float64,
    detector_state          LowCardinality(String) COMMENT 'warmup, stable or drift',
    topic                   LowCardinality(String),
    partition               Int32,
    first_offset            Int64,
    last_offset             Int64,
    window_start_event_time DateTime64(3, 'UTC'),
    window_end_event_time   DateTime64(3, 'UTC'),
    worker_id               LowCardinality(String),
    emitted_at              DateTime64(3, 'UTC'),
    inserted_at             DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (model, slice, feature, stat_id)
TTL toDateTime(inserted_at) + INTERVAL 90 DAY
COMMENT 'DriftStat records; dedup by stat_id: query with FINAL or argMax(..., inserted_at) GROUP BY stat_id'
