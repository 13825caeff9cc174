-- title: Alerts per slice per hour (rollup)
-- From the alerts_hourly rollup (006_rollups.sql): distinct alerts per model, slice and
-- event-time hour, with the features involved.
SELECT
    model,
    slice,
    hour,
    uniqExactMerge(alerts) AS alerts,
    arraySort(groupUniqArrayMerge(features)) AS features,
    max(max_statistic) AS max_statistic
FROM alerts_hourly
GROUP BY model, slice, hour
ORDER BY hour, model, slice
