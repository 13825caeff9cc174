-- title: Dead letters by reason
-- What landed in the dead-letter topic (and what the sink could not decode), by source
-- topic, error type and reason; messages counted once per source topic/partition/offset.
-- The reason is grouped without its message-specific parts (the first bytes of an
-- undecodable value, a JSON parser's line/column, the offending value after "got"), so one
-- cause is one row however many messages hit it; example_reason and example show the first one in full.
WITH
    letters AS (
        SELECT source_topic, source_partition, source_offset, any(error_type) AS error_type,
               any(reason) AS full_reason, any(failed_at) AS failed_at, any(value_preview) AS preview
        FROM dead_letters GROUP BY source_topic, source_partition, source_offset
    )
SELECT
    source_topic,
    error_type,
    substring(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(full_reason,
        ' \\(first bytes [0-9a-fA-F]*\\)', ''),
        ': line [0-9]+ column [0-9]+ \\(char [0-9]+\\)', ''),
        ', got .*', ''), 1, 160) AS reason,
    count() AS messages,
    min(failed_at) AS first_failed,
    max(failed_at) AS last_failed,
    argMin(full_reason, (failed_at, source_partition, source_offset)) AS example_reason,
    argMin(preview, (failed_at, source_partition, source_offset)) AS example
FROM letters
GROUP BY source_topic, error_type, reason
ORDER BY messages DESC, source_topic, error_type, reason
