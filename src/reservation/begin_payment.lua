-- begin_payment: first step of confirm. Moves the owner's unexpired hold into `paying`
-- for one payment attempt, bounded by the payment window; the reaper leaves it alone
-- until `paying_until_ms`. No event: `paying` is internal and reads as held.
-- KEYS: 1 hold record, 2 deadlines, 3 idempotency record (optional)
-- ARGV: 1 reservation id, 2 user id, 3 attempt id, 4 payment window ms, 5 request fingerprint or ''
-- Returns {'pay', record...} (also when this attempt already began: a retried call),
-- {'confirmed', record...}, or {code}: `key_reused`, `declined` (a stored 402 to replay),
-- `not_found`, `cancelled`, `expired`, `paying` (another attempt runs).
if KEYS[3] then
  local stored = redis.call('HMGET', KEYS[3], 'fingerprint', 'outcome')
  if stored[1] then
    if stored[1] ~= ARGV[5] then
      return {'key_reused'}
    end
    return {stored[2]}
  end
end
local record = read_record(KEYS[1])
local status = record[1]
if not status or record[2] ~= ARGV[2] then
  return {'not_found'}
end
if status == 'confirmed' then
  return {'confirmed', unpack(record)}
end
if status == 'cancelled' or status == 'expired' then
  return {status}
end
local now = now_ms()
if now >= tonumber(record[9]) then
  return {'expired'}
end
if status == 'paying' then
  if redis.call('HGET', KEYS[1], 'attempt') == ARGV[3] then
    return {'pay', unpack(record)}
  end
  return {'paying'}
end
local paying_until = int(now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'status', 'paying', 'attempt', ARGV[3], 'paying_until_ms', paying_until)
redis.call('ZADD', KEYS[2], paying_until, ARGV[1])
return {'pay', unpack(record)}
