-- reserve: holds tickets for users: decides a batch of counted reserves of one category
-- in order, each exactly as it would be decided alone (a script call is atomic, so
-- deciding them one after another here is deciding them one by one); a batch of one
-- is a single reserve. For each request it checks the idempotency record, the stock,
-- the event, the sale window, the outbox backlog, the stock level and the per-user cap
-- before any other write (Redis scripts do not roll back; the cap check's increment is
-- undone on refusal), then writes the hold, its `reserved` event and the idempotency
-- record together.
-- The hot path: it runs without the reservation prelude (whose top level Redis would run
-- on every call), with the common prelude and reserve_prelude.lua only (functions: cheap to
-- define), and keeps its redis.call count and garbage low: the stock is read once per call,
-- its levels are tracked in locals and written once at the end, as are the deadlines;
-- the outbox length is read once and counted up with each event written.
-- KEYS: 1 stock, 2 deadlines, 3 holders, 4 outbox, then per request: its hold record, and
--       its idempotency record when the request has a fingerprint
-- ARGV: 1 category id, 2 hold ttl ms, 3 outbox backlog max, 4 idempotency ttl s, then per
--       request REQUEST_ARGUMENTS items: reservation id, user id, quantity, event id or '',
--       request fingerprint or '' (no idempotency record), id of its `reserved` outbox event
--       (outbox::event_id), its traceparent or '' (untraced: the entry gets no such field)
-- Returns a flat array of REPLY_ITEMS items per request, in request order: {outcome,
-- replayed ('0'|'1'), reservation id, event id, amount, currency, created_at_ms,
-- expires_at_ms, seats}, absent items nil: outcome `held` (with the fields; seats only
-- when replaying a seated hold) or a refusal code (without them), both stored for
-- idempotent requests; `key_reused`; `seated` (a seated category: nothing written,
-- reserve_seats.lua decides); or `stock_missing`, `stock_pending`, `outbox_backlog`,
-- which are 503s and are never stored, so a retry runs again; or `id_taken` (never stored).
-- A resent call for a hold that exists answers it as a replay.
local REQUEST_ARGUMENTS = 7
local REPLY_ITEMS = 9
local replies = {}

-- Appends one request's reply; nil items become false (a nil reply), so the array
-- keeps its fixed width.
local function answer(outcome, replayed, id, event, amount, currency, created, expires, seats)
  local at = #replies
  replies[at + 1] = outcome
  replies[at + 2] = replayed
  replies[at + 3] = id or false
  replies[at + 4] = event or false
  replies[at + 5] = amount or false
  replies[at + 6] = currency or false
  replies[at + 7] = created or false
  replies[at + 8] = expires or false
  replies[at + 9] = seats or false
end

local stock = read_stock(KEYS[1])
local closed = stock_closed(stock)
if not closed and stock.seated then
  closed = 'seated'
end
local available = tonumber(stock.available)
local held = tonumber(stock.held) or 0
local now = not closed and now_ms()
local created = now and int(now)
local expires = now and int(now + tonumber(ARGV[2]))
local category = ARGV[1]
local backlog_max = tonumber(ARGV[3])
local idempotency_ttl = ARGV[4]
local outbox_length
local deadlines = {}

-- The stock and cap checks of one request: its refusal, or nil when it may be held.
local function stock_refusal(user, quantity, amount)
  if available < quantity then
    return 'sold_out'
  elseif amount > AMOUNT_MAX then
    return 'amount_too_large'
  end
  -- The cap check is the one write before a refusal: the increment tells the user's new
  -- total in one call (a separate read cost as much again on the hot path), and a
  -- refusal takes it back in this same atomic script, so no one sees it.
  local holding = redis.call('HINCRBY', KEYS[3], user, quantity)
  if holding > tonumber(stock.max_per_user) then
    if holding == quantity then
      redis.call('HDEL', KEYS[3], user)
    else
      redis.call('HINCRBY', KEYS[3], user, -quantity)
    end
    return 'limit_exceeded'
  end
end

-- Writes the hold, its `reserved` event and the idempotency record of one request.
local function hold(hold_key, idempotency, fingerprint, reservation_id, user, quantity_text, amount, event_id,
    traceparent)
  local amount_text = int(amount)
  -- The record's stored field names (reservation::record_field): status, user_id, event_id,
  -- category_id, quantity, amount, currency, created_at_ms, expires_at_ms.
  redis.call('HSET', hold_key, 's', 'held', 'u', user, 'e', stock.event_id, 'c', category, 'q', quantity_text,
    'a', amount_text, 'm', stock.currency, 'tc', created, 'tx', expires)
  -- No TTL while the hold lives: the record exists as long as its deadline entry, however
  -- long no reaper runs. It gets one when it reaches a final status.
  deadlines[#deadlines + 1] = expires
  deadlines[#deadlines + 1] = reservation_id
  append_reserved(KEYS[4], event_id, reservation_id, user, stock.event_id, category, quantity_text, amount_text,
    stock.currency, created, expires, nil, traceparent)
  outbox_length = outbox_length + 1
  if idempotency then
    store_answer(idempotency, fingerprint, idempotency_ttl, 'held', nil, reservation_id, stock.event_id, amount_text,
      stock.currency, created, expires)
  end
  answer('held', '0', reservation_id, stock.event_id, amount_text, stock.currency, created, expires)
end

-- Decides one request: the argument at `at` is its first; its keys are `hold_key` and
-- `idempotency` (nil without a fingerprint).
local function reserve(at, hold_key, idempotency)
  local reservation_id, user, quantity_text, event = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local fingerprint = ARGV[at + 4]
  if idempotency then
    local stored = stored_reserve(idempotency)
    if stored[1] then
      if stored[1] ~= fingerprint then
        return answer('key_reused', '0')
      end
      return answer(stored[2], '1', stored[3], stored[4], stored[5], stored[6], stored[7], stored[8], stored[9])
    end
  end
  -- A call resent for the same reservation id (the cluster client resends a script whose
  -- connection dropped, and during a failover it may have run) answers the hold it wrote
  -- and never holds twice. A hold under this id that is not this request's (random ids
  -- collided) is `id_taken`: nothing is written and the engine draws another id.
  if redis.call('EXISTS', hold_key) == 1 then
    -- status, user_id, quantity, event_id, amount, currency, created_at_ms, expires_at_ms, seats
    -- (reservation::record_field). A record in an earlier version's layout is never this call's own.
    local stored = redis.call('HMGET', hold_key, 's', 'u', 'q', 'e', 'a', 'm', 'tc', 'tx', 'n')
    if stored[1] ~= 'held' or stored[2] ~= user or stored[3] ~= quantity_text then
      return answer('id_taken', '0')
    end
    return answer('held', '1', reservation_id, stored[4], stored[5], stored[6], stored[7], stored[8], stored[9])
  end
  if closed then
    return answer(closed, '0')
  end
  local refusal = window_refusal(stock, event, now)
  if not refusal then
    outbox_length = outbox_length or redis.call('XLEN', KEYS[4])
    if outbox_length >= backlog_max then
      return answer('outbox_backlog', '0')
    end
  end
  local quantity = tonumber(quantity_text)
  local amount = tonumber(stock.price) * quantity
  refusal = refusal or stock_refusal(user, quantity, amount)
  if refusal then
    if idempotency then
      store_answer(idempotency, fingerprint, idempotency_ttl, refusal)
    end
    return answer(refusal, '0')
  end
  available = available - quantity
  held = held + quantity
  hold(hold_key, idempotency, fingerprint, reservation_id, user, quantity_text, amount, ARGV[at + 5], ARGV[at + 6])
end

local key = 5
for at = 5, #ARGV, REQUEST_ARGUMENTS do
  local hold_key = KEYS[key]
  local idempotency
  if ARGV[at + 4] ~= '' then
    idempotency = KEYS[key + 1]
  end
  key = key + (idempotency and 2 or 1)
  reserve(at, hold_key, idempotency)
end
if #deadlines > 0 then
  -- One HSET for both levels and one ZADD for every deadline: the script reads and
  -- writes them atomically.
  redis.call('HSET', KEYS[1], 'available', int(available), 'held', int(held))
  redis.call('ZADD', KEYS[2], unpack(deadlines))
end
return replies
