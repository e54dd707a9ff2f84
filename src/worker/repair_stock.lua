-- repair_stock: recreate a category's missing stock from Postgres (`worker reconcile
-- --repair`), in one step: the stock hash (state open), the per-user counts, and the
-- records and deadlines of the holds Postgres still sees as held. Sold = confirmed
-- tickets; held = those holds (also ones past their deadline: the reaper expires them
-- right away and publishes their `expired` events); available = quota - sold - held,
-- so it never exceeds quota - sold - active holds.
-- A seated category gets its seat keys rebuilt in the same step (see src/seating.rs),
-- with every seat of a held or confirmed reservation taken: a seat Postgres shows as sold
-- or held is never handed out again. The seat keys share the stock key's prefix.
-- A partial stock (a hash without `state` or `quota`, as scripts that wrote into a lost
-- stock key used to leave) counts as missing: its counters mean nothing, so it is
-- replaced. Restored hold records have no TTL, like every live hold record.
-- Hold records get today's stored field names: FIELD (reservation::record_field) is
-- prepended when the script is loaded (reconcile.rs).
-- KEYS: 1 stock, 2 holders, 3 deadlines, 4..8 seat keys (Keyspace::seat_keys),
--       FIRST_HOLD.. hold records of the held reservations
-- ARGV: 1 event id, 2 quota, 3 max per user, 4 price, 5 currency, 6 sale starts ms or '',
--       7 sale ends ms or '', 8 sold, 9 number of holders H, 10 row sizes (16-bit big-endian
--       per row; '' for a counted category), then H pairs (user, tickets),
--       then HOLD_VALUES values per hold record, in KEYS order (named by HOLD): reservation
--       id, user id, quantity, amount, currency, created ms, expires ms, seats
--       (comma-separated, '' if none), then (seated) the row names in map order and the
--       names of every taken seat
-- Returns {1, available, held} when created, {0} when a whole stock exists (nothing written).
if redis.call('HEXISTS', KEYS[1], 'state') == 1 and redis.call('HEXISTS', KEYS[1], 'quota') == 1 then
  return {0}
end
local FIRST_HOLD = 9
local FIRST_HOLDER = 11
local HOLD_VALUES = 8
-- Offsets of a hold record's values from its first.
local HOLD = {reservation_id = 0, user_id = 1, quantity = 2, amount = 3, currency = 4, created_at_ms = 5,
  expires_at_ms = 6, seats = 7}
local quota = tonumber(ARGV[2])
local sold = tonumber(ARGV[8])
local holder_count = tonumber(ARGV[9])
local sizes = ARGV[10]
local first_hold_value = FIRST_HOLDER + 2 * holder_count
local held = 0
-- The ARGV index of the first value of the hold record KEYS[index].
local function hold_values(index)
  return first_hold_value + (index - FIRST_HOLD) * HOLD_VALUES
end
for index = FIRST_HOLD, #KEYS do
  held = held + tonumber(ARGV[hold_values(index) + HOLD.quantity])
end
local available = quota - sold - held
if available < 0 then
  return redis.error_reply('postgres holds more sold and held tickets than the quota')
end

-- A seated category's seats, checked before any write: the rows of the map (seating
-- prelude's seat_map_rows) and the taken seats {index, bit}.
local function plan_seats(first_row)
  local names, by_name, taken = {}, {}, {}
  for row = 0, #sizes / 2 - 1 do
    names[row + 1] = ARGV[first_row + row]
    by_name[ARGV[first_row + row]] = row
  end
  local rows, bytes = seat_map_rows(sizes, names)
  for position = first_row + #rows, #ARGV do
    local name, number = string.match(ARGV[position], '^(.+)%-(%d+)$')
    local index = name and by_name[name]
    if not index or tonumber(number) > rows[index + 1].seats then
      return nil, 'postgres names a seat the map does not have: ' .. ARGV[position]
    end
    taken[#taken + 1] = {index = index, bit = rows[index + 1].byte_offset * 8 + tonumber(number) - 1}
  end
  return {rows = rows, taken = taken, bytes = bytes}
end

-- Writes the seat keys of a plan: all seats free, then the taken ones set.
local function write_seats(plan)
  local keys = seat_keys(4)
  lay_out_seats(keys, sizes, plan.rows, plan.bytes)
  if #plan.taken > 0 then
    set_seats(keys, plan.taken, 1)
  end
end

local plan
if sizes ~= '' then
  local problem
  plan, problem = plan_seats(hold_values(#KEYS + 1))
  if not plan then
    return redis.error_reply(problem)
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
for index = FIRST_HOLDER, first_hold_value - 1, 2 do
  redis.call('HSET', KEYS[2], ARGV[index], ARGV[index + 1])
end
for index = FIRST_HOLD, #KEYS do
  local at = hold_values(index)
  local function value(name)
    return ARGV[at + HOLD[name]]
  end
  redis.call('DEL', KEYS[index])
  redis.call('HSET', KEYS[index], FIELD.status, 'held', FIELD.user_id, value('user_id'), FIELD.event_id, ARGV[1],
    FIELD.category_id, string.match(KEYS[1], '{c:(%d+)}'), FIELD.quantity, value('quantity'),
    FIELD.amount, value('amount'), FIELD.currency, value('currency'), FIELD.created_at_ms, value('created_at_ms'),
    FIELD.expires_at_ms, value('expires_at_ms'))
  if value('seats') ~= '' then
    redis.call('HSET', KEYS[index], FIELD.seats, value('seats'))
  end
  redis.call('ZADD', KEYS[3], value('expires_at_ms'), value('reservation_id'))
end

if plan then
  write_seats(plan)
end
redis.call('HSET', KEYS[1],
  'state', 'open',
  'event_id', ARGV[1],
  'quota', ARGV[2],
  'available', int(available),
  'held', int(held),
  'sold', ARGV[8],
  'max_per_user', ARGV[3],
  'price', ARGV[4],
  'currency', ARGV[5],
  'sale_starts_at_ms', ARGV[6],
  'sale_ends_at_ms', ARGV[7])
if plan then
  redis.call('HSET', KEYS[1], 'seated', '1')
end
return {1, available, held}
