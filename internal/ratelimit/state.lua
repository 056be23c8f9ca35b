-- state reads what a worker caches of its sender: the share of the rate it
-- may use now and how long the upstream's Retry-After still holds.
--
-- KEYS[1]  the sender's state hash
-- ARGV[1]  now, or 0 for Redis's clock
-- ARGV[2]  recovery period
--
-- Returns {factor in millionths, wait until the Retry-After has passed,
-- the code and the reason of the last throttle}.
local now = clock(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'f0', 't0', 'blocked', 'code', 'reason')
local f = factor(state[1], state[2], now, tonumber(ARGV[2]))
return {math.floor(f * 1000000), math.max(0, tonumber(state[3] or '0') - now), state[4] or '', state[5] or ''}
