-- poll_queue: the caller's place in the event's queue, after bringing admission up to now.
-- ARGV: 1 user, 2 sold out ('1'|'0')
-- Returns reply(): outcome `existing`; or `not_joined`, alone.
local now = now_ms()
local user = ARGV[1]
local sold_out = ARGV[2] == '1'
local room = load_room()
if not room or not redis.call('ZSCORE', KEYS[2], user) then
  return {'not_joined'}
end
local count, waiting = advance(room, now, sold_out)
save_room(room)
return reply('existing', status_of(room, now, user, sold_out), waiting, room, now, count)
