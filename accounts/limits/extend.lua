-- Reserve more credits for a request admitted already: the next model call of an agent's
-- tool run, which calls the model up to ENGRAM_TOOLS_MAX_STEPS times on one admission. Only
-- budgets: the request was counted against its rates and holds its lease. Refused (nothing
-- counted) when a budget cannot take it; a budget whose key is gone is not counted, as the
-- settle does not count it.
-- KEYS: per subject its budget key and its seed's key (seed.lua). ARGV: n, credits (micro),
--   then per subject its budget (micro-credits; -1 = none).
-- Returns "0 seed_1 .. seed_n" (counted on every budget that has a key; seed_i the seed of
--   the subject's key, -1 for none: the caller sees which keys were seeded again since its
--   reservation), or the first subject (1-based) whose budget refused it.
local n = tonumber(ARGV[1])
local credits = tonumber(ARGV[2])
local stored = redis.call('MGET', unpack(KEYS))
for i = 1, n do
  local budget = tonumber(ARGV[2 + i])
  if budget >= 0 and stored[2 * i - 1] then
    local spent = tonumber(stored[2 * i - 1])
    if spent >= budget or spent + credits > budget then
      return tostring(i)
    end
  end
end
local seeds = {'0'}
for i = 1, n do
  seeds[i + 1] = '-1'
  if tonumber(ARGV[2 + i]) >= 0 and stored[2 * i - 1] then
    redis.call('INCRBY', KEYS[2 * i - 1], ARGV[2])
    seeds[i + 1] = stored[2 * i] or '0'
  end
end
return table.concat(seeds, ' ')
