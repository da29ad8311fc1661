-- Seed budgets' keys that Redis lacks (their period's first request, or a Redis that lost its
-- data) with what the usage records say was spent: each only if no other request seeded it
-- meanwhile (NX), and then with this seed's name beside it, so that a request reserved before
-- (on a key Redis has since lost) knows its reservation is not in this one (settle.lua).
-- KEYS: per budget its key and its seed's key. ARGV: the seed's name (a positive integer),
--   then per budget: micro-credits spent, time to live in ms (0: none, a lifetime budget).
for i = 1, #KEYS / 2 do
  local spent, ttl = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  local set
  if ttl > 0 then
    set = redis.call('SET', KEYS[2 * i - 1], spent, 'PX', ttl, 'NX')
  else
    set = redis.call('SET', KEYS[2 * i - 1], spent, 'NX')
  end
  if set then
    if ttl > 0 then
      redis.call('SET', KEYS[2 * i], ARGV[1], 'PX', ttl)
    else
      redis.call('SET', KEYS[2 * i], ARGV[1])
    end
  end
end
return 1
