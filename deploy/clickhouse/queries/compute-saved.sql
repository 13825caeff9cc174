-- title: Compute saved by selective retraining against full retrains
-- Per model and tier: jobs, decisions, the share of parameters updated and the training
-- time, against the estimated cost of full retrains. The full-retrain cost per job is the
-- mean train_seconds of the model's FULL-tier jobs when there are any (measured), else the
-- job's train_seconds scaled by params_total / params_updated (estimated; training time
-- grows about linearly with the trained parameters). saved = full - actual.
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
    costed AS (
        SELECT res.*, full_runs.full_seconds > 0 AS measured,
               if(measured, full_runs.full_seconds,
                  res.train_seconds * res.params_total / greatest(res.params_updated, 1)) AS full_seconds_est
        FROM res LEFT JOIN full_runs ON full_runs.model = res.model
    )
SELECT
    model,
    tier,
    count() AS jobs,
    countIf(decision = 'PROMOTED') AS promoted,
    countIf(decision = 'REJECTED') AS rejected,
    countIf(decision = 'ROLLED_BACK') AS rolled_back,
    round(sum(params_updated) / greatest(sum(params_total), 1), 4) AS share_params_updated,
    round(sum(train_seconds), 3) AS train_seconds,
    round(sum(full_seconds_est), 3) AS full_retrain_seconds,
    round(full_retrain_seconds - train_seconds, 3) AS saved_seconds,
    round(if(full_retrain_seconds > 0, saved_seconds / full_retrain_seconds, 0), 4) AS saved_share,
    if(min(measured), 'measured FULL jobs', 'scaled by parameters') AS full_cost_basis
FROM costed
GROUP BY model, tier
ORDER BY model, indexOf(['ADAPTER', 'MODULE', 'FULL'], tier)
