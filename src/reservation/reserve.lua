-- reserve: holds tickets for a user. Checks the idempotency record, the stock, the
-- event, the sale window, the outbox backlog, the stock level and the per-user cap
-- before any other write (Redis scripts do not roll back; the cap check's increment
-- is undone on refusal), then writes the hold, its deadline, its `reserved` event and
-- the idempotency record together.
-- The hot path: it runs without the prelude (whose top level Redis would run on every
-- call) and keeps its redis.call count and garbage low.
-- KEYS: 1 stock, 2 hold record, 3 deadlines, 4 holders, 5 outbox, 6 idempotency record (optional)
-- ARGV: 1 reservation id, 2 user id, 3 category id, 4 quantity, 5 hold ttl ms,
--       6 outbox backlog max, 7 event id or '', 8 request fingerprint or '', 9 idempotency ttl s,
--       10 id of the `reserved` outbox event (outbox::event_id)
-- Returns {outcome, replayed ('0'|'1'), reservation id, event id, amount, currency, created_at_ms,
-- expires_at_ms, seats}: outcome `held` (with the fields; seats only when replaying a seated
-- hold) or a refusal code (without them), both stored for idempotent requests; `key_reused`;
-- `seated` (a seated category: nothing written, reserve_seats.lua decides); or `stock_missing`,
-- `stock_pending`, `outbox_backlog`, which are 503s and are never stored, so a retry runs again.
-- A resent call for a hold that exists answers it as a replay.
local idempotency = KEYS[6]
if idempotency then
  local stored = redis.call('HMGET', idempotency, 'fingerprint', 'outcome', 'reservation_id', 'event_id',
    'amount', 'currency', 'created_at_ms', 'expires_at_ms', 'seats')
  if stored[1] then
    if stored[1] ~= ARGV[8] then
      return {'key_reused', '0'}
    end
    return {stored[2], '1', stored[3], stored[4], stored[5], stored[6], stored[7], stored[8], stored[9]}
  end
end

-- A call resent for the same reservation id (the cluster client resends a script whose
-- connection dropped, and during a failover it may have run) answers the hold it wrote
-- and never holds twice.
if redis.call('EXISTS', KEYS[2]) == 1 then
  -- event_id, amount, currency, created_at_ms, expires_at_ms, seats (reservation::record_field). Only the
  -- process that wrote the hold resends its call, so the record is never in an earlier version's layout.
  local held = redis.call('HMGET', KEYS[2], 'e', 'a', 'm', 'tc', 'tx', 'n')
  return {'held', '1', ARGV[1], held[1], held[2], held[3], held[4], held[5], held[6]}
end

local stock = redis.call('HMGET', KEYS[1], 'state', 'event_id', 'available', 'max_per_user', 'price', 'currency',
  'sale_starts_at_ms', 'sale_ends_at_ms', 'held', 'seated')
if not stock[1] then
  return {'stock_missing', '0'}
end
if stock[1] ~= 'open' then
  return {'stock_pending', '0'}
end
if stock[10] then
  return {'seated', '0'}
end

-- Redis server time in ms: the only clock any expiry decision uses.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local user = ARGV[2]
local quantity = tonumber(ARGV[4])
local refusal
if ARGV[7] ~= '' and ARGV[7] ~= stock[2] then
  refusal = 'event_mismatch'
elseif stock[7] ~= '' and now < tonumber(stock[7]) then
  refusal = 'sale_not_open'
elseif stock[8] ~= '' and now >= tonumber(stock[8]) then
  refusal = 'sale_closed'
end
local amount = tonumber(stock[5]) * quantity
local available = tonumber(stock[3])
if not refusal then
  if redis.call('XLEN', KEYS[5]) >= tonumber(ARGV[6]) then
    return {'outbox_backlog', '0'}
  end
  if available < quantity then
    refusal = 'sold_out'
  elseif amount > 9007199254740991 then
    -- Beyond 2^53 a Lua number no longer holds the exact amount.
    refusal = 'amount_too_large'
  else
    -- The cap check is the one write before a refusal: the increment tells the user's
    -- new total in one call (a separate read cost as much again on the hot path), and
    -- a refusal takes it back in this same atomic script, so no one sees it.
    local holding = redis.call('HINCRBY', KEYS[4], user, quantity)
    if holding > tonumber(stock[4]) then
      if holding == quantity then
        redis.call('HDEL', KEYS[4], user)
      else
        redis.call('HINCRBY', KEYS[4], user, -quantity)
      end
      refusal = 'limit_exceeded'
    end
  end
end
if refusal then
  if idempotency then
    redis.call('HSET', idempotency, 'fingerprint', ARGV[8], 'outcome', refusal)
    redis.call('EXPIRE', idempotency, ARGV[9])
  end
  return {refusal, '0'}
end

local reservation_id = ARGV[1]
-- string.format('%d'): Lua's own number formatting switches to exponents past 14 digits.
local created = string.format('%d', now)
local expires = string.format('%d', now + tonumber(ARGV[5]))
local amount_text = string.format('%d', amount)
-- One HSET for both levels: the script reads and writes them atomically.
redis.call('HSET', KEYS[1], 'available', string.format('%d', available - quantity),
  'held', string.format('%d', (tonumber(stock[9]) or 0) + quantity))
-- The record's stored field names (reservation::record_field): status, user_id, event_id,
-- category_id, quantity, amount, currency, created_at_ms, expires_at_ms.
redis.call('HSET', KEYS[2], 's', 'held', 'u', user, 'e', stock[2], 'c', ARGV[3], 'q', ARGV[4], 'a', amount_text,
  'm', stock[6], 'tc', created, 'tx', expires)
-- No TTL while the hold lives: the record exists as long as its deadline entry, however
-- long no reaper runs. It gets one when it reaches a final status.
redis.call('ZADD', KEYS[3], expires, reservation_id)
-- The outbox entry of src/outbox.rs, as the prelude's append_event writes it.
redis.call('XADD', KEYS[5], '*',
  'event', ARGV[10] .. '|reserved|' .. created .. '|' .. reservation_id .. '|held|' .. stock[2] .. '|' ..
    ARGV[3] .. '|' .. ARGV[4] .. '|' .. amount_text .. '|' .. stock[6] .. '|' .. created .. '|' .. expires .. '|',
  'user_id', user, 'payment_id', '')
if idempotency then
  redis.call('HSET', idempotency, 'fingerprint', ARGV[8], 'outcome', 'held', 'reservation_id', reservation_id,
    'event_id', stock[2], 'amount', amount_text, 'currency', stock[6], 'created_at_ms', created,
    'expires_at_ms', expires)
  redis.call('EXPIRE', idempotency, ARGV[9])
end
return {'held', '0', reservation_id, stock[2], amount_text, stock[6], created, expires}
