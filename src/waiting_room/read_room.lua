-- read_room: a room's settings and counts, after bringing admission up to now. A room
-- never configured reads off with the defaults, opening at the sale's start or now.
-- ARGV: 1 sale_starts_ms (0 = none), 2 default rate, 3 default pass ttl s, 4 sold out ('1'|'0')
-- Returns {enabled, rate, pass_ttl, opens_ms, waiting, admitted, admitted by this call}.
local now = now_ms()
local room = load_room()
if not room then
  room = new_room(now, false, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[1]), 0)
  return {'0', int(room.rate), int(room.pass_ttl), int(room.opens_ms), '0', '0', '0'}
end
local count, waiting = advance(room, now, ARGV[4] == '1')
save_room(room)
return {room.enabled and '1' or '0', int(room.rate), int(room.pass_ttl), int(room.opens_ms), int(waiting),
  int(room.admitted), int(count)}
