-- title: Compute spent, wasted, saved and avoided by selective retraining and triage
-- Per model and tier: training jobs, decisions, the share of parameters updated and the
-- training time, against the estimated cost of full retrains. The full-retrain cost per job is
-- the mean train_seconds of the model's FULL-tier jobs when there are any (measured), else the
-- job's train_seconds scaled by params_total / params_updated (estimated; training time grows
-- about linearly with the trained parameters). saved = full - actual.
-- Where the seconds went: promoted_seconds (jobs that became the current version),
-- wasted_seconds (REJECTED or ROLLED_BACK jobs), and avoided_seconds: requests that triage
-- SKIPPED (no job ran) times the mean train_seconds of the model's jobs at that tier (of all its
-- jobs when it has none at that tier; 0 with no job at all: nothing to estimate from).
WITH
    res AS (
        SELECT request_id, argMax(model, inserted_at) AS model, argMax(tier, inserted_at) AS tier,
               argMax(decision, inserted_at) AS decision, argMax(params_updated, inserted_at) AS params_updated,
               argMax(params_total, inserted_at) AS params_total, argMax(train_seconds, inserted_at) AS train_seconds
        FROM retrain_results GROUP BY request_id
    ),
    full_runs AS (
        SELECT model, avg(train_seconds) AS full_seconds FROM res WHERE tier = 'FULL' GROUP BY model
    ),
    tier_cost AS (
        SELECT model, tier, avg(train_seconds) AS job_seconds FROM res WHERE decision != 'SKIPPED' GROUP BY model, tier
    ),
    model_cost AS (
        SELECT model, avg(train_seconds) AS job_seconds FROM res WHERE decision != 'SKIPPED' GROUP BY model
    ),
    costed AS (
        SELECT res.model AS model, res.tier AS tier, res.decision AS decision, res.params_updated AS params_updated,
               res.params_total AS params_total, res.train_seconds AS seconds,
               full_runs.full_seconds > 0 AS measured,
               if(measured, full_runs.full_seconds,
                  res.train_seconds * res.params_total / greatest(res.params_updated, 1)) AS full_seconds_est,
               if(res.decision = 'SKIPPED',
                  if(tier_cost.job_seconds > 0, tier_cost.job_seconds, model_cost.job_seconds), 0) AS avoided_est
        FROM res
        LEFT JOIN full_runs ON full_runs.model = res.model
        LEFT JOIN tier_cost ON tier_cost.model = res.model AND tier_cost.tier = res.tier
        LEFT JOIN model_cost ON model_cost.model = res.model
    )
SELECT
    model,
    tier,
    countIf(decision != 'SKIPPED') AS jobs,
    countIf(decision = 'PROMOTED') AS promoted,
    countIf(decision = 'REJECTED') AS rejected,
    countIf(decision = 'ROLLED_BACK') AS rolled_back,
    countIf(decision = 'SKIPPED') AS skipped,
    round(sum(params_updated) / greatest(sum(params_total), 1), 4) AS share_params_updated,
    round(sum(seconds), 3) AS train_seconds,
    round(sumIf(seconds, decision = 'PROMOTED'), 3) AS promoted_seconds,
    round(sumIf(seconds, decision IN ('REJECTED', 'ROLLED_BACK')), 3) AS wasted_seconds,
    round(sum(avoided_est), 3) AS avoided_seconds,
    round(sumIf(full_seconds_est, decision != 'SKIPPED'), 3) AS full_retrain_seconds,
    round(full_retrain_seconds - train_seconds, 3) AS saved_seconds,
    round(if(full_retrain_seconds > 0, saved_seconds / full_retrain_seconds, 0), 4) AS saved_share,
    if(min(measured), 'measured FULL jobs', 'scaled by parameters') AS full_cost_basis
FROM costed
GROUP BY model, tier
ORDER BY model, indexOf(['ADAPTER', 'MODULE', 'FULL'], tier)
