-- reserve_prelude: what the two reserve scripts share (reserve.lua, counted, and
-- reserve_seats.lua, seated): the stock read, the sale checks, the idempotency record of
-- a reserve and the `reserved` outbox entry. Concatenated before each (after the common
-- prelude), so a script stays one EVALSHA; it only defines functions, so it costs the
-- hot path nothing but their closures.

-- The stock fields a reserve reads, in one HMGET (see src/stock.rs).
local STOCK_TERMS = {'state', 'event_id', 'available', 'max_per_user', 'price', 'currency', 'sale_starts_at_ms',
  'sale_ends_at_ms', 'held', 'seated'}

-- A category's stock as a reserve reads it: a table by the names of STOCK_TERMS, each
-- value as Redis holds it (false when absent).
local function read_stock(stock)
  local values = redis.call('HMGET', stock, unpack(STOCK_TERMS))
  local terms = {}
  for position, name in ipairs(STOCK_TERMS) do
    terms[name] = values[position]
  end
  return terms
end

-- Why a stock takes no reserve at all (`stock_missing`, `stock_pending`: 503s, never
-- stored), or nil when it is open.
local function stock_closed(terms)
  if not terms.state then
    return 'stock_missing'
  elseif terms.state ~= 'open' then
    return 'stock_pending'
  end
end

-- The event and sale window checks of one request (`event`: the event id it names, or
-- ''): its refusal, or nil.
local function window_refusal(terms, event, now)
  if event ~= '' and event ~= terms.event_id then
    return 'event_mismatch'
  elseif terms.sale_starts_at_ms ~= '' and now < tonumber(terms.sale_starts_at_ms) then
    return 'sale_not_open'
  elseif terms.sale_ends_at_ms ~= '' and now >= tonumber(terms.sale_ends_at_ms) then
    return 'sale_closed'
  end
end

-- The stored answer of an idempotent reserve: {fingerprint, outcome, reservation id,
-- event id, amount, currency, created_at_ms, expires_at_ms, seats}, items false when
-- absent (no answer stored: the fingerprint is false).
local function stored_reserve(idempotency)
  return redis.call('HMGET', idempotency, 'fingerprint', 'outcome', 'reservation_id', 'event_id', 'amount',
    'currency', 'created_at_ms', 'expires_at_ms', 'seats')
end

-- Stores the answer to an idempotent request: its outcome (a refusal or `held`), a
-- hold's fields when `reservation_id` is given, and `seats` when given (a seated hold's
-- seats, or those a seated refusal lists).
local function store_answer(idempotency, fingerprint, ttl, outcome, seats, reservation_id, event, amount, currency,
                            created, expires)
  if reservation_id then
    redis.call('HSET', idempotency, 'fingerprint', fingerprint, 'outcome', outcome, 'reservation_id', reservation_id,
      'event_id', event, 'amount', amount, 'currency', currency, 'created_at_ms', created, 'expires_at_ms', expires)
  else
    redis.call('HSET', idempotency, 'fingerprint', fingerprint, 'outcome', outcome)
  end
  if seats then
    redis.call('HSET', idempotency, 'seats', seats)
  end
  redis.call('EXPIRE', idempotency, ttl)
end

-- Appends the `reserved` event of a new hold (the entry format of src/outbox.rs, as the
-- reservation prelude's append_event writes the other events): no confirmation time and
-- no payment yet; `seats` only for a seated hold; the request's `traceparent` when it is
-- traced ('' otherwise: no field).
local function append_reserved(outbox, event_id, reservation_id, user, event, category, quantity, amount, currency,
                               created, expires, seats, traceparent)
  local entry = event_id .. '|reserved|' .. created .. '|' .. reservation_id .. '|held|' .. event .. '|' ..
    category .. '|' .. quantity .. '|' .. amount .. '|' .. currency .. '|' .. created .. '|' .. expires .. '|'
  if seats then
    redis.call('XADD', outbox, '*', 'event', entry, 'user_id', user, 'payment_id', '', 'seats', seats,
      unpack(trace_fields(traceparent)))
  else
    redis.call('XADD', outbox, '*', 'event', entry, 'user_id', user, 'payment_id', '',
      unpack(trace_fields(traceparent)))
  end
end
