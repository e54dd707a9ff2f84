-- begin_payment: first step of confirm. Moves the owner's unexpired hold into `paying`
-- for one payment attempt until `paying_until_ms`: the payment window, capped at the
-- hold's own deadline, which is absolute (a payment still running then does not
-- confirm; the reaper releases the hold and voids the attempt). The reaper leaves the
-- hold alone until then. No event: `paying` is internal and reads as held.
-- KEYS: 1 stock, 2 hold record, 3 deadlines, 4 idempotency record (optional)
-- ARGV: 1 reservation id, 2 user id, 3 attempt id, 4 payment window ms, 5 request fingerprint or ''
-- Returns {'pay', record...} (also when this attempt already began: a retried call),
-- {'confirmed', record...}, or {code}: `key_reused`, `declined` (a stored 402 to replay),
-- `not_found`, `cancelled`, `expired`, `stock_missing` (nothing to confirm into; nothing
-- written), `in_progress` (a payment under this idempotency key runs), `paying` (another
-- payment runs).
if KEYS[4] then
  local stored = redis.call('HMGET', KEYS[4], 'fingerprint', 'outcome')
  if stored[1] then
    if stored[1] ~= ARGV[5] then
      return {'key_reused'}
    end
    return {stored[2]}
  end
end
local record, now = live_record(KEYS[2], ARGV[2], 'confirmed')
if not record then
  return now
end
local expires_at = tonumber(record[RECORD.expires_at_ms])
if record[RECORD.status] == 'paying' then
  local running = redis.call('HMGET', KEYS[2], FIELD.attempt, FIELD.payment_key)
  if running[1] == ARGV[3] then
    return {'pay', unpack(record)}
  end
  if KEYS[4] and running[2] == KEYS[4] then
    return {'in_progress'}
  end
  return {'paying'}
end
if stock_missing(KEYS[1]) then
  return {'stock_missing'}
end
local paying_until = int(math.min(now + tonumber(ARGV[4]), expires_at))
redis.call('HSET', KEYS[2], FIELD.status, 'paying', FIELD.attempt, ARGV[3], FIELD.paying_until_ms, paying_until,
  FIELD.payment_key, KEYS[4] or '')
redis.call('ZADD', KEYS[3], paying_until, ARGV[1])
return {'pay', unpack(record)}
