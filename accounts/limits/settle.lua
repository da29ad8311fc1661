-- Settle one admitted request: give back (or take) the difference between the tokens and
-- credits reserved and those used, and free its concurrency lease. One round trip.
-- KEYS: per subject 3 keys: tpm, concurrency, budget.
-- ARGV: now_ms, request_id, n, token delta, credit delta (micro-credits), then per subject 2
--   values: tpm (0 = none), has a budget (1 / 0). A credit delta is applied only where the
--   subject has a budget and its period's key still exists.
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local n = tonumber(ARGV[3])
local tokens_delta, credits_delta = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 1, n do
  local a = 5 + (i - 1) * 2
  local tpm, dt = tonumber(ARGV[a + 1]), tokens_delta
  local dc = 0
  if ARGV[a + 2] == '1' then dc = credits_delta end
  local k = (i - 1) * 3
  if tpm > 0 and dt ~= 0 then
    local tat = tonumber(redis.call('GET', KEYS[k + 1]) or 0)
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
  if dc ~= 0 and redis.call('EXISTS', KEYS[k + 3]) == 1 then
    redis.call('INCRBY', KEYS[k + 3], dc)
  end
end
return 1
