-- release: hand our lease back at once (its consumer has stopped), so the next owner need not wait for it to expire.
-- $1 topic, $2 partition, $3 owner, $4 epoch
UPDATE partition_leases
SET expires_at = clock_timestamp() - interval '1 second'
WHERE topic = $1 AND partition = $2 AND owner = $3 AND epoch = $4
