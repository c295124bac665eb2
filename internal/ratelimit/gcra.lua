-- Aegis rate limiter: GCRA buckets and quota counters of one principal,
-- checked and recorded atomically: every check passes and is recorded, or
-- none is. Times are microseconds since the epoch (doubles are exact to
-- 2^53, about 285 years of microseconds).
--
-- KEYS[1..nb]     GCRA keys; value: theoretical arrival time (µs)
-- KEYS[nb+1..]    quota counters
-- ARGV[1]         now (µs); 0: the server's clock (TIME), shared by replicas
-- ARGV[2]         nb
-- then per bucket: interval (µs per unit), tolerance (µs), cost (units)
-- then per quota:  limit, expire-at (unix s), period end (µs)
--
-- Returns {1, 0, 0} when admitted, else {0, i, wait}: i the first failing
-- check (1-based, buckets first), wait the µs until every failing check
-- would pass.
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local nb = tonumber(ARGV[2])
local failed, wait = 0, 0
local tats = {}
local a = 3
for i = 1, nb do
  local interval, tol, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new = tat + cost * interval
  local w = new - tol - now
  if w > 0 then
    if failed == 0 then failed = i end
    if w > wait then wait = w end
  end
  tats[i] = new
end
for j = nb + 1, #KEYS do
  local limit, reset = tonumber(ARGV[a]), tonumber(ARGV[a + 2])
  a = a + 3
  local n = tonumber(redis.call('GET', KEYS[j])) or 0
  if n >= limit then
    if failed == 0 then failed = j end
    if reset - now > wait then wait = reset - now end
  end
end
if failed ~= 0 then
  return {0, failed, math.ceil(wait)}
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
return {1, 0, 0}
