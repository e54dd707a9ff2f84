-- renew_lease: extend this relay's lease on a category's outbox, or take it back if it
-- lapsed and nobody else took it.
-- KEYS[1] lease key
-- ARGV: token, ttl_ms
-- Returns 1 while this relay holds the lease, 0 when another relay holds it.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
