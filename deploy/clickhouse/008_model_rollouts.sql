-- model_rollouts: one row per ModelUpdate (a rollout stage change), from the compacted models topic.
--
-- Replay-safe: update_id is deterministic (model, version, stage), so a re-read record replaces
-- itself (sorting key (model, update_id)); query with FINAL for exact counts.
CREATE TABLE IF NOT EXISTS model_rollouts
(
    update_id        String,
    schema_version   UInt16,
    model            LowCardinality(String),
    version          String,
    previous_version Nullable(String),
    current_version  Nullable(String),
    stage            LowCardinality(String) COMMENT 'CANDIDATE, SHADOW, CANARY, PROMOTED, REJECTED, ROLLED_BACK',
    canary_fraction  Float64,
    slices           Array(String),
    decision         Nullable(String),
    reason           String,
    request_id       Nullable(String),
    statistic        Nullable(Float64),
    events           Int64,
    candidate_loss   Nullable(Float64) COMMENT 'live loss of version on the paired events (ModelUpdate v2)',
    incumbent_loss   Nullable(Float64) COMMENT 'live loss of previous_version on the same events',
    updated_at       DateTime64(3, 'UTC'),
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (model, update_id)
TTL toDateTime(inserted_at) + INTERVAL 90 DAY
COMMENT 'ModelUpdate records; one row per stage change of a model version; query with FINAL'
