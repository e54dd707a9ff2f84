-- finish_payment: after a successful charge, confirms the hold if it is still paying
-- with this attempt and its deadline has not passed. Otherwise the charge must not
-- stand: the attempt is queued for voiding in the same script, and a hold still paying
-- at or after its deadline is released as expired here, as the reaper would (the
-- deadline is absolute). A missing stock (lost key) confirms nothing and writes nothing.
-- KEYS: 1 stock, 2 hold record, 3 deadlines, 4 outbox, 5 voids, 6 holders, 7..11 seat keys (seat_keys)
-- ARGV: 1 reservation id, 2 attempt id, 3 payment id, 4 final record ttl ms, 5 id of the
--       `confirmed` outbox event, 6 id of the `expired` outbox event, 7 traceparent of the request or ''
-- Returns {'confirmed', record...} (also when this attempt already confirmed it: a
-- retried call), {'lost', status} or {'stock_missing'}.
upgrade_record(KEYS[2])
local status, attempt, quantity, expires_at, user = unpack(redis.call('HMGET', KEYS[2], FIELD.status, FIELD.attempt,
  FIELD.quantity, FIELD.expires_at_ms, FIELD.user_id))
if attempt == ARGV[2] and status == 'confirmed' then
  return {'confirmed', unpack(read_record(KEYS[2]))}
end
if status ~= 'paying' or attempt ~= ARGV[2] then
  queue_void(KEYS[5], ARGV[2])
  return {'lost', status or ''}
end
if stock_missing(KEYS[1]) then
  return {'stock_missing'}
end
local now = now_ms()
quantity = tonumber(quantity)
if now >= tonumber(expires_at) then
  queue_void(KEYS[5], ARGV[2])
  release(KEYS[1], seat_keys(7), KEYS[6], KEYS[3], KEYS[2], ARGV[1], user, quantity, 'expired', ARGV[4])
  append_event(KEYS[4], KEYS[2], ARGV[1], ARGV[6], 'expired', now, ARGV[7])
  return {'lost', 'expired'}
end
redis.call('HINCRBY', KEYS[1], 'held', -quantity)
redis.call('HINCRBY', KEYS[1], 'sold', quantity)
redis.call('HSET', KEYS[2], FIELD.status, 'confirmed', FIELD.confirmed_at_ms, int(now), FIELD.payment_id, ARGV[3])
redis.call('HDEL', KEYS[2], FIELD.paying_until_ms, FIELD.payment_key)
-- Final: from now on the record only serves replays and reads, so it may expire.
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[1])
return {'confirmed', unpack(append_event(KEYS[4], KEYS[2], ARGV[1], ARGV[5], 'confirmed', now, ARGV[7]))}
