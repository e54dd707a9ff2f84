-- find_due: the reaper's read step. Lists holds whose deadline has passed by Redis
-- time, payment attempts waiting to be voided, and how long until the next deadline
-- after those, so an idle category need not be polled every tick. Changes nothing.
-- KEYS: 1 deadlines, 2 voids
-- ARGV: 1 batch max, 2 voids max
-- Returns {due reservation ids, attempt ids to void, ms until the next later deadline or -1}.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local voids = redis.call('SRANDMEMBER', KEYS[2], tonumber(ARGV[2]))
local next = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. int(now), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local wait = -1
if next[2] then
  wait = tonumber(next[2]) - now
end
return {due, voids, wait}
