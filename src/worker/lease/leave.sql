-- leave: this worker stops; the others rebalance without waiting for its heartbeat to expire.
-- $1 topic, $2 member
DELETE FROM worker_members WHERE topic = $1 AND member = $2
