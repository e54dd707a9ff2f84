-- repair_stock: recreate a category's missing stock from Postgres (`worker reconcile
-- --repair`), in one step: the stock hash (state open), the per-user counts, and the
-- records and deadlines of the holds Postgres still sees as held. Sold = confirmed
-- tickets; held = those holds (also ones past their deadline: the reaper expires them
-- right away and publishes their `expired` events); available = quota - sold - held,
-- so it never exceeds quota - sold - active holds.
-- A partial stock (a hash without `state` or `quota`, as scripts that wrote into a lost
-- stock key used to leave) counts as missing: its counters mean nothing, so it is
-- replaced. Restored hold records have no TTL, like every live hold record.
-- KEYS: 1 stock, 2 holders, 3 deadlines, 4.. hold records of the held reservations
-- ARGV: 1 event id, 2 quota, 3 max per user, 4 price, 5 currency, 6 sale starts ms or '',
--       7 sale ends ms or '', 8 sold, 9 number of holders H, then H pairs (user, tickets),
--       then 7 values per hold record KEYS[3 + i]: reservation id, user id, quantity,
--       amount, currency, created ms, expires ms
-- Returns {1, available, held} when created, {0} when a whole stock exists (nothing written).
if redis.call('HEXISTS', KEYS[1], 'state') == 1 and redis.call('HEXISTS', KEYS[1], 'quota') == 1 then
  return {0}
end
local quota = tonumber(ARGV[2])
local sold = tonumber(ARGV[8])
local holder_count = tonumber(ARGV[9])
local first_hold = 10 + 2 * holder_count
local held = 0
for index = 4, #KEYS do
  held = held + tonumber(ARGV[first_hold + (index - 4) * 7 + 2])
end
local available = quota - sold - held
if available < 0 then
  return redis.error_reply('postgres holds more sold and held tickets than the quota')
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
for index = 10, first_hold - 1, 2 do
  redis.call('HSET', KEYS[2], ARGV[index], ARGV[index + 1])
end
for index = 4, #KEYS do
  local base = first_hold + (index - 4) * 7
  redis.call('DEL', KEYS[index])
  redis.call('HSET', KEYS[index], 'status', 'held', 'user_id', ARGV[base + 1], 'event_id', ARGV[1],
    'category_id', string.match(KEYS[1], '{c:(%d+)}'), 'quantity', ARGV[base + 2], 'amount', ARGV[base + 3],
    'currency', ARGV[base + 4], 'created_at_ms', ARGV[base + 5], 'expires_at_ms', ARGV[base + 6])
  redis.call('ZADD', KEYS[3], ARGV[base + 6], ARGV[base])
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
return {1, available, held}
