-- charge: the simulated gateway's ledger step of a successful charge. One attempt is
-- charged at most once; a voided attempt is never charged.
-- KEYS: 1 ledger entry of the attempt, 2 attempts of the reference
-- ARGV: 1 attempt id, 2 payment id, 3 amount, 4 currency, 5 reference, 6 ledger ttl s
-- Returns {'charged', payment id} (now or before) or {state} (`voided`, `refunded`).
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'charged' then
  return {'charged', redis.call('HGET', KEYS[1], 'payment_id')}
end
if state then
  return {state}
end
redis.call('HSET', KEYS[1], 'state', 'charged', 'payment_id', ARGV[2], 'amount', ARGV[3], 'currency', ARGV[4],
  'reference', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {'charged', ARGV[2]}
