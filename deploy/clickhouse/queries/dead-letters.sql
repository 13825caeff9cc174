-- title: Dead letters by reason
-- What landed in the dead-letter topic (and what the sink could not decode), by source
-- topic, error type and reason; messages counted once per source topic/partition/offset.
SELECT
    source_topic,
    error_type,
    substring(reason, 1, 160) AS reason,
    uniqExact(source_topic, source_partition, source_offset) AS messages,
    min(failed_at) AS first_failed,
    max(failed_at) AS last_failed,
    any(value_preview) AS example
FROM dead_letters
GROUP BY source_topic, error_type, reason
ORDER BY messages DESC, source_topic, error_type
