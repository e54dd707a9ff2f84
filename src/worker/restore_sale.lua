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
-- KEYS: 1 stock, 2 hold record, 3 deadlines, 4 holders, 5..9 seat keys (seat_keys)
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

-- Marks the reservation's seats (comma-separated names) taken again, unless one is
-- unknown or taken: then nothing is written and the conflict is answered.
local function take_seats(keys, list)
  local names = seat_names(list)
  local seats = find_seats(keys, names)
  for position, seat in ipairs(seats) do
    if not seat then
      return 'unknown seat ' .. (string.match(names[position], '^(.+)%-%d+$') or names[position])
    end
    if redis.call('GETBIT', keys.bitmap, seat.bit) == 1 then
      return 'seat ' .. seat.name .. ' sold again'
    end
  end
  set_seats(keys, seats, 1)
end

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
if ARGV[4] ~= '' then
  local conflict = take_seats(seat_keys(5), ARGV[4])
  if conflict then
    return {'conflict', conflict}
  end
end
redis.call('HINCRBY', KEYS[1], 'available', -quantity)
redis.call('HINCRBY', KEYS[1], 'sold', quantity)
redis.call('HINCRBY', KEYS[4], ARGV[2], quantity)
confirm_record()
return {'restored', 'released'}
