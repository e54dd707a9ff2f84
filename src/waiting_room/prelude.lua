-- prelude: helpers shared by the waiting-room scripts; concatenated before each one
-- (after the common prelude, src/script/prelude.lua: now_ms, int), so a script stays one
-- EVALSHA.
--
-- Keys of event E (hash tag {e:E}), the same four in every script:
-- KEYS[1] room: hash of the settings and the admission state (see ROOM_FIELDS);
-- KEYS[2] queue: sorted set of every user who joined, by place. Users who joined before
--         the queue opened have a random score below 2^52 (drawn by the API from a CSPRNG),
--         everyone later 2^52 + a sequence number, so the pre-opening joiners stand in a
--         uniformly random order ahead of everyone else, and later joiners in FIFO order.
--         Users with a score up to `boundary` are admitted; the rest wait.
-- KEYS[3] joined: hash of user to the join time (ms), with a `+` once the user has been
--         seen admitted (the join-to-admission time is recorded once);
-- KEYS[4] admissions: sorted set of admission batches, by the batch's boundary score,
--         member `admitted_ms:pass_ttl_s:boundary`.
-- The room's `epoch` counts the times it was turned on; passes carry it (see turn_on).
--
-- Admission is computed lazily from Redis TIME: a token bucket of `rate` tokens that
-- fills at `rate` per second (kept in thousandths) and never holds more than `rate`, also
-- between calls, so in any window of T seconds at most rate * (T + 1) users are admitted,
-- and whenever users wait the bucket is spent on the head of the queue. Every script
-- first brings the admission state up to now; a spell without any call admits nobody,
-- and the next call admits at most `rate` (the pace resumes from there).

local FIFO_BASE = 4503599627370496 -- 2^52
local ROOM_FIELDS = {'enabled', 'rate', 'pass_ttl', 'opens_ms', 'ends_ms', 'tokens', 'last_ms', 'boundary',
  'admitted', 'seq', 'epoch'}

local function load_room()
  local f = redis.call('HMGET', KEYS[1], unpack(ROOM_FIELDS))
  if not f[1] then
    return nil
  end
  return {enabled = f[1] == '1', rate = tonumber(f[2]), pass_ttl = tonumber(f[3]), opens_ms = tonumber(f[4]),
    ends_ms = tonumber(f[5]), tokens = tonumber(f[6]), last_ms = tonumber(f[7]), boundary = tonumber(f[8]),
    admitted = tonumber(f[9]), seq = tonumber(f[10]), epoch = tonumber(f[11]) or 0}
end

-- A room as first configured: the given settings, opening at the sale's start or now.
local function new_room(now, enabled, rate, pass_ttl, sale_starts_ms, sale_ends_ms)
  return {enabled = enabled, rate = rate, pass_ttl = pass_ttl, opens_ms = math.max(now, sale_starts_ms),
    ends_ms = sale_ends_ms, tokens = 0, last_ms = 0, boundary = -1, admitted = 0, seq = 0, epoch = 0}
end

local function save_room(room)
  redis.call('HSET', KEYS[1], 'enabled', room.enabled and '1' or '0', 'rate', int(room.rate),
    'pass_ttl', int(room.pass_ttl), 'opens_ms', int(room.opens_ms), 'ends_ms', int(room.ends_ms),
    'tokens', int(room.tokens), 'last_ms', int(room.last_ms), 'boundary', int(room.boundary),
    'admitted', int(room.admitted), 'seq', int(room.seq), 'epoch', int(room.epoch))
end

-- Turns an off room on: a new epoch, which voids every pass signed before (the API checks
-- a pass's epoch against the room's), and an empty queue, so the users admitted while it
-- was off queue again like everyone else. Nobody waits in an off room (it admits at once),
-- so nobody loses a place; and before the opening the next joiners get random places again.
local function turn_on(room)
  room.enabled = true
  room.epoch = room.epoch + 1
  room.boundary = -1
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
end

-- Users admitted so far who are still in the queue set (O(log n)).
local function admitted_count(room)
  if room.boundary < 0 then
    return 0
  end
  return redis.call('ZCOUNT', KEYS[2], '-inf', int(room.boundary))
end

-- Admits the next `count` waiting users (their places end at the new boundary).
local function admit(room, now, ahead, count)
  local last = redis.call('ZRANGE', KEYS[2], ahead + count - 1, ahead + count - 1, 'WITHSCORES')
  room.boundary = tonumber(last[2])
  room.admitted = room.admitted + count
  redis.call('ZADD', KEYS[4], int(room.boundary), int(now) .. ':' .. int(room.pass_ttl) .. ':' .. int(room.boundary))
end

-- Brings admission up to `now`. While the room is off everyone waiting is admitted; while
-- the event is sold out (ARGV from the caller) admission pauses. Returns how many users
-- this call admitted and how many still wait.
local function advance(room, now, sold_out)
  local ahead = admitted_count(room)
  local waiting = redis.call('ZCARD', KEYS[2]) - ahead
  local count = 0
  if not room.enabled then
    count = waiting
  elseif now >= room.opens_ms then
    local cap = room.rate * 1000
    local tokens = cap -- a full bucket at the opening
    if room.last_ms >= room.opens_ms then
      -- Capped before it is spent: after a quiet spell (no call while users waited) the
      -- bucket holds at most `rate` tokens, so one call never admits a backlog at once.
      tokens = math.min(room.tokens + (now - room.last_ms) * room.rate, cap)
    end
    if not sold_out then
      count = math.min(math.floor(tokens / 1000), waiting)
    end
    room.tokens = tokens - count * 1000
    room.last_ms = now
  end
  if count > 0 then
    admit(room, now, ahead, count)
  end
  return count, waiting - count
end

-- The caller's status: {status, position or -1, joined_ms, pass_expires_ms or -1, first_wait_ms or -1}.
local function status_of(room, now, user, sold_out)
  local score = redis.call('ZSCORE', KEYS[2], user)
  local joined = redis.call('HGET', KEYS[3], user)
  local joined_ms = tonumber(string.match(joined, '^%d+'))
  if room.boundary < 0 or tonumber(score) > room.boundary then
    if sold_out then
      return {'sold_out', -1, joined_ms, -1, -1}
    end
    if room.enabled and now < room.opens_ms then
      return {'waiting', -1, joined_ms, -1, -1}
    end
    local position = redis.call('ZRANK', KEYS[2], user) - admitted_count(room) + 1
    return {'waiting', position, joined_ms, -1, -1}
  end
  local batch = redis.call('ZRANGE', KEYS[4], score, '+inf', 'BYSCORE', 'LIMIT', 0, 1)[1]
  local admitted_ms, ttl = string.match(batch, '^(%d+):(%d+):')
  local expires_ms = tonumber(admitted_ms) + tonumber(ttl) * 1000
  local first_wait_ms = -1
  if not string.find(joined, '+', 1, true) then
    redis.call('HSET', KEYS[3], user, joined .. '+')
    first_wait_ms = math.max(0, tonumber(admitted_ms) - joined_ms)
  end
  if now >= expires_ms then
    return {'expired', -1, joined_ms, expires_ms, first_wait_ms}
  end
  return {'admitted', -1, joined_ms, expires_ms, first_wait_ms}
end

-- The reply of join and poll: {outcome, status..., waiting, rate, opens_ms, now, admitted by this call,
-- epoch (signed into the pass)}.
local function reply(outcome, status, waiting, room, now, count)
  return {outcome, status[1], int(status[2]), int(status[3]), int(status[4]), int(status[5]), int(waiting),
    int(room.rate), int(room.opens_ms), int(now), int(count), int(room.epoch)}
end
