-- prelude: helpers shared by the reservation scripts; concatenated before each one
-- that uses them at compile time, so a script stays one EVALSHA. Redis runs this top
-- level on every call, so it only defines what is cheap to build; `reserve`, the hot
-- path, does without it.
--
-- A hold record (P:{c:C}:hold:R) has the fields of RECORD_FIELDS, plus `attempt`,
-- `paying_until_ms` and `payment_key` (the idempotency record of the payment, or '')
-- while a payment runs. Stored statuses: held, paying, confirmed, cancelled, expired.
-- A record has no TTL while it is held or paying, so it exists as long as its deadline
-- entry whatever the reaper outage; it gets one only when it reaches a final status.
-- Fields are stored under one- or two-letter names (issue #15): scripts name them as
-- FIELD.<meaning>, e.g. FIELD.status. RECORD_FIELDS and FIELD are not defined here: the
-- Rust side prepends them, built from `reservation::record_field`, when it loads a
-- script (engine::with_prelude), so the layout has one definition.

-- Redis server time in ms: the only clock any expiry decision uses.
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- Integers as decimal text: Lua's own number formatting switches to exponents past
-- 14 digits.
local function int(number)
  return string.format('%d', number)
end

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

-- Sets the bits of `seats` ({index = row index, bit = bit in the bitmap}) to `value`
-- (1 taken, 0 free) in one BITFIELD, and moves each row's 16-bit free count the other
-- way in another (see src/seating.rs for the layout). Freeing seats can join runs, so
-- then each row's bound of its longest free run (`runs`) goes back to "unknown" (65535);
-- taking seats only shortens runs, so the bounds stay true.
local function set_seats(bitmap, free, runs, seats, value)
  local bits, per_row, rows = {}, {}, {}
  for _, seat in ipairs(seats) do
    bits[#bits + 1] = 'SET'
    bits[#bits + 1] = 'u1'
    bits[#bits + 1] = seat.bit
    bits[#bits + 1] = value
    if not per_row[seat.index] then
      per_row[seat.index] = 0
      rows[#rows + 1] = seat.index
    end
    per_row[seat.index] = per_row[seat.index] + 1
  end
  redis.call('BITFIELD', bitmap, unpack(bits))
  local counts = {}
  local sign = value == 1 and -1 or 1
  for _, index in ipairs(rows) do
    counts[#counts + 1] = 'INCRBY'
    counts[#counts + 1] = 'u16'
    counts[#counts + 1] = '#' .. index
    counts[#counts + 1] = sign * per_row[index]
  end
  redis.call('BITFIELD', free, unpack(counts))
  if value == 0 then
    local unknown = {}
    for _, index in ipairs(rows) do
      unknown[#unknown + 1] = 'SET'
      unknown[#unknown + 1] = 'u16'
      unknown[#unknown + 1] = '#' .. index
      unknown[#unknown + 1] = 65535
    end
    redis.call('BITFIELD', runs, unpack(unknown))
  end
end

-- Frees the seats of a hold record (`seats`: comma-separated `ROW-N` names; nothing for
-- a counted category). The seat keys share the stock key's prefix `P:{c:C}:`, so they
-- are in the category's slot.
local function free_seats(stock, hold)
  local names = redis.call('HGET', hold, FIELD.seats)
  if not names or names == '' then
    return
  end
  local prefix = string.sub(stock, 1, -6)
  local rows, numbers = {}, {}
  for row, number in string.gmatch(names, '([^,]+)%-(%d+)') do
    rows[#rows + 1] = row
    numbers[#numbers + 1] = tonumber(number)
  end
  local layout = redis.call('HMGET', prefix .. 'seat-rows', unpack(rows))
  local seats = {}
  for position, entry in ipairs(layout) do
    local index, byte_offset = string.match(entry, '^(%d+):(%d+):')
    seats[position] = {index = tonumber(index), bit = tonumber(byte_offset) * 8 + numbers[position] - 1}
  end
  set_seats(prefix .. 'seats', prefix .. 'seat-free', prefix .. 'seat-runs', seats, 0)
end

-- Tracing (src/telemetry/trace_context.rs): the outbox entry's optional `traceparent`
-- field, the W3C trace context of the request that caused the change. An untraced request
-- passes '' and its entry gets no field at all (no table is built for it either).
local NO_TRACE_FIELDS = {}
local function trace_fields(traceparent)
  if traceparent and traceparent ~= '' then
    return {'traceparent', traceparent}
  end
  return NO_TRACE_FIELDS
end

-- Appends the event of a state change that this script has just written, with the
-- reservation as the hold now holds it (the entry format of src/outbox.rs; reserve.lua
-- writes the same entry inline). Same script, so the change and its event exist
-- together or not at all. `event_id` is outbox::event_id of the reservation and
-- `kind`, computed by the caller in Rust and passed in ARGV; `traceparent` is the
-- request's ('' or nil: none, as for the reaper's expiry). Returns the record, in
-- RECORD_FIELDS order.
local function append_event(outbox, hold, reservation_id, event_id, kind, now, traceparent)
  local record = read_record(hold)
  redis.call('XADD', outbox, '*',
    'event', event_id .. '|' .. kind .. '|' .. int(now) .. '|' .. reservation_id .. '|' .. record[1] .. '|' ..
      record[3] .. '|' .. record[4] .. '|' .. record[5] .. '|' .. record[6] .. '|' .. record[7] .. '|' ..
      record[8] .. '|' .. record[9] .. '|' .. (record[10] or ''),
    'user_id', record[2], 'payment_id', record[11] or '', 'seats', record[12] or '', unpack(trace_fields(traceparent)))
  return record
end

-- Returns a hold's tickets to `available` and ends it with `status` (cancelled or
-- expired). Confirmed tickets never come through here, so the user's count only
-- drops by what the hold still held. Its seats, if any, are free again. The caller has
-- checked `stock_missing` first.
local function release(stock, holders, deadlines, hold, reservation_id, user, quantity, status, final_ttl_ms)
  free_seats(stock, hold)
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

