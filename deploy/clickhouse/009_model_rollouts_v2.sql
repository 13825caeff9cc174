-- ModelUpdate schema version 2 (live losses of candidate and incumbent) on stores made before it.
ALTER TABLE model_rollouts
    ADD COLUMN IF NOT EXISTS candidate_loss Nullable(Float64) AFTER events,
    ADD COLUMN IF NOT EXISTS incumbent_loss Nullable(Float64) AFTER candidate_loss
