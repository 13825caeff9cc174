-- title: Drift score per slice and feature over time (rollup)
-- From the drift_score_minutely rollup (006_rollups.sql): per model, slice, feature and
-- event-time minute the highest and the latest drift score and the detector state.
SELECT
    model,
    slice,
    feature,
    minute,
    max(score_max) AS score_max,
    argMaxMerge(score_last) AS score_last,
    argMaxMerge(mean_last) AS mean_last,
    argMaxMerge(state_last) AS state,
    uniqExactMerge(stats) AS stats
FROM drift_score_minutely
GROUP BY model, slice, feature, minute
ORDER BY model, slice, feature, minute
