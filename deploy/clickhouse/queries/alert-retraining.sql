-- title: Which alerts led to which retraining, with what result
-- One row per (alert, retrain request): retrain_requests.alert_ids joined to the alerts and
-- to retrain_results by request_id. decision PENDING = no result yet. Every table is
-- collapsed by its id first (argMax(..., inserted_at)), so replays do not repeat rows.
WITH
    req AS (
        SELECT request_id, argMax(model, inserted_at) AS model, argMax(alert_ids, inserted_at) AS alert_ids,
               argMax(tier, inserted_at) AS tier, argMax(modules, inserted_at) AS modules,
               argMax(created_at, inserted_at) AS created_at
        FROM retrain_requests GROUP BY request_id
    ),
    res AS (
        SELECT request_id, argMax(decision, inserted_at) AS decision, argMax(tier, inserted_at) AS result_tier,
               argMax(new_version, inserted_at) AS new_version, argMax(metric_name, inserted_at) AS metric_name,
               argMax(metric_before, inserted_at) AS metric_before, argMax(metric_after, inserted_at) AS metric_after,
               argMax(other_slices_max_regression, inserted_at) AS other_slices_max_regression,
               argMax(reason, inserted_at) AS reason, argMax(finished_at, inserted_at) AS finished_at
        FROM retrain_results GROUP BY request_id
    ),
    al AS (
        SELECT alert_id, any(alert_type) AS alert_type, any(severity) AS severity, any(slice) AS slice,
               any(feature) AS feature, any(window_end_event_time) AS alert_time
        FROM drift_alerts GROUP BY alert_id
    )
SELECT
    linked_alert_id AS alert_id,
    al.alert_type AS alert_type,
    al.slice AS slice,
    al.feature AS feature,
    al.alert_time AS alert_time,
    req.request_id AS request_id,
    req.model AS model,
    req.tier AS requested_tier,
    req.modules AS modules,
    req.created_at AS requested_at,
    if(res.request_id = '', 'PENDING', res.decision) AS decision,
    res.result_tier AS result_tier,
    res.new_version AS new_version,
    res.metric_name AS metric_name,
    res.metric_before AS metric_before,
    res.metric_after AS metric_after,
    res.other_slices_max_regression AS other_slices_max_regression,
    res.reason AS reason,
    res.finished_at AS finished_at
FROM req
ARRAY JOIN req.alert_ids AS linked_alert_id
LEFT JOIN al ON al.alert_id = linked_alert_id
LEFT JOIN res ON res.request_id = req.request_id
ORDER BY requested_at, request_id, alert_id
