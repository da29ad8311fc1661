-- Renew the concurrency leases of one process's requests in flight (accounts.limits.leases):
-- one call for all of them, every third of a lease.
-- KEYS: a concurrency key per lease. ARGV: the new expiry (ms), the lease (ms), then each
--   lease's request id (ARGV[i + 2] for KEYS[i]).
-- Returns how many leases were moved.
-- XX: a lease no longer there (its settle crossed this renewal, or a reserve pruned it) is not
-- put back: the slot would be taken again, by nobody, for a whole lease.
-- Leases are kept out of the append-only file and the replicas, as in the reserve.
redis.set_repl(redis.REPL_NONE)
local renewed = 0
for i = 1, #KEYS do
  renewed = renewed + redis.call('ZADD', KEYS[i], 'XX', 'CH', ARGV[1], ARGV[i + 2])
  -- the key outlives its latest lease (an argument as it came: see the reserve)
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
redis.set_repl(redis.REPL_ALL)
return renewed
