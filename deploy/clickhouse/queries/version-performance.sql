-- title: Performance per model version, offline and live
-- One row per (model, version) that a retraining produced or a rollout staged: the offline
-- gate's metric before -> after (retrain_results, by new_version), the furthest rollout stage
-- and when, and the live evidence of its latest stage change (model_rollouts): paired
-- labelled events, the version's live loss and its incumbent's on the same events, and
-- their difference (negative: the version did better). Versions with a rollout but no
-- result row (e.g. a restored pointer) show empty offline columns.
WITH
    up AS (
        SELECT update_id, argMax(model, inserted_at) AS model, argMax(version, inserted_at) AS version,
               argMax(previous_version, inserted_at) AS previous_version, argMax(stage, inserted_at) AS stage,
               argMax(events, inserted_at) AS events, argMax(candidate_loss, inserted_at) AS candidate_loss,
               argMax(incumbent_loss, inserted_at) AS incumbent_loss, argMax(updated_at, inserted_at) AS updated_at
        FROM model_rollouts GROUP BY update_id
    ),
    live AS (
        SELECT model, version, argMax(stage, updated_at) AS last_stage, max(updated_at) AS last_change,
               argMax(previous_version, updated_at) AS incumbent, groupArray(stage) AS stages,
               argMaxIf(events, updated_at, candidate_loss IS NOT NULL) AS live_events,
               argMaxIf(candidate_loss, updated_at, candidate_loss IS NOT NULL) AS live_loss,
               argMaxIf(incumbent_loss, updated_at, candidate_loss IS NOT NULL) AS incumbent_live_loss
        FROM up GROUP BY model, version
    ),
    res AS (
        SELECT request_id, argMax(model, inserted_at) AS model, argMax(new_version, inserted_at) AS new_version,
               argMax(parent_version, inserted_at) AS parent_version, argMax(tier, inserted_at) AS tier,
               argMax(metric_name, inserted_at) AS metric_name, argMax(metric_before, inserted_at) AS metric_before,
               argMax(metric_after, inserted_at) AS metric_after, argMax(decision, inserted_at) AS decision
        FROM retrain_results GROUP BY request_id
        HAVING new_version IS NOT NULL
    )
SELECT
    if(live.model = '', res.model, live.model) AS model,
    if(live.version = '', assumeNotNull(res.new_version), live.version) AS version,
    if(live.incumbent IS NULL, res.parent_version, live.incumbent) AS incumbent,
    res.request_id AS request_id,
    res.tier AS tier,
    res.decision AS result_decision,
    res.metric_name AS metric_name,
    res.metric_before AS offline_before,
    res.metric_after AS offline_after,
    if(live.version = '', '', live.last_stage) AS last_stage,
    if(live.version = '', NULL, live.last_change) AS last_change,
    live.live_events AS live_events,
    live.live_loss AS live_loss,
    live.incumbent_live_loss AS incumbent_live_loss,
    live.live_loss - live.incumbent_live_loss AS live_loss_delta
FROM live
FULL OUTER JOIN res ON res.model = live.model AND assumeNotNull(res.new_version) = live.version
ORDER BY model, version
