-- title: Alerts by type and severity
-- Distinct alerts (uniqExact(alert_id): replays do not count twice) per type and severity.
SELECT
    alert_type,
    severity,
    uniqExact(alert_id) AS alerts,
    uniqExact(slice) AS slices,
    min(window_end_event_time) AS first_alert,
    max(window_end_event_time) AS last_alert
FROM drift_alerts
GROUP BY alert_type, severity
ORDER BY alert_type, indexOf(['LOW', 'MEDIUM', 'HIGH'], severity)
