-- load_offset: where a topic partition's consumption stands: the next offset to read
-- (starting at 0) and the first record of the last applied batch (NULL when unknown).
-- $1 topic, $2 partition
WITH created AS (
    INSERT INTO consumer_offsets (topic, partition, next_offset)
    VALUES ($1, $2, 0)
    ON CONFLICT (topic, partition) DO NOTHING
    RETURNING next_offset, check_offset, check_fingerprint
)
SELECT next_offset, check_offset, check_fingerprint FROM created
UNION ALL
SELECT next_offset, check_offset, check_fingerprint FROM consumer_offsets WHERE topic = $1 AND partition = $2
