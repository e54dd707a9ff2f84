-- finish_payment: after a successful charge, confirms the hold if it is still paying
-- with this attempt; otherwise (the reaper took it back after `paying_until_ms`) the
-- attempt is queued for voiding in the same script, so the charge cannot stand.
-- KEYS: 1 stock, 2 hold record, 3 deadlines, 4 outbox, 5 voids
-- ARGV: 1 reservation id, 2 attempt id, 3 payment id, 4 final record ttl ms, 5 id of the
--       `confirmed` outbox event
-- Returns {'confirmed', record...} (also when this attempt already confirmed it: a
-- retried call) or {'lost', status}.
local current = redis.call('HMGET', KEYS[2], 'status', 'attempt', 'quantity')
if current[2] == ARGV[2] and current[1] == 'confirmed' then
  return {'confirmed', unpack(read_record(KEYS[2]))}
end
if current[1] ~= 'paying' or current[2] ~= ARGV[2] then
  redis.call('SADD', KEYS[5], ARGV[2])
  return {'lost', current[1] or ''}
end
local now = now_ms()
local quantity = tonumber(current[3])
redis.call('HINCRBY', KEYS[1], 'held', -quantity)
redis.call('HINCRBY', KEYS[1], 'sold', quantity)
redis.call('HSET', KEYS[2], 'status', 'confirmed', 'confirmed_at_ms', int(now), 'payment_id', ARGV[3])
redis.call('HDEL', KEYS[2], 'paying_until_ms')
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[1])
return {'confirmed', unpack(append_event(KEYS[4], KEYS[2], ARGV[1], ARGV[5], 'confirmed', now))}
