-- cancel: the owner releases a hold at once. Repeating it changes nothing.
-- KEYS: 1 stock, 2 hold record, 3 deadlines, 4 holders, 5 outbox, 6..10 seat keys (seat_keys)
-- ARGV: 1 reservation id, 2 user id, 3 final record ttl ms, 4 id of the `cancelled` outbox event,
--       5 traceparent of the request or ''
-- Returns {'cancelled', record...} (now or before), or {code}: `not_found` (absent or
-- someone else's), `confirmed`, `paying`, `expired` (also when held at or after its deadline),
-- `stock_missing` (the stock key is lost; nothing written).
local record, now = live_record(KEYS[2], ARGV[2], 'cancelled')
if not record then
  return now
end
if record[RECORD.status] ~= 'held' then
  return {record[RECORD.status]}
end
if stock_missing(KEYS[1]) then
  return {'stock_missing'}
end
release(KEYS[1], seat_keys(6), KEYS[4], KEYS[3], KEYS[2], ARGV[1], ARGV[2], tonumber(record[RECORD.quantity]),
  'cancelled', ARGV[3])
record = append_event(KEYS[5], KEYS[2], ARGV[1], ARGV[4], 'cancelled', now, ARGV[5])
return {'cancelled', unpack(record)}
