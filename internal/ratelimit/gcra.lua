-- Aegis rate limiter: decisions, each on the GCRA buckets and quota
-- counters of one principal, each all or nothing: every check of a
-- decision passes and is recorded, or none is. One call carries the
-- decisions that arrived together (a batch), run in order, so a decision
-- sees what earlier ones in the call recorded.
--
-- Times are microseconds since the epoch (a double holds them exactly for
-- centuries); numeric strings are used as numbers by arithmetic (x + 0),
-- which is cheaper than tonumber; Redis writes Lua numbers exactly.
--
-- ARGV[1]  the number of decisions
-- then per decision:
--   now (µs; 0: the server's clock, TIME, shared by replicas), nb, nq,
--   per bucket: interval (ns per unit), tolerance (ns), cost (units)
--   per quota:  limit, expire-at (unix s), period end (µs)
-- KEYS: per decision, its nb GCRA keys (value: theoretical arrival time,
-- µs) then its nq quota counters.
--
-- Returns one integer per decision: 0 when admitted, else wait × 8 + i, i
-- the first failing check (1-based, buckets first; at most 6) and wait the
-- µs until every failing check would pass.
local clock
local vals = redis.call('MGET', unpack(KEYS))
local cur = {} -- values recorded by earlier decisions of this call
local res = {}
local a, k = 2, 0
for d = 1, ARGV[1] + 0 do
  local now = ARGV[a] + 0
  if now == 0 then
    if not clock then
      local t = redis.call('TIME')
      clock = t[1] * 1000000 + t[2]
    end
    now = clock
  end
  local nb, nq = ARGV[a + 1] + 0, ARGV[a + 2] + 0
  a = a + 3
  local failed, wait = 0, 0
  local tats = {}
  for i = 1, nb do
    local tat = cur[KEYS[k + i]] or vals[k + i]
    if tat then tat = tat + 0 else tat = now end
    if tat < now then tat = now end
    local new = tat + ARGV[a + 2] * ARGV[a] / 1000
    local w = new - ARGV[a + 1] / 1000 - now
    if w > 0 then
      if failed == 0 then failed = i end
      if w > wait then wait = w end
    end
    tats[i] = new
    a = a + 3
  end
  local qa = a
  for j = nb + 1, nb + nq do
    local n = cur[KEYS[k + j]] or vals[k + j]
    if n and n + 0 >= ARGV[a] + 0 then
      if failed == 0 then failed = j end
      local w = ARGV[a + 2] - now
      if w > wait then wait = w end
    end
    a = a + 3
  end
  if failed ~= 0 then
    res[d] = math.ceil(wait) * 8 + failed
  else
    for i = 1, nb do
      -- The key expires when its arrival time passes: a missing key is
      -- the same as one whose arrival time is in the past.
      redis.call('SET', KEYS[k + i], tats[i], 'PX', math.ceil((tats[i] - now) / 1000) + 1)
      cur[KEYS[k + i]] = tats[i]
    end
    for j = nb + 1, nb + nq do
      local n = redis.call('INCR', KEYS[k + j])
      if n == 1 then
        redis.call('EXPIREAT', KEYS[k + j], ARGV[qa + 1])
      end
      cur[KEYS[k + j]] = n
      qa = qa + 3
    end
    res[d] = 0
  end
  k = k + nb + nq
end
return res
