-- acquire: take a partition's lease when it is free, expired or already ours; a takeover
-- raises the epoch, which fences every batch of the previous owner. Returns the epoch, or
-- no row while another live worker holds it.
-- $1 topic, $2 partition, $3 owner, $4 lease TTL in milliseconds
INSERT INTO partition_leases AS lease (topic, partition, owner, epoch, expires_at)
VALUES ($1, $2, $3, 1, clock_timestamp() + make_interval(secs => $4 / 1000.0))
ON CONFLICT (topic, partition) DO UPDATE
SET owner = excluded.owner, epoch = lease.epoch + 1, expires_at = excluded.expires_at
WHERE lease.expires_at < clock_timestamp() OR lease.owner = excluded.owner
RETURNING epoch
