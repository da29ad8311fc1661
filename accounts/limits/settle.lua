-- Settle one admitted request: give back (or take) the difference between the tokens and
-- credits reserved and those used, and free its concurrency lease. Posted: nothing reads its reply.
-- KEYS: per subject 4 keys: tpm, concurrency, budget, the budget's seed (seed.lua).
-- ARGV: now_ms, lease id (the reserve's), n, token delta, credits used (micro-credits), then per subject 4
--   values: tpm (0 = none), has a budget (1 / 0), the seed its budget key had when the request
--   counted on it (0: none), and the credits used less those it counted there.
-- A budget's key that still has that seed holds the request's reservation: it takes the
-- difference. One seeded since (Redis lost its data, and a request seeded it from the usage
-- records, which this request's is not in yet) holds none of it: it takes what was used, all
-- of it (given back, the reservation it no longer holds made the budget look less spent than
-- the records say). A key that is gone takes nothing: its next seed reads the usage records.
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local n = tonumber(ARGV[3])
local tokens_delta = tonumber(ARGV[4])
-- every subject's tpm arrival time, budget spent and seed in one read (one hash slot)
local names = {}
for i = 1, n do
  local k = (i - 1) * 4
  names[#names + 1] = KEYS[k + 1]
  names[#names + 1] = KEYS[k + 3]
  names[#names + 1] = KEYS[k + 4]
end
local stored = redis.call('MGET', unpack(names))
-- rates and leases kept out of the append-only file and replicas, as in the reserve
redis.set_repl(redis.REPL_NONE)
for i = 1, n do
  local a = 5 + (i - 1) * 4
  local tpm, dt = tonumber(ARGV[a + 1]), tokens_delta
  local k = (i - 1) * 4
  if tpm > 0 and dt ~= 0 then
    local tat = tonumber(stored[3 * i - 2] or 0)
    if tat > 0 then
      tat = tat + dt * 60000 / tpm
      if tat > now then
        redis.call('SET', KEYS[k + 1], tat, 'PX', math.ceil(tat - now) + 1000)
      else
        redis.call('DEL', KEYS[k + 1])
      end
    end
  end
  redis.call('ZREM', KEYS[k + 2], rid)
end
redis.set_repl(redis.REPL_ALL)
for i = 1, n do
  local a = 5 + (i - 1) * 4
  if ARGV[a + 2] == '1' and stored[3 * i - 1] then
    -- the figures as they came (exact integers), not Lua numbers (doubles)
    local charge = ARGV[5]
    if (stored[3 * i] or '0') == ARGV[a + 3] then charge = ARGV[a + 4] end
    if charge ~= '0' then redis.call('INCRBY', KEYS[(i - 1) * 4 + 3], charge) end
  end
end
return 1
