-- title: Latest alerts (deduplicated)
-- The newest alerts, one row per alert_id (GROUP BY collapses at-least-once copies).
-- param: limit UInt32 = 100
SELECT
    alert_id,
    any(alert_type) AS alert_type,
    any(severity) AS severity,
    any(model) AS model,
    any(slice) AS slice,
    any(feature) AS feature,
    any(detector) AS detector,
    any(statistic) AS statistic,
    any(threshold) AS threshold,
    any(window_start_event_time) AS window_start,
    any(window_end_event_time) AS window_end,
    any(topic) AS topic,
    any(partition) AS partition,
    any(last_offset) AS last_offset,
    min(detected_at) AS detected_at
FROM drift_alerts
GROUP BY alert_id
ORDER BY window_end DESC, alert_id
LIMIT {limit:UInt32}
