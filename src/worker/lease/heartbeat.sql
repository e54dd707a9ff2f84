-- heartbeat: this worker is alive until $3 from now; forget members long gone; list the live ones in order.
-- $1 topic, $2 member, $3 lease TTL in milliseconds
WITH alive AS (
    INSERT INTO worker_members (topic, member, expires_at)
    VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3 / 1000.0))
    ON CONFLICT (topic, member) DO UPDATE SET expires_at = excluded.expires_at
    RETURNING member
), forgotten AS (
    DELETE FROM worker_members
    WHERE topic = $1 AND expires_at < clock_timestamp() - interval '1 hour'
)
SELECT member FROM worker_members
WHERE topic = $1 AND member <> $2 AND expires_at > clock_timestamp()
UNION
SELECT member FROM alive
ORDER BY member
