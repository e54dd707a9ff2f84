-- bound_idle_transaction: a worker paused inside this transaction (SIGSTOP, a long GC)
-- has it ended by Postgres after the lease TTL, so its share lock on the lease cannot
-- hold a takeover up for longer. $1: the timeout, e.g. '6000ms' (SET takes no parameters).
SELECT set_config('idle_in_transaction_session_timeout', $1, true)
