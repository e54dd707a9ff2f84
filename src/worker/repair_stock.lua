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
-- KEYS: 1 stock, 2 holders, 3 deadlines, 4.. hold records of the held reservations
-- ARGV: 1 event id, 2 quota, 3 max per user, 4 price, 5 currency, 6 sale starts ms or '',
--       7 sale ends ms or '', 8 sold, 9 number of holders H, 10 row sizes (16-bit big-endian
--       per row; '' for a counted category), then H pairs (user, tickets),
--       then 8 values per hold record KEYS[3 + i]: reservation id, user id, quantity,
--       amount, currency, created ms, expires ms, seats (comma-separated, '' if none),
--       then (seated) the row names in map order and the names of every taken seat
-- Returns {1, available, held} when created, {0} when a whole stock exists (nothing written).
if redis.call('HEXISTS', KEYS[1], 'state') == 1 and redis.call('HEXISTS', KEYS[1], 'quota') == 1 then
  return {0}
end
local HOLD_VALUES = 8
local quota = tonumber(ARGV[2])
local sold = tonumber(ARGV[8])
local holder_count = tonumber(ARGV[9])
local sizes = ARGV[10]
local first_hold = 11 + 2 * holder_count
local held = 0
for index = 4, #KEYS do
  held = held + tonumber(ARGV[first_hold + (index - 4) * HOLD_VALUES + 2])
end
local available = quota - sold - held
if available < 0 then
  return redis.error_reply('postgres holds more sold and held tickets than the quota')
end

-- A seated category's seats, checked before any write: the rows {name, byte offset,
-- seats} in map order and the taken seats {index, bit}.
local function plan_seats(first_row)
  local rows, by_name, taken = {}, {}, {}
  local byte_offset = 0
  for row = 0, #sizes / 2 - 1 do
    local seats = string.byte(sizes, 2 * row + 1) * 256 + string.byte(sizes, 2 * row + 2)
    rows[#rows + 1] = {name = ARGV[first_row + row], byte_offset = byte_offset, seats = seats}
    by_name[ARGV[first_row + row]] = row
    byte_offset = byte_offset + math.ceil(seats / 8)
  end
  for position = first_row + #rows, #ARGV do
    local name, number = string.match(ARGV[position], '^(.+)%-(%d+)$')
    local index = name and by_name[name]
    if not index or tonumber(number) > rows[index + 1].seats then
      return nil, 'postgres names a seat the map does not have: ' .. ARGV[position]
    end
    taken[#taken + 1] = {index = index, bit = rows[index + 1].byte_offset * 8 + tonumber(number) - 1}
  end
  return {rows = rows, taken = taken, bytes = byte_offset}
end

-- Writes the seat keys of a plan: all seats free, then the taken ones set.
local function write_seats(plan)
  local prefix = string.sub(KEYS[1], 1, -6)
  local bitmap, free, rows = prefix .. 'seats', prefix .. 'seat-free', prefix .. 'seat-rows'
  redis.call('DEL', bitmap, free, prefix .. 'seat-sizes', prefix .. 'seat-runs', rows)
  for index, row in ipairs(plan.rows) do
    redis.call('HSET', rows, row.name, (index - 1) .. ':' .. row.byte_offset .. ':' .. row.seats, '#' .. (index - 1),
      row.name)
  end
  redis.call('SETBIT', bitmap, plan.bytes * 8 - 1, 0)
  redis.call('SET', free, sizes)
  redis.call('SET', prefix .. 'seat-sizes', sizes)
  -- Upper bounds of each row's longest free run: the row's size (reserves refine them).
  redis.call('SET', prefix .. 'seat-runs', sizes)
  for _, seat in ipairs(plan.taken) do
    redis.call('SETBIT', bitmap, seat.bit, 1)
    redis.call('BITFIELD', free, 'INCRBY', 'u16', '#' .. seat.index, -1)
  end
end

local plan
if sizes ~= '' then
  local problem
  plan, problem = plan_seats(first_hold + (#KEYS - 3) * HOLD_VALUES)
  if not plan then
    return redis.error_reply(problem)
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
for index = 11, first_hold - 1, 2 do
  redis.call('HSET', KEYS[2], ARGV[index], ARGV[index + 1])
end
for index = 4, #KEYS do
  local base = first_hold + (index - 4) * HOLD_VALUES
  redis.call('DEL', KEYS[index])
  redis.call('HSET', KEYS[index], FIELD.status, 'held', FIELD.user_id, ARGV[base + 1], FIELD.event_id, ARGV[1],
    FIELD.category_id, string.match(KEYS[1], '{c:(%d+)}'), FIELD.quantity, ARGV[base + 2],
    FIELD.amount, ARGV[base + 3], FIELD.currency, ARGV[base + 4], FIELD.created_at_ms, ARGV[base + 5],
    FIELD.expires_at_ms, ARGV[base + 6])
  if ARGV[base + 7] ~= '' then
    redis.call('HSET', KEYS[index], FIELD.seats, ARGV[base + 7])
  end
  redis.call('ZADD', KEYS[3], ARGV[base + 6], ARGV[base])
end

if plan then
  write_seats(plan)
end
redis.call('HSET', KEYS[1],
  'state', 'open',
  'event_id', ARGV[1],
  'quota', ARGV[2],
  'available', string.format('%d', available),
  'held', string.format('%d', held),
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
