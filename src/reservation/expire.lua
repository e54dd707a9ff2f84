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
-- KEYS: 1 stock, 2 deadlines, 3 holders, 4 outbox, 5 voids, 6..10 seat keys (seat_keys),
--       FIRST_HOLD.. hold records (same hash tag)
-- ARGV: 1 final record ttl ms, then HOLD_ARGUMENTS per hold record, in KEYS order: its
--       reservation id and the id of its `expired` outbox event
-- Returns {delays in ms past the indexed deadline of each released hold, holds returned
-- to held, stale ids dropped, ids dropped whose record was missing, attempts queued for
-- voiding (so the caller can void them at once)}.
local FIRST_HOLD = 11
local HOLD_ARGUMENTS = 2
if stock_missing(KEYS[1]) then
  return redis.error_reply('STOCK_MISSING the stock of this category is missing')
end
local now = now_ms()
local seats = seat_keys(6)
local delays = {}
local returned, stale, missing = 0, 0, 0
local queued = {}

-- Decides one due hold (held or paying): re-indexed, returned to held or released.
local function expire_live(hold, reservation_id, event_id, deadline)
  local status, user, quantity, expires_at, paying_until, attempt = unpack(redis.call('HMGET', hold, FIELD.status,
    FIELD.user_id, FIELD.quantity, FIELD.expires_at_ms, FIELD.paying_until_ms, FIELD.attempt))
  local due_at = tonumber(expires_at)
  if status == 'paying' then
    due_at = math.min(tonumber(paying_until), due_at)
  end
  if due_at > now then
    redis.call('ZADD', KEYS[2], int(due_at), reservation_id)
  elseif status == 'paying' and tonumber(expires_at) > now then
    queue_void(KEYS[5], attempt, queued)
    return_to_held(hold, KEYS[2], reservation_id, expires_at)
    returned = returned + 1
  else
    if status == 'paying' then
      queue_void(KEYS[5], attempt, queued)
    end
    release(KEYS[1], seats, KEYS[3], KEYS[2], hold, reservation_id, user, tonumber(quantity), 'expired', ARGV[1])
    append_event(KEYS[4], hold, reservation_id, event_id, 'expired', now)
    delays[#delays + 1] = int(now - tonumber(deadline))
  end
end

for index = FIRST_HOLD, #KEYS do
  local hold = KEYS[index]
  local at = 2 + (index - FIRST_HOLD) * HOLD_ARGUMENTS
  local reservation_id = ARGV[at]
  local deadline = redis.call('ZSCORE', KEYS[2], reservation_id)
  if deadline and tonumber(deadline) <= now then
    upgrade_record(hold)
    local status = redis.call('HGET', hold, FIELD.status)
    if status == 'held' or status == 'paying' then
      expire_live(hold, reservation_id, ARGV[at + 1], deadline)
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
