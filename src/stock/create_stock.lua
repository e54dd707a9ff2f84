-- create_stock: create a category's stock in state `pending`, only if it is absent.
-- An existing stock is never touched: recreating it would resell sold tickets.
-- KEYS[1] stock hash
-- ARGV: event_id, quota, max_per_user, price, currency, sale_starts_at_ms|'', sale_ends_at_ms|''
-- Returns 1 when created, 0 when it already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
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
