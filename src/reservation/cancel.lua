-- cancel: the owner releases a hold at once. Repeating it changes nothing.
-- KEYS: 1 stock, 2 hold record, 3 deadlines, 4 holders, 5 outbox
-- ARGV: 1 reservation id, 2 user id, 3 final record ttl ms, 4 id of the `cancelled` outbox event,
--       5 traceparent of the request or ''
-- Returns {'cancelled', record...} (now or before), or {code}: `not_found` (absent or
-- someone else's), `confirmed`, `paying`, `expired` (also when held at or after its deadline),
-- `stock_missing` (the stock key is lost; nothing written).
upgrade_record(KEYS[2])
local record = read_record(KEYS[2])
local status = record[1]
if not status or record[2] ~= ARGV[2] then
  return {'not_found'}
end
if status == 'cancelled' then
  return {'cancelled', unpack(record)}
end
if status == 'confirmed' or status == 'expired' then
  return {status}
end
local now = now_ms()
if now >= tonumber(record[9]) then
  return {'expired'}
end
if status ~= 'held' then
  return {status}
end
if stock_missing(KEYS[1]) then
  return {'stock_missing'}
end
release(KEYS[1], KEYS[4], KEYS[3], KEYS[2], ARGV[1], ARGV[2], tonumber(record[5]), 'cancelled', ARGV[3])
record = append_event(KEYS[5], KEYS[2], ARGV[1], ARGV[4], 'cancelled', now, ARGV[5])
return {'cancelled', unpack(record)}
