-- advance_offset: move a partition's next offset, only from the offset this worker
-- read from. It runs first in the batch's transaction and locks the row, so a second
-- worker wrongly consuming the same partition waits here and then updates nothing.
-- Under a partition lease ($7 owner, $8 epoch; NULL without one) it moves only while
-- that lease is held, and it share-locks the lease row, so a takeover (which raises the
-- epoch) waits for this transaction and every later one of the old owner updates nothing.
-- $1 topic, $2 partition, $3 expected next offset, $4 new next offset,
-- $5 offset and $6 fingerprint of the first record of the batch (NULL when unknown)
UPDATE consumer_offsets
SET next_offset = $4, check_offset = $5, check_fingerprint = $6, updated_at = now()
WHERE topic = $1 AND partition = $2 AND next_offset = $3
  AND ($7::TEXT IS NULL OR EXISTS (
      SELECT 1 FROM partition_leases
      WHERE topic = $1 AND partition = $2 AND owner = $7 AND epoch = $8 AND expires_at > clock_timestamp()
      FOR SHARE
  ))
