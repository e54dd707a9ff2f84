-- advance_offset: move a partition's next offset, only from the offset this worker
-- read from. It runs first in the batch's transaction and locks the row, so a second
-- worker wrongly consuming the same partition waits here and then updates nothing.
-- $1 topic, $2 partition, $3 expected next offset, $4 new next offset,
-- $5 offset and $6 fingerprint of the first record of the batch (NULL when unknown)
UPDATE consumer_offsets
SET next_offset = $4, check_offset = $5, check_fingerprint = $6, updated_at = now()
WHERE topic = $1 AND partition = $2 AND next_offset = $3
