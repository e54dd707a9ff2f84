-- create_stock: create a category's stock in state `pending`, only if it is absent.
-- An existing stock is never touched: recreating it would resell sold tickets.
-- A seated category (KEYS 2..6 given) gets its seat keys in the same script, all seats
-- free, so a stock never exists without its seats (layout: src/seating.rs; written by the
-- seating prelude's lay_out_seats, as repair_stock.lua does).
-- KEYS: 1 stock hash; seated only: 2..6 seat keys (Keyspace::seat_keys)
-- ARGV: event_id, quota, max_per_user, price, currency, sale_starts_at_ms|'', sale_ends_at_ms|'';
--       seated only: row sizes (16-bit big-endian per row), then the row names in map order
-- Returns 1 when created, 0 when it already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if KEYS[2] then
  -- Leftovers of a stock that was never sellable (provisioning starts over) are replaced.
  local names = {}
  for index = 9, #ARGV do
    names[#names + 1] = ARGV[index]
  end
  local rows, bytes = seat_map_rows(ARGV[8], names)
  lay_out_seats(seat_keys(2), ARGV[8], rows, bytes)
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
