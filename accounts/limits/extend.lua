-- Reserve more credits for a request admitted already: the next model call of an agent's
-- tool run, which calls the model up to ENGRAM_TOOLS_MAX_STEPS times on one admission. Only
-- budgets: the request was counted against its rates and holds its lease. Refused (nothing
-- counted) when a budget cannot take it. A budget whose key is gone (a Redis that lost its
-- data since the admission) is reported, nothing counted, for the caller to seed it as the
-- reserve's caller does (seed.lua) and ask again; asked again, one still gone is not counted,
-- as the settle does not count it.
-- KEYS: per subject its budget key and its seed's key (seed.lua). ARGV: n, credits (micro),
--   then per subject its budget (micro-credits; -1 = none), then 1 to report keys gone (0:
--   count on the others).
-- Returns "0 seed_1 .. seed_n" (counted on every budget that has a key; seed_i the seed of
--   the subject's key, -1 for none: the caller sees which keys were seeded again since its
--   reservation), "-1 mask" (keys gone: the bit mask of their subjects, bit 0 the first), or
--   the first subject (1-based) whose budget refused it.
local n = tonumber(ARGV[1])
local credits = tonumber(ARGV[2])
local stored = redis.call('MGET', unpack(KEYS))
if ARGV[3 + n] == '1' then
  local gone, bit = 0, 1
  for i = 1, n do
    if tonumber(ARGV[2 + i]) >= 0 and not stored[2 * i - 1] then
      gone = gone + bit
    end
    bit = bit * 2
  end
  if gone > 0 then
    return '-1 ' .. string.format('%d', gone)
  end
end
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
