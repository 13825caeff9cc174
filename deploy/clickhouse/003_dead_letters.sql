-- dead_letters: messages that could not be processed, from two origins:
--   * DeadLetter records read from the dead-letter topic (written by streams), and
--   * messages the ClickHouse sink itself could not decode (it records them here and
--     never produces them to the dead-letter topic, which would loop).
-- source_topic / source_partition / source_offset say where the original message lives.
--
-- The original key and value are arbitrary bytes: they are stored base64-encoded
-- (original_key_b64, original_value_b64; decode with base64Decode()) so every client
-- and output format can carry them; value_preview is the value decoded as UTF-8 with
-- replacement characters, truncated, for people reading the table.
--
-- Deduplication: one row per (source_topic, source_partition, source_offset) after
-- merges; exact queries use FINAL or GROUP BY the three source columns.
-- TTL runs on inserted_at (see 001_drift_stats.sql for why not on event time).
CREATE TABLE IF NOT EXISTS dead_letters
(
    source_topic       LowCardinality(String),
    source_partition   Int32,
    source_offset      Int64,
    schema_version     UInt16,
    reason             String,
    error_type         LowCardinality(String),
    original_key_b64   Nullable(String),
    original_value_b64 Nullable(String),
    value_size         UInt32,
    value_preview      String,
    source_timestamp   Nullable(DateTime64(3, 'UTC')),
    worker_id          LowCardinality(String),
    failed_at          DateTime64(3, 'UTC'),
    inserted_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (source_topic, source_partition, source_offset)
TTL toDateTime(inserted_at) + INTERVAL 90 DAY
COMMENT 'Undecodable or rejected messages; original bytes base64; dedup by source topic, partition, offset: query with FINAL'
