-- restore_sale: `worker reconcile --repair` brings one reservation that Postgres has
-- `confirmed` up to date in Redis, where a failover left it behind: still held or paying
-- (its tickets are in `held`), or released, expired or cancelled, or without a record (its
-- tickets went back on sale). Postgres is the ledger of sales, so the hold becomes
-- confirmed and its tickets sold, in one script, with the stock's counts following:
-- held -> sold, or available -> sold with the user's count and the seats taken again.
-- If the tickets or seats were sold again meanwhile, nothing is written and the conflict
-- is answered (that sale has two buyers: an operator decides). The record is marked
-- confirmed here, so running it again changes nothing; reconcile then writes the whole
-- record from Postgres.
-- KEYS: 1 stock, 2 hold record, 3 deadlines, 4 holders
-- ARGV: 1 reservation id, 2 user id, 3 quantity, 4 seats ('' or comma-separated names),
--       5 '1' when a missing record means a lost sale (confirmed recently, so the record
--       cannot have expired by its TTL), 6 final record ttl ms
-- Returns {'confirmed'} (nothing behind), {'absent'} (no record, and ARGV[5] is not '1'),
-- {'restored', 'held'|'released'}, {'conflict', reason}, or {'stock_missing'}.
upgrade_record(KEYS[2])
local status = redis.call('HGET', KEYS[2], FIELD.status)
if status == 'confirmed' then
  return {'confirmed'}
end
if not status and ARGV[5] ~= '1' then
  return {'absent'}
end
if stock_missing(KEYS[1]) then
  return {'stock_missing'}
end
local quantity = tonumber(ARGV[3])
local function confirm_record()
  redis.call('HSET', KEYS[2], FIELD.status, 'confirmed', FIELD.user_id, ARGV[2], FIELD.quantity, quantity)
  redis.call('HDEL', KEYS[2], FIELD.paying_until_ms, FIELD.payment_key)
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if status == 'held' or status == 'paying' then
  redis.call('HINCRBY', KEYS[1], 'held', -quantity)
  redis.call('HINCRBY', KEYS[1], 'sold', quantity)
  confirm_record()
  return {'restored', 'held'}
end
-- Released: the tickets must still be available, and the seats free.
local available = tonumber(redis.call('HGET', KEYS[1], 'available'))
if available < quantity then
  return {'conflict', 'tickets sold again'}
end
local seats = {}
if ARGV[4] ~= '' then
  local prefix = string.sub(KEYS[1], 1, -6)
  local rows, numbers = {}, {}
  for row, number in string.gmatch(ARGV[4], '([^,]+)%-(%d+)') do
    rows[#rows + 1] = row
    numbers[#numbers + 1] = tonumber(number)
  end
  local layout = redis.call('HMGET', prefix .. 'seat-rows', unpack(rows))
  for position, entry in ipairs(layout) do
    local index, byte_offset = string.match(entry or '', '^(%d+):(%d+):')
    if not index then
      return {'conflict', 'unknown seat ' .. rows[position]}
    end
    local bit = tonumber(byte_offset) * 8 + numbers[position] - 1
    if redis.call('GETBIT', prefix .. 'seats', bit) == 1 then
      return {'conflict', 'seat ' .. rows[position] .. '-' .. numbers[position] .. ' sold again'}
    end
    seats[position] = {index = tonumber(index), bit = bit}
  end
  set_seats(prefix .. 'seats', prefix .. 'seat-free', prefix .. 'seat-runs', seats, 1)
end
redis.call('HINCRBY', KEYS[1], 'available', -quantity)
redis.call('HINCRBY', KEYS[1], 'sold', quantity)
redis.call('HINCRBY', KEYS[4], ARGV[2], quantity)
confirm_record()
return {'restored', 'released'}
