-- The common prelude: the vocabulary every script with a prelude starts with
-- (LuaScript::with_preludes concatenates it first, so a script stays one EVALSHA). Redis
-- runs this top level on every call, so it only defines what is cheap to build.

-- Redis server time in ms: the only clock any expiry decision uses.
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- Integers as decimal text: Lua's own number formatting switches to exponents past
-- 14 digits.
local function int(number)
  return string.format('%d', number)
end

-- Tracing (src/telemetry/trace_context.rs): an outbox entry's optional `traceparent`
-- field, the W3C trace context of the request that caused the change, as XADD arguments
-- to unpack last. An untraced request passes '' (or nothing) and its entry gets no field
-- at all, and no table is built for it.
local NO_TRACE_FIELDS = {}
local function trace_fields(traceparent)
  if traceparent and traceparent ~= '' then
    return {'traceparent', traceparent}
  end
  return NO_TRACE_FIELDS
end

-- The largest amount a Lua number holds exactly (2^53 - 1): a reserve whose amount is
-- larger is refused.
local AMOUNT_MAX = 9007199254740991

