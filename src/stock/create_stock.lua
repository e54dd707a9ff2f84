-- create_stock: create a category's stock in state `pending`, only if it is absent.
-- An existing stock is never touched: recreating it would resell sold tickets.
-- A seated category (KEYS 2..6 given) gets its seat keys in the same script, all seats
-- free, so a stock never exists without its seats (layout: src/seating.rs).
-- KEYS: 1 stock hash; seated only: 2 seat bitmap, 3 free counts, 4 row sizes, 5 rows hash,
--       6 longest free runs
-- ARGV: event_id, quota, max_per_user, price, currency, sale_starts_at_ms|'', sale_ends_at_ms|'';
--       seated only: row sizes (16-bit big-endian per row), then the row names in map order
-- Returns 1 when created, 0 when it already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if KEYS[2] then
  local sizes = ARGV[8]
  -- Leftovers of a stock that was never sellable (provisioning starts over).
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
  local byte_offset = 0
  for index = 9, #ARGV do
    local row = index - 9
    local seats = string.byte(sizes, 2 * row + 1) * 256 + string.byte(sizes, 2 * row + 2)
    redis.call('HSET', KEYS[5], ARGV[index], row .. ':' .. byte_offset .. ':' .. seats, '#' .. row, ARGV[index])
    -- Each row starts on a byte boundary, so one GETRANGE reads one row.
    byte_offset = byte_offset + math.ceil(seats / 8)
  end
  redis.call('SETBIT', KEYS[2], byte_offset * 8 - 1, 0)
  redis.call('SET', KEYS[3], sizes)
  redis.call('SET', KEYS[4], sizes)
  -- All seats free: each row's longest run is the row.
  redis.call('SET', KEYS[6], sizes)
  redis.call('HSET', KEYS[1], 'seated', '1')
end
redis.call('HSET', KEYS[1],
  'state', 'pending',
  'event_id', ARGV[1],
  'quota', ARGV[2],
  'available', ARGV[2],
  'held', 0,
  'sold', 0,
  'max_per_user', ARGV[3],
  'price', ARGV[4],
  'currency', ARGV[5],
  'sale_starts_at_ms', ARGV[6],
  'sale_ends_at_ms', ARGV[7])
return 1
