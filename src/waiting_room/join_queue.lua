-- join_queue: puts the caller in the event's queue, or keeps the place they have. A user
-- whose pass has expired joins again at the back. Creates the room (off, with the given
-- defaults) when the event was never configured.
-- ARGV: 1 user, 2 random pre-opening score (0 .. 2^52 - 1), 3 sold out ('1'|'0'),
--       4 sale_starts_ms (0 = none), 5 sale_ends_ms (0 = none), 6 default rate, 7 default pass ttl s
-- Returns reply(): outcome `created`, `existing` or `sale_closed`.
local now = now_ms()
local user = ARGV[1]
local sold_out = ARGV[3] == '1'
local room = load_room()
if not room then
  room = new_room(now, false, tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[4]), tonumber(ARGV[5]))
end
local count, waiting = advance(room, now, sold_out)
if room.ends_ms > 0 and now >= room.ends_ms then
  save_room(room)
  return {'sale_closed'}
end
local outcome = 'existing'
local score = redis.call('ZSCORE', KEYS[2], user)
local rejoin = false
if score then
  local status = status_of(room, now, user, sold_out)
  rejoin = status[1] == 'expired'
end
if not score or rejoin then
  outcome = 'created'
  local place
  -- Before the opening an on room has admitted nobody (turning it on emptied its queue), so
  -- `boundary < 0` always holds here; it only guards a room written by an earlier version.
  if room.enabled and now < room.opens_ms and room.boundary < 0 then
    place = tonumber(ARGV[2])
  else
    room.seq = room.seq + 1
    place = FIFO_BASE + room.seq
  end
  redis.call('ZADD', KEYS[2], int(place), user)
  redis.call('HSET', KEYS[3], user, int(now))
  -- The newcomer may be admitted at once: the room is off, or the bucket has tokens left.
  local more
  more, waiting = advance(room, now, sold_out)
  count = count + more
end
save_room(room)
return reply(outcome, status_of(room, now, user, sold_out), waiting, room, now, count)
