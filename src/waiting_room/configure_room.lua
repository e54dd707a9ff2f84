-- configure_room: changes a room's settings, after bringing admission up to now under the
-- old ones, so a new rate or turning the room off takes effect at once (turning it off
-- admits everyone waiting). Turning it on starts a new epoch (turn_on in the prelude).
-- ARGV: 1 enabled ('1'|'0'|'' to keep), 2 rate ('' to keep), 3 pass ttl s ('' to keep),
--       4 sale_starts_ms (0 = none), 5 sale_ends_ms (0 = none), 6 default rate, 7 default pass ttl s,
--       8 sold out ('1'|'0')
-- Returns the room: {enabled, rate, pass_ttl, opens_ms, waiting, admitted, admitted by this call}.
local now = now_ms()
local room = load_room()
if not room then
  room = new_room(now, false, tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[4]), tonumber(ARGV[5]))
end
local count = advance(room, now, ARGV[8] == '1')
if ARGV[1] == '1' and not room.enabled then
  turn_on(room)
elseif ARGV[1] == '0' then
  room.enabled = false
end
if ARGV[2] ~= '' then
  room.rate = tonumber(ARGV[2])
  room.tokens = math.min(room.tokens, room.rate * 1000)
end
if ARGV[3] ~= '' then
  room.pass_ttl = tonumber(ARGV[3])
end
local more, waiting = advance(room, now, ARGV[8] == '1')
save_room(room)
return {room.enabled and '1' or '0', int(room.rate), int(room.pass_ttl), int(room.opens_ms), int(waiting),
  int(room.admitted), int(count + more)}
