-- Check and count one request against every subject's limits, atomically (one round trip).
-- Rates are GCRA (one "theoretical arrival time" per limit, burst = one minute's worth);
-- concurrency is a sorted set of leases (request id -> expiry), so a crashed process's
-- requests free their slots when the lease ends; budgets are integer micro-credits per period.
-- KEYS: per subject 5 keys: rpm, tpm, concurrency, budget, the budget's seed (seed.lua).
-- ARGV: now_ms, lease id (the request id and a random part), lease_ms, n, tokens, credits, then per subject 4 values (the same
--   for a subject all day: encoded once by the caller):
--   rpm, tpm, max_concurrent (0 = none), budget (-1 = none)
-- Returns "verdict subject kind retry_ms limit_req remaining_req reset_req_ms
--          limit_tok remaining_tok reset_tok_ms seed_1 .. seed_n" (integers, space-separated;
--   seed_i: the seed the subject's budget key was set by, 0 for none: the settle counts the
--   reservation as in the key only if the key still has that seed)
--   verdict 0 = admitted, 1 = rate limited, 2 = over budget; kind 1 rpm 2 tpm 3 concurrency 4 budget
--   (over budget, retry_ms is what the budget has left, in micro-credits)
--   verdict 3 = a budget's period has no key (its first request, or a Redis that lost its
--   data): nothing counted; `subject` is the bit mask of those subjects (bit 0: the first),
--   which the caller seeds from the database's usage records before asking again
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local lease = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local tokens, credits = tonumber(ARGV[5]), tonumber(ARGV[6])
local WINDOW = 60000

local verdict, who, kind, retry = 0, 0, 0, 0
local plans = {}
-- headers: the tightest subject of each kind (fewest remaining)
local hl_r, hr_r, hx_r, hl_t, hr_t, hx_t = -1, -1, -1, -1, -1, -1

local function gcra(stored, limit, cost)
  local interval = WINDOW / limit
  local tat = tonumber(stored or now)
  if tat < now then tat = now end
  local new = tat + cost * interval
  return tat, new, interval
end

-- Every subject's two arrival times and budget spent in one read: its keys share one hash
-- slot (the workspace's tag), and each redis.call is a round of Redis's command dispatch.
local names = {}
for i = 1, n do
  local k = (i - 1) * 5
  names[#names + 1] = KEYS[k + 1]
  names[#names + 1] = KEYS[k + 2]
  names[#names + 1] = KEYS[k + 4]
  names[#names + 1] = KEYS[k + 5]
end
local stored = redis.call('MGET', unpack(names))

local unseeded = 0
for i = 1, n do
  if tonumber(ARGV[6 + (i - 1) * 4 + 4]) >= 0 and not stored[(i - 1) * 4 + 3] then
    unseeded = unseeded + 2 ^ (i - 1)
  end
end
if unseeded > 0 then
  return string.format('3 %d 0 0 -1 -1 0 -1 -1 0', unseeded)
end

for i = 1, n do
  local a = 6 + (i - 1) * 4
  local rpm, tpm, conc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local budget = tonumber(ARGV[a + 4])
  local k = (i - 1) * 5
  local s = (i - 1) * 4
  local plan = {conc = conc, budget = budget}
  if budget >= 0 then
    local spent = tonumber(stored[s + 3] or 0)
    if spent >= budget or spent + credits > budget then
      -- retry: what the budget has left (micro-credits), for the refusal to say
      if verdict ~= 2 then verdict, who, kind, retry = 2, i, 4, math.max(budget - spent, 0) end
    end
  end
  if rpm > 0 then
    local tat, new, interval = gcra(stored[s + 1], rpm, 1)
    plan.rpm = new
    local over = new - now - WINDOW
    local remaining = math.floor((WINDOW - (new - now)) / interval)
    local reset = new - now
    if over > 0 then  -- refused: not counted, so the headers read the state without it
      remaining = math.floor((WINDOW - (tat - now)) / interval)
      reset = tat - now
      -- never over a request that can never fit (retry -1): no wait helps it
      if verdict == 0 or (verdict == 1 and retry >= 0 and over > retry) then
        verdict, who, kind, retry = 1, i, 1, over
      end
    end
    if hr_r < 0 or remaining < hr_r then
      hl_r, hr_r, hx_r = rpm, math.max(remaining, 0), math.max(reset, 0)
    end
  end
  if tpm > 0 then
    local tat, new, interval = gcra(stored[s + 2], tpm, tokens)
    plan.tpm = new
    local over = new - now - WINDOW
    local remaining = math.floor((WINDOW - (new - now)) / interval)
    local reset = new - now
    if over > 0 then
      remaining = math.floor((WINDOW - (tat - now)) / interval)
      reset = tat - now
      if tokens > tpm then over = -1 end  -- can never fit: no retry helps
      if verdict == 0 or (verdict == 1 and retry >= 0 and (over > retry or over < 0)) then
        verdict, who, kind, retry = 1, i, 2, over
      end
    end
    if hr_t < 0 or remaining < hr_t then
      hl_t, hr_t, hx_t = tpm, math.max(remaining, 0), math.max(reset, 0)
    end
  end
  if conc > 0 then
    local held = redis.call('ZCARD', KEYS[k + 3])
    if held >= conc then
      -- leases whose request was never settled (a process that died) end here, where they
      -- would refuse one: not pruned on every request (one command less each)
      redis.set_repl(redis.REPL_NONE)
      redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', ARGV[1])
      redis.set_repl(redis.REPL_ALL)
      held = redis.call('ZCARD', KEYS[k + 3])
    end
    if held >= conc and verdict == 0 then
      verdict, who, kind, retry = 1, i, 3, 1000
    end
  end
  plans[i] = plan
end

if verdict == 0 then
  -- Rates and leases live a minute (or a lease): kept out of the append-only file and the
  -- replicas, which a restart would replay for nothing (it forgets the requests in flight
  -- too); budgets are written through. Each write propagated costs Redis its share of an AOF
  -- write per request.
  redis.set_repl(redis.REPL_NONE)
  for i = 1, n do
    local k = (i - 1) * 5
    local plan = plans[i]
    if plan.rpm then redis.call('SET', KEYS[k + 1], plan.rpm, 'PX', math.ceil(plan.rpm - now) + 1000) end
    if plan.tpm then redis.call('SET', KEYS[k + 2], plan.tpm, 'PX', math.ceil(plan.tpm - now) + 1000) end
    if plan.conc > 0 then
      redis.call('ZADD', KEYS[k + 3], now + lease, rid)
      -- an argument as it came, not a Lua number: Redis prints those with "%.17g" (~6,000
      -- instructions of glibc's float printing each)
      redis.call('PEXPIRE', KEYS[k + 3], ARGV[3])
    end
  end
  redis.set_repl(redis.REPL_ALL)
  for i = 1, n do
    local k = (i - 1) * 5
    local plan = plans[i]
    if plan.budget >= 0 then
      -- the key exists: its seed (the caller's SET) gave it its time to live
      redis.call('INCRBY', KEYS[k + 4], ARGV[6])
    end
  end
end
-- one string of integers: the caller parses one reply instead of eleven
local seeds = {}
for i = 1, n do seeds[i] = stored[(i - 1) * 4 + 4] or '0' end
return string.format('%d %d %d %d %d %d %d %d %d %d ', verdict, who, kind, math.ceil(retry),
  hl_r, hr_r, math.ceil(hx_r), hl_t, hr_t, math.ceil(hx_t)) .. table.concat(seeds, ' ')
