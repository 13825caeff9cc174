-- Rollups kept up to date by materialized views, for dashboards over long ranges.
--
-- A materialized view sees every INSERT into its source table, replays included (the
-- sink is at-least-once; ReplacingMergeTree collapses the copies only in the source).
-- So the rollups store aggregate *states* that a replay cannot inflate:
--   * uniqExact(alert_id) / uniqExact(stat_id) count distinct ids, not rows;
--   * max / min / argMax(value, event time) give the same answer for a copy.
-- Sums and averages are not replay-safe and are deliberately absent. Read the states
-- with the -Merge combinators and GROUP BY (parts merge in the background):
--   SELECT slice, hour, uniqExactMerge(alerts) FROM alerts_hourly GROUP BY slice, hour
--
-- Buckets are by *event* time (window_end_event_time), so a replay lands in the same
-- bucket. The views only see rows inserted after they exist; to backfill, run the view's
-- SELECT as INSERT INTO <rollup> SELECT ... FROM the source: it is idempotent too.
-- TTL: on the last time a bucket was written (updated_at, wall clock), like the sources.

CREATE TABLE IF NOT EXISTS alerts_hourly
(
    model         LowCardinality(String),
    slice         LowCardinality(String),
    alert_type    LowCardinality(String),
    severity      LowCardinality(String),
    hour          DateTime('UTC') COMMENT 'toStartOfHour(window_end_event_time)',
    alerts        AggregateFunction(uniqExact, String) COMMENT 'distinct alert_id',
    features      AggregateFunction(groupUniqArray, String) COMMENT 'distinct features (performance: "")',
    first_alert   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_alert    SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    max_statistic SimpleAggregateFunction(max, Float64),
    updated_at    SimpleAggregateFunction(max, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (model, slice, hour, alert_type, severity)
TTL updated_at + INTERVAL 90 DAY
COMMENT 'alerts per model x slice x type x severity x event hour; read with uniqExactMerge(alerts)';

CREATE MATERIALIZED VIEW IF NOT EXISTS alerts_hourly_mv TO alerts_hourly AS
SELECT
    model,
    slice,
    alert_type,
    severity,
    toStartOfHour(window_end_event_time) AS hour,
    uniqExactState(alert_id) AS alerts,
    groupUniqArrayState(ifNull(feature, '')) AS features,
    min(window_end_event_time) AS first_alert,
    max(window_end_event_time) AS last_alert,
    max(statistic) AS max_statistic,
    max(toDateTime(now(), 'UTC')) AS updated_at
FROM drift_alerts
GROUP BY model, slice, alert_type, severity, hour;

CREATE TABLE IF NOT EXISTS drift_score_minutely
(
    model       LowCardinality(String),
    slice       LowCardinality(String),
    feature     LowCardinality(String),
    minute      DateTime('UTC') COMMENT 'toStartOfMinute(window_end_event_time)',
    stats       AggregateFunction(uniqExact, String) COMMENT 'distinct stat_id',
    score_max   SimpleAggregateFunction(max, Float64),
    score_last  AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    mean_last   AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    state_last  AggregateFunction(argMax, String, DateTime64(3, 'UTC')) COMMENT 'warmup, stable or drift',
    updated_at  SimpleAggregateFunction(max, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (model, slice, feature, minute)
TTL updated_at + INTERVAL 90 DAY
COMMENT 'drift score timeline per model x slice x feature x event minute; read with max(score_max), argMaxMerge(score_last)';

CREATE MATERIALIZED VIEW IF NOT EXISTS drift_score_minutely_mv TO drift_score_minutely AS
SELECT
    model,
    slice,
    feature,
    toStartOfMinute(window_end_event_time) AS minute,
    uniqExactState(stat_id) AS stats,
    max(drift_score) AS score_max,
    argMaxState(drift_score, window_end_event_time) AS score_last,
    argMaxState(mean, window_end_event_time) AS mean_last,
    argMaxState(toString(detector_state), window_end_event_time) AS state_last,
    max(toDateTime(now(), 'UTC')) AS updated_at
FROM drift_stats
GROUP BY model, slice, feature, minute;
