-- title: Rollout stages per model over time
-- One row per stage change of a model version (ModelUpdate records: CANDIDATE, SHADOW,
-- CANARY, PROMOTED, REJECTED, ROLLED_BACK), oldest first, each collapsed by update_id
-- (argMax(..., inserted_at)) so replays do not repeat rows. statistic and events: the
-- sequential test's statistic and the paired labelled events it rested on at that change;
-- candidate_loss / incumbent_loss: the live loss of version and of previous_version on those
-- events; current_version: what the registry pointer named afterwards.
WITH
    up AS (
        SELECT update_id, argMax(model, inserted_at) AS model, argMax(version, inserted_at) AS version,
               argMax(previous_version, inserted_at) AS previous_version,
               argMax(current_version, inserted_at) AS current_version, argMax(stage, inserted_at) AS stage,
               argMax(canary_fraction, inserted_at) AS canary_fraction, argMax(slices, inserted_at) AS slices,
               argMax(statistic, inserted_at) AS statistic, argMax(events, inserted_at) AS events,
               argMax(candidate_loss, inserted_at) AS candidate_loss,
               argMax(incumbent_loss, inserted_at) AS incumbent_loss, argMax(decision, inserted_at) AS decision,
               argMax(reason, inserted_at) AS reason, argMax(request_id, inserted_at) AS request_id,
               argMax(updated_at, inserted_at) AS updated_at
        FROM model_rollouts GROUP BY update_id
    )
SELECT
    model, updated_at, version, stage, previous_version, current_version, canary_fraction, slices,
    statistic, events, candidate_loss, incumbent_loss, decision, reason, request_id, update_id
FROM up
ORDER BY model, updated_at,
         indexOf(['CANDIDATE', 'SHADOW', 'CANARY', 'PROMOTED', 'REJECTED', 'ROLLED_BACK'], stage), update_id
