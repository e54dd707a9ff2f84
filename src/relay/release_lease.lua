-- release_lease: give up this relay's lease so another process can take the stream at once.
-- KEYS[1] lease key
-- ARGV: token
-- Returns 1 when released, 0 when the lease was not ours (any more).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
