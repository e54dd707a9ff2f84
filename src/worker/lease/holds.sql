-- holds: whether (owner, epoch) still holds the partition's lease.
-- $1 topic, $2 partition, $3 owner, $4 epoch
SELECT EXISTS (
    SELECT 1 FROM partition_leases
    WHERE topic = $1 AND partition = $2 AND owner = $3 AND epoch = $4 AND expires_at > clock_timestamp()
)
