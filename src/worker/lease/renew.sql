-- renew: extend our lease while we still hold it at this epoch; no row: it was lost.
-- $1 topic, $2 partition, $3 owner, $4 epoch, $5 lease TTL in milliseconds
UPDATE partition_leases
SET expires_at = clock_timestamp() + make_interval(secs => $5 / 1000.0)
WHERE topic = $1 AND partition = $2 AND owner = $3 AND epoch = $4 AND expires_at > clock_timestamp()
