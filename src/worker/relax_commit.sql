-- relax_commit: this transaction's commit does not wait for the WAL flush. The batch
-- and its offset commit together, so a commit lost in a crash is read again.
SET LOCAL synchronous_commit = off
