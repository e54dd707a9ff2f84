-- expire: the reaper's write step for one batch of one category. Re-checks each hold
-- against Redis time, so any number of reapers may run it on the same ids: a hold is
-- released once, because the first run takes it out of the deadlines.
-- - held, deadline passed: expired, tickets back to available, `expired` event;
-- - paying, deadline passed: the same, and the attempt is queued for voiding (the deadline
--   is absolute: a charge still running then must not stand);
-- - paying, payment window passed before the deadline: the attempt is queued for voiding
--   and the hold is back to held under its deadline;
-- - held or paying but not due: re-indexed under its true deadline;
-- - final or missing record: dropped from the deadlines (a live hold's record has no TTL,
--   so a missing one means Redis lost it: `worker reconcile` reports the drift).
-- A missing stock (lost key) refuses the whole batch with a STOCK_MISSING error and
-- writes nothing: released tickets would land in a partial stock.
-- KEYS: 1 stock, 2 deadlines, 3 holders, 4 outbox, 5 voids, 6.. hold records (same hash tag)
-- ARGV: 1 final record ttl ms, 2.. pairs of reservation id and the id of its `expired` outbox
--       event (ARGV[2i - 10] and ARGV[2i - 9] belong to KEYS[i])
-- Returns {delays in ms past the indexed deadline of each released hold, holds returned
-- to held, stale ids dropped, ids dropped whose record was missing, attempts queued for
-- voiding (so the caller can void them at once)}.
if stock_missing(KEYS[1]) then
  return redis.error_reply('STOCK_MISSING the stock of this category is missing')
end
local now = now_ms()
local delays = {}
local returned, stale, missing = 0, 0, 0
local queued = {}
for index = 6, #KEYS do
  local hold = KEYS[index]
  local reservation_id = ARGV[2 * index - 10]
  local deadline = redis.call('ZSCORE', KEYS[2], reservation_id)
  if deadline and tonumber(deadline) <= now then
    upgrade_record(hold)
    local current = redis.call('HMGET', hold, FIELD.status, FIELD.user_id, FIELD.quantity, FIELD.expires_at_ms,
      FIELD.paying_until_ms, FIELD.attempt)
    local status = current[1]
    if status == 'held' or status == 'paying' then
      local expires_at = tonumber(current[4])
      local due_at = expires_at
      if status == 'paying' then
        due_at = math.min(tonumber(current[5]), expires_at)
      end
      if due_at > now then
        redis.call('ZADD', KEYS[2], int(due_at), reservation_id)
      elseif status == 'paying' and expires_at > now then
        redis.call('SADD', KEYS[5], current[6])
        queued[#queued + 1] = current[6]
        redis.call('HSET', hold, FIELD.status, 'held')
        redis.call('HDEL', hold, FIELD.paying_until_ms, FIELD.payment_key)
        redis.call('ZADD', KEYS[2], current[4], reservation_id)
        returned = returned + 1
      else
        if status == 'paying' then
          redis.call('SADD', KEYS[5], current[6])
          queued[#queued + 1] = current[6]
        end
        release(KEYS[1], KEYS[3], KEYS[2], hold, reservation_id, current[2], tonumber(current[3]), 'expired',
          ARGV[1])
        append_event(KEYS[4], hold, reservation_id, ARGV[2 * index - 9], 'expired', now)
        delays[#delays + 1] = int(now - tonumber(deadline))
      end
    else
      redis.call('ZREM', KEYS[2], reservation_id)
      if status then
        stale = stale + 1
      else
        missing = missing + 1
      end
    end
  end
end
return {delays, returned, stale, missing, queued}
