-- backoff keeps a recipient's sends back after the upstream refused one as
-- too frequent for that recipient (131056): 1, 4, 16, then 64 s for each
-- further refusal, until the recipient has been quiet for a while.
--
-- KEYS[1]  the recipient's back-off hash: n, until
-- KEYS[2]  the sender's state hash, whose 'bu' keeps the latest back-off
--          of any of its recipients (reserve.lua reads KEYS[1] only
--          before it)
-- ARGV[1]  now, or 0 for Redis's clock
-- ARGV[2]  the first back-off
-- ARGV[3]  the number of steps (the last one repeats)
-- ARGV[4]  how long the count outlives the back-off
--
-- Returns the back-off.
local now = clock(ARGV[1])
local first, steps, keep = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
if n < steps then n = n + 1 end
local wait = first * 4 ^ (n - 1)
redis.call('HSET', KEYS[1], 'n', n, 'until', num(now + wait))
redis.call('PEXPIRE', KEYS[1], num((wait + keep) / 1000))
if tonumber(redis.call('HGET', KEYS[2], 'bu') or '0') < now + wait then
  redis.call('HSET', KEYS[2], 'bu', num(now + wait))
  if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIRE', KEYS[2], num((wait + keep) / 1000)) end
end
return wait
