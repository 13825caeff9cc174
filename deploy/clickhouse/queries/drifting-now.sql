-- title: Slices drifting now: since when, on which features
-- Which (model, slice, feature) are drifting now, since when, how badly.
-- "Now" is data time: the newest event time the detectors reported for the model, so a
-- replay or a historical backfill reads like live data. A (slice, feature) drifts now when
-- its latest run of alerts (alerts no more than window_minutes apart) reaches within
-- window_minutes of that time. since = where the change began by the detectors' own
-- estimate, the earliest over the run: an alert's window holds a reference part and a
-- current (changed) part, and the current part starts reference_count / (reference_count +
-- current_count) of the way through the window (event time interpolated; for categorical
-- detectors the window is the current part). first_alert = when the change was first
-- confirmed. Alerts are deduplicated by alert_id (GROUP BY); latest_score is the newest
-- DriftStat score of the feature (NULL when no stats are kept for it: labels, performance,
-- categorical features).
-- param: window_minutes UInt32 = 60
WITH
    alerts AS (
        SELECT alert_id, any(model) AS model, any(slice) AS slice, ifNull(any(feature), '') AS feature,
               any(alert_type) AS alert_type, any(severity) AS severity,
               any(window_start_event_time) AS started, any(window_end_event_time) AS ended,
               any(reference_count) AS ref_n, any(current_count) AS cur_n,
               any(detector_params['channel']) AS channel
        FROM drift_alerts GROUP BY alert_id
    ),
    estimated AS (
        SELECT *, if(channel = 'category' OR ref_n <= 0 OR cur_n <= 0, started,
                     fromUnixTimestamp64Milli(toInt64(toUnixTimestamp64Milli(started)
                         + (toUnixTimestamp64Milli(ended) - toUnixTimestamp64Milli(started)) * ref_n / (ref_n + cur_n)),
                         'UTC')) AS change_start
        FROM alerts
    ),
    data_now AS (
        SELECT model, max(t) AS now_t FROM (
            SELECT model, window_end_event_time AS t FROM drift_stats
            UNION ALL SELECT model, ended AS t FROM alerts
        ) GROUP BY model
    ),
    runs AS (
        SELECT *, sum(gap) OVER (PARTITION BY model, slice, feature ORDER BY ended
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run
        FROM (
            SELECT *, dateDiff('millisecond',
                               lagInFrame(ended, 1, ended) OVER (PARTITION BY model, slice, feature ORDER BY ended
                                                                 ROWS BETWEEN 1 PRECEDING AND CURRENT ROW),
                               ended) > {window_minutes:UInt32} * 60000 AS gap
            FROM estimated
        )
    ),
    latest_run AS (
        SELECT model, slice, feature, max(run) AS run FROM runs GROUP BY model, slice, feature
    ),
    scores AS (
        SELECT model, slice, feature, argMax(drift_score, window_end_event_time) AS latest_score
        FROM drift_stats GROUP BY model, slice, feature
    )
SELECT
    r.model AS model,
    r.slice AS slice,
    r.feature AS feature,
    min(r.change_start) AS since,
    min(r.ended) AS first_alert,
    max(r.ended) AS last_alert,
    count() AS alerts,
    arraySort(groupUniqArray(r.alert_type)) AS alert_types,
    ['LOW', 'MEDIUM', 'HIGH'][max(indexOf(['LOW', 'MEDIUM', 'HIGH'], r.severity))] AS max_severity,
    if(any(s.slice) = '', NULL, any(s.latest_score)) AS latest_score,
    any(n.now_t) AS data_now
FROM runs AS r
INNER JOIN latest_run AS l ON r.model = l.model AND r.slice = l.slice AND r.feature = l.feature AND r.run = l.run
INNER JOIN data_now AS n ON r.model = n.model
LEFT JOIN scores AS s ON r.model = s.model AND r.slice = s.slice AND r.feature = s.feature
GROUP BY r.model, r.slice, r.feature
HAVING dateDiff('millisecond', last_alert, data_now) <= {window_minutes:UInt32} * 60000
ORDER BY since, slice, feature
