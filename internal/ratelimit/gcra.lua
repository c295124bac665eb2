-- Aegis rate limiter: the GCRA buckets and quota counters of one
-- principal, checked and recorded atomically: every check passes and is
-- recorded, or none is. Times are microseconds since the epoch (a double
-- holds them exactly for centuries); numeric strings are used as numbers
-- by arithmetic (x + 0), which is cheaper than tonumber.
--
-- KEYS[1..nb]     GCRA keys; value: theoretical arrival time (µs)
-- KEYS[nb+1..]    quota counters
-- ARGV[1]         now (µs); 0: the server's clock (TIME), shared by replicas
-- ARGV[2]         nb
-- then per bucket: interval (ns per unit), tolerance (ns), cost (units)
-- then per quota:  limit, expire-at (unix s), period end (µs)
--
-- Returns 0 when admitted, else wait × 8 + i: i the first failing check
-- (1-based, buckets first; at most 6), wait the µs until every failing
-- check would pass.
local now = ARGV[1] + 0
if now == 0 then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local nb = ARGV[2] + 0
local vals = redis.call('MGET', unpack(KEYS))
local failed, wait = 0, 0
local tats = {}
local a = 3
for i = 1, nb do
  local tat = vals[i]
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
for j = nb + 1, #KEYS do
  local n = vals[j]
  if n and n + 0 >= ARGV[a] + 0 then
    if failed == 0 then failed = j end
    local w = ARGV[a + 2] - now
    if w > wait then wait = w end
  end
  a = a + 3
end
if failed ~= 0 then
  return math.ceil(wait) * 8 + failed
end
for i = 1, nb do
  -- The key expires when its arrival time passes: a missing key is the
  -- same as one whose arrival time is in the past.
  redis.call('SET', KEYS[i], string.format('%.17g', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000) + 1)
end
a = 3 + 3 * nb
for j = nb + 1, #KEYS do
  if redis.call('INCR', KEYS[j]) == 1 then
    redis.call('EXPIREAT', KEYS[j], ARGV[a + 1])
  end
  a = a + 3
end
return 0
