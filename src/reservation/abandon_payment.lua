-- abandon_payment: after a declined, failed or timed-out charge, returns the hold from
-- `paying` to `held` under its own deadline (the reaper releases it if that has passed).
-- KEYS: 1 hold record, 2 deadlines, 3 voids, 4 idempotency record (optional)
-- ARGV: 1 reservation id, 2 attempt id, 3 reason (`declined`|`failed`), 4 '1' to queue the
--       attempt for voiding (its outcome is unknown and voiding it failed), 5 fingerprint or '',
--       6 idempotency ttl s
-- Returns {'returned', 'held'}, {'returned', 'late'} when the hold's deadline has passed
-- (the deadline is absolute: that confirm answers 410, and a decline is not stored for
-- replay), or {'lost', status} when the hold had moved on.
if ARGV[4] == '1' then
  queue_void(KEYS[3], ARGV[2])
end
upgrade_record(KEYS[1])
local status, attempt, expires_at = unpack(redis.call('HMGET', KEYS[1], FIELD.status, FIELD.attempt,
  FIELD.expires_at_ms))
local late = now_ms() >= tonumber(expires_at or 0)
if KEYS[4] and ARGV[3] == 'declined' and not late then
  -- A 402 is a final answer for this key: replayed, never charged again.
  redis.call('HSET', KEYS[4], 'fingerprint', ARGV[5], 'outcome', 'declined')
  redis.call('EXPIRE', KEYS[4], ARGV[6])
end
if status ~= 'paying' or attempt ~= ARGV[2] then
  return {'lost', status or ''}
end
return_to_held(KEYS[1], KEYS[2], ARGV[1], expires_at)
if late then
  return {'returned', 'late'}
end
return {'returned', 'held'}
