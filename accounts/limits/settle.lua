-- Settle one admitted request: give back (or take) the difference between the tokens and
-- credits reserved and those used, and free its concurrency lease. Posted: nothing reads its reply.
-- KEYS: per subject 3 keys: tpm, concurrency, budget.
-- ARGV: now_ms, request_id, n, token delta, credit delta (micro-credits), then per subject 2
--   values: tpm (0 = none), has a budget (1 / 0). A credit delta is applied only where the
--   subject has a budget and its period's key still exists.
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local n = tonumber(ARGV[3])
local tokens_delta, credits_delta = tonumber(ARGV[4]), tonumber(ARGV[5])
-- every subject's tpm arrival time and budget spent in one read (one hash slot)
local names = {}
for i = 1, n do
  local k = (i - 1) * 3
  names[#names + 1] = KEYS[k + 1]
  names[#names + 1] = KEYS[k + 3]
end
local stored = redis.call('MGET', unpack(names))
-- rates and leases kept out of the append-only file and replicas, as in the reserve
redis.set_repl(redis.REPL_NONE)
for i = 1, n do
  local a = 5 + (i - 1) * 2
  local tpm, dt = tonumber(ARGV[a + 1]), tokens_delta
  local k = (i - 1) * 3
  if tpm > 0 and dt ~= 0 then
    local tat = tonumber(stored[2 * i - 1] or 0)
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
if credits_delta ~= 0 then
  for i = 1, n do
    -- only where the subject has a budget and its period's key still exists
    if ARGV[5 + (i - 1) * 2 + 2] == '1' and stored[2 * i] then
      redis.call('INCRBY', KEYS[(i - 1) * 3 + 3], ARGV[5])
    end
  end
end
return 1
