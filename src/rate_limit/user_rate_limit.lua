-- user_rate_limit: one user's requests against two GCRA limits (generic cell rate
-- algorithm), shared by every api process: a short one (a rate per second with a burst)
-- and a daily budget (the whole budget at once, then one request per 24 h / budget).
-- Both are checked before either is written, and a refused request changes nothing.
-- KEYS: 1 the short limit's theoretical arrival time, 2 the daily one's (both in the
--       user's slot, microseconds since the epoch)
-- ARGV: 1 the short limit's emission interval in microseconds (0: off), 2 its burst
--       tolerance in microseconds, 3 and 4 the same for the daily budget
-- Returns {1, 0} when the request may run (both times moved on by one interval), else
-- {0, milliseconds until it would pass}.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local next_arrivals = {}
local wait = 0
for tier = 1, 2 do
  local interval = tonumber(ARGV[tier * 2 - 1])
  local tolerance = tonumber(ARGV[tier * 2])
  if interval > 0 then
    local arrival = math.max(tonumber(redis.call('GET', KEYS[tier])) or now, now)
    local early = arrival - tolerance - now
    if early > 0 then
      wait = math.max(wait, early)
    else
      next_arrivals[#next_arrivals + 1] = {KEYS[tier], arrival + interval}
    end
  end
end
if wait > 0 then
  return {0, math.ceil(wait / 1000)}
end
for _, next_arrival in ipairs(next_arrivals) do
  -- The key lives exactly as long as it holds back a request: afterwards it equals none.
  redis.call('SET', next_arrival[1], string.format('%d', next_arrival[2]), 'PX',
    math.ceil((next_arrival[2] - now) / 1000))
end
return {1, 0}
