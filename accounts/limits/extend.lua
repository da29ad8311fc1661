-- Reserve more credits for a request admitted already: the next model call of an agent's
-- tool run, which calls the model up to ENGRAM_TOOLS_MAX_STEPS times on one admission. Only
-- budgets: the request was counted against its rates and holds its lease. Refused (nothing
-- counted) when a budget cannot take it; a budget whose key is gone is not counted, as the
-- settle does not count it.
-- KEYS: per subject its budget key. ARGV: n, credits (micro), then per subject its budget
--   (micro-credits; -1 = none).
-- Returns 0 (counted on every budget), or the first subject (1-based) whose budget refused it.
local n = tonumber(ARGV[1])
local credits = tonumber(ARGV[2])
local stored = redis.call('MGET', unpack(KEYS))
for i = 1, n do
  local budget = tonumber(ARGV[2 + i])
  if budget >= 0 and stored[i] then
    local spent = tonumber(stored[i])
    if spent >= budget or spent + credits > budget then
      return i
    end
  end
end
for i = 1, n do
  if tonumber(ARGV[2 + i]) >= 0 and stored[i] then
    redis.call('INCRBY', KEYS[i], ARGV[2])
  end
end
return 0
