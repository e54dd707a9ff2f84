-- void: cancels a payment attempt at the simulated gateway. Idempotent: a charged
-- attempt is refunded, an unknown one is marked voided so it can never be charged later.
-- KEYS: 1 ledger entry of the attempt
-- ARGV: 1 ledger ttl s
-- Returns the attempt's state afterwards: `refunded` or `voided`.
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'charged' then
  redis.call('HSET', KEYS[1], 'state', 'refunded')
  return 'refunded'
end
if state then
  return state
end
redis.call('HSET', KEYS[1], 'state', 'voided')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 'voided'
