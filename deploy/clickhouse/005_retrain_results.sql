-- retrain_results: one row per RetrainResult record (written by retrain_jobs).
--
-- Deduplication: one row per request_id after merges (sorting key (model, request_id));
-- if a job re-ran and wrote another result for the same request, the latest inserted
-- one wins (a CANDIDATE result is replaced by the rollout's PROMOTED/REJECTED/ROLLED_BACK). Exact queries use FINAL or argMax(..., inserted_at) GROUP BY request_id.
-- TTL runs on inserted_at (see 001_drift_stats.sql for why not on event time).
CREATE TABLE IF NOT EXISTS retrain_results
(
    request_id                  String,
    schema_version              UInt16,
    model                       LowCardinality(String),
    new_version                 Nullable(String),
    parent_version              Nullable(String),
    tier                        LowCardinality(String) COMMENT 'ADAPTER, MODULE, FULL',
    slices                      Array(String),
    modules_updated             Array(String),
    params_updated              Int64,
    params_total                Int64,
    train_seconds               Float64,
    metric_name                 LowCardinality(String),
    metric_before               Float64,
    metric_after                Float64,
    other_slices_max_regression Float64,
    latency_ms                  Nullable(Float64),
    decision                    LowCardinality(String) COMMENT 'PROMOTED, REJECTED, ROLLED_BACK, SKIPPED, CANDIDATE',
    reason                      String,
    artifact_uri                Nullable(String),
    finished_at                 DateTime64(3, 'UTC'),
    cause                       Nullable(String) COMMENT 'typed cause, schemas/retraining.py',
    module_scores               Map(String, Float64) COMMENT 'gradient evidence per candidate module',
    checks                      Map(String, Float64) COMMENT 'numbers behind the decision, by name',
    inserted_at                 DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (model, request_id)
TTL toDateTime(inserted_at) + INTERVAL 90 DAY
COMMENT 'RetrainResult records; dedup by request_id: query with FINAL or argMax(..., inserted_at) GROUP BY request_id'
