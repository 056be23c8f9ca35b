-- unthrottle is an operator's resume of a throttled sender: the Retry-After
-- no longer holds it, its rate is full again, and the schedule a throttle
-- pushed into the future starts now.
--
-- KEYS[1]  the sender's state hash: tat, f0, t0, blocked, code, reason
-- ARGV[1]  now, or 0 for Redis's clock
--
-- Returns 1 when a Retry-After still held the sender.
local now = clock(ARGV[1])
local held = tonumber(redis.call('HGET', KEYS[1], 'blocked') or '0') > now
redis.call('HDEL', KEYS[1], 'blocked', 'f0', 't0', 'code', 'reason')
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0')
if tat > now then redis.call('HSET', KEYS[1], 'tat', num(now)) end
-- The feeder's mark (pace.lua) was pushed past the throttle too.
local ftat = tonumber(redis.call('HGET', KEYS[1], 'ftat') or '0')
if ftat > now then redis.call('HSET', KEYS[1], 'ftat', num(now)) end
if held then return 1 end
return 0
