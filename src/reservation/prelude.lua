-- prelude: helpers shared by the reservation scripts; concatenated before each one
-- that uses them at compile time (after the common prelude, src/script/prelude.lua, and
-- the seating one, src/seating/prelude.lua), so a script stays one EVALSHA. Redis runs
-- this top level on every call, so it only defines what is cheap to build; `reserve`,
-- the hot path, does without it (it takes the common prelude and reserve_prelude.lua).
--
-- A hold record (P:{c:C}:hold:R) has the fields of RECORD_FIELDS, plus `attempt`,
-- `paying_until_ms` and `payment_key` (the idempotency record of the payment, or '')
-- while a payment runs. Stored statuses: held, paying, confirmed, cancelled, expired.
-- A record has no TTL while it is held or paying, so it exists as long as its deadline
-- entry whatever the reaper outage; it gets one only when it reaches a final status.
-- Fields are stored under one- or two-letter names (issue #15): scripts name them as
-- FIELD.<meaning>, e.g. FIELD.status, and a record read in RECORD_FIELDS order by
-- position as record[RECORD.<meaning>]. RECORD_FIELDS, FIELD and RECORD are not defined
-- here: the Rust side prepends them, built from `reservation::record_field`, when it
-- loads a script (engine::with_prelude), so the layout has one definition.

-- Whether a category's stock is gone (or only a partial hash without `state` is left).
-- Scripts that move tickets refuse then and write nothing: counters written into a
-- missing hash would make a partial stock that reserve and repair cannot use.
local function stock_missing(stock)
  return redis.call('HEXISTS', stock, 'state') == 0
end

local function read_record(hold)
  return redis.call('HMGET', hold, unpack(RECORD_FIELDS))
end

-- Rewrites a record that an earlier version wrote, whose fields have their long names
-- (the keys of FIELD), in today's layout with its TTL, so its hold goes on under this
-- version (a rolling deploy). Every script that may change a record calls it first; for
-- a record in today's layout it costs one HEXISTS. It keeps every value, so a refusal
-- that must write nothing still changes nothing a reader sees.
local function upgrade_record(hold)
  -- `status`: the long name of FIELD.status, which every record has.
  if redis.call('HEXISTS', hold, 'status') == 0 then
    return
  end
  local legacy = redis.call('HGETALL', hold)
  local ttl = redis.call('PTTL', hold)
  local fields = {}
  for index = 1, #legacy, 2 do
    fields[#fields + 1] = FIELD[legacy[index]] or legacy[index]
    fields[#fields + 1] = legacy[index + 1]
  end
  redis.call('DEL', hold)
  redis.call('HSET', hold, unpack(fields))
  if ttl > 0 then
    redis.call('PEXPIRE', hold, ttl)
  end
end

-- Frees the seats of a hold record (`seats`: comma-separated `ROW-N` names; nothing for
-- a counted category). `seats` are the category's seat keys (seat_keys), passed in KEYS.
local function free_seats(seats, hold)
  local names = redis.call('HGET', hold, FIELD.seats)
  if not names or names == '' then
    return
  end
  local found = find_seats(seats, seat_names(names))
  for _, seat in ipairs(found) do
    assert(seat, 'a hold names a seat the map does not have')
  end
  set_seats(seats, found, 0)
end

-- The record fields an outbox entry's `event` carries after the reservation id, in order
-- (the entry format of src/outbox.rs).
local EVENT_FIELDS = {'status', 'event_id', 'category_id', 'quantity', 'amount', 'currency', 'created_at_ms',
  'expires_at_ms', 'confirmed_at_ms'}

-- Appends the event of a state change that this script has just written, with the
-- reservation as the hold now holds it (the entry format of src/outbox.rs; the reserve
-- scripts write theirs with append_reserved). Same script, so the change and its event
-- exist together or not at all. `event_id` is outbox::event_id of the reservation and
-- `kind`, computed by the caller in Rust and passed in ARGV; `traceparent` is the
-- request's ('' or nil: none, as for the reaper's expiries). Returns the record, in
-- RECORD_FIELDS order.
local function append_event(outbox, hold, reservation_id, event_id, kind, now, traceparent)
  local record = read_record(hold)
  local values = {event_id, kind, int(now), reservation_id}
  for _, name in ipairs(EVENT_FIELDS) do
    values[#values + 1] = record[RECORD[name]] or ''
  end
  local entry = table.concat(values, '|')
  redis.call('XADD', outbox, '*', 'event', entry, 'user_id', record[RECORD.user_id],
    'payment_id', record[RECORD.payment_id] or '', 'seats', record[RECORD.seats] or '',
    unpack(trace_fields(traceparent)))
  return record
end

-- The owner's record of a hold that is still live (held or paying, before its deadline),
-- after upgrading it, and Redis time; else nil and the script's reply: {`done`, record...}
-- when the hold already reached `done` (the status this script moves it towards: a
-- repeated call), {status} for another final status, {'not_found'} when the record is
-- absent or someone else's, {'expired'} at or after its deadline.
local function live_record(hold, user, done)
  upgrade_record(hold)
  local record = read_record(hold)
  local status = record[RECORD.status]
  if not status or record[RECORD.user_id] ~= user then
    return nil, {'not_found'}
  end
  if status == done then
    return nil, {done, unpack(record)}
  end
  if status == 'confirmed' or status == 'cancelled' or status == 'expired' then
    return nil, {status}
  end
  local now = now_ms()
  if now >= tonumber(record[RECORD.expires_at_ms]) then
    return nil, {'expired'}
  end
  return record, now
end

-- Queues a payment attempt for voiding at the gateway (the reaper voids the `voids` set);
-- `queued`, when given, lists the attempts this call queued.
local function queue_void(voids, attempt, queued)
  redis.call('SADD', voids, attempt)
  if queued then
    queued[#queued + 1] = attempt
  end
end

-- Returns a paying hold to `held` under its own deadline `expires_at` (ms, as text), which
-- is its entry in the deadlines again.
local function return_to_held(hold, deadlines, reservation_id, expires_at)
  redis.call('HSET', hold, FIELD.status, 'held')
  redis.call('HDEL', hold, FIELD.paying_until_ms, FIELD.payment_key)
  redis.call('ZADD', deadlines, expires_at, reservation_id)
end

-- Returns a hold's tickets to `available` and ends it with `status` (cancelled or
-- expired). Confirmed tickets never come through here, so the user's count only
-- drops by what the hold still held. Its seats, if any, are free again (`seats`: the
-- category's seat keys, seat_keys). The caller has checked `stock_missing` first.
local function release(stock, seats, holders, deadlines, hold, reservation_id, user, quantity, status, final_ttl_ms)
  free_seats(seats, hold)
  redis.call('HINCRBY', stock, 'available', quantity)
  redis.call('HINCRBY', stock, 'held', -quantity)
  if redis.call('HINCRBY', holders, user, -quantity) <= 0 then
    redis.call('HDEL', holders, user)
  end
  redis.call('HSET', hold, FIELD.status, status)
  redis.call('HDEL', hold, FIELD.paying_until_ms, FIELD.payment_key)
  redis.call('PEXPIRE', hold, final_ttl_ms)
  redis.call('ZREM', deadlines, reservation_id)
end
