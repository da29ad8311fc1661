-- Settle one admitted request: give back (or take) the difference between the tokens and
-- credits reserved and those used, and free its concurrency lease. One round trip.
-- KEYS: per subject 3 keys: tpm, concurrency, budget.
-- ARGV: now_ms, request_id, n, then per subject 3 values: tpm (0 = none), token delta,
--   credit delta (micro-credits; applied only when the period's key still exists).
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local n = tonumber(ARGV[3])
for i = 1, n do
  local a = 3 + (i - 1) * 3
  local tpm, dt, dc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
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
