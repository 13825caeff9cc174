-- RetrainResult schema version 2 (cause, module_scores, checks) on stores made before it.
ALTER TABLE retrain_results
    ADD COLUMN IF NOT EXISTS cause Nullable(String) AFTER finished_at,
    ADD COLUMN IF NOT EXISTS module_scores Map(String, Float64) AFTER cause,
    ADD COLUMN IF NOT EXISTS checks Map(String, Float64) AFTER module_scores
