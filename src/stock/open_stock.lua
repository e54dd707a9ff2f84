-- open_stock: make a pending stock reservable.
-- KEYS[1] stock hash
-- Returns 1 when opened now, 0 when it was already open, -1 when the stock is missing.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return -1
end
if state == 'pending' then
  redis.call('HSET', KEYS[1], 'state', 'open')
  return 1
end
return 0
