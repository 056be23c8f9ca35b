-- throttle lowers a sender's rate after the upstream refused a send as too
-- many (429, 130429, 4001) and keeps every worker from sending before its
-- Retry-After.
--
-- The rate halves, down to a floor, and climbs back over the recovery
-- period. Refusals of sends that were already on the wire arrive together,
-- so a second refusal within holdoff of the first does not halve it again.
-- The schedule restarts after the Retry-After without its burst: the
-- upstream has just said that it has no room.
--
-- KEYS[1]  the sender's state hash: tat, f0, t0, blocked
-- ARGV[1]  now, or 0 for Redis's clock
-- ARGV[2]  slot interval at the full rate (0: no sender limit)
-- ARGV[3]  burst
-- ARGV[4]  recovery period
-- ARGV[5]  Retry-After (0: none)
-- ARGV[6]  lowest factor
-- ARGV[7]  holdoff
-- ARGV[8]  how long the state outlives its last use
-- ARGV[9]  the upstream's error code, ARGV[10] its words: why, for /readyz
--
-- Returns {factor in millionths, wait until the Retry-After has passed,
-- code, reason}.
local now = clock(ARGV[1])
local interval, burst, recovery = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local retryAfter, floor, holdoff, keep = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])

local state = redis.call('HMGET', KEYS[1], 'tat', 'f0', 't0', 'blocked')
local f = factor(state[2], state[3], now, recovery)
if not state[3] or now - tonumber(state[3]) >= holdoff then
  f = math.max(floor, f / 2)
  redis.call('HSET', KEYS[1], 'f0', tostring(f), 't0', num(now))
end

local blocked = math.max(tonumber(state[4] or '0'), now + retryAfter)
redis.call('HSET', KEYS[1], 'blocked', num(blocked), 'code', ARGV[9], 'reason', ARGV[10])
if interval > 0 then
  -- The burst's tolerance at the full rate, as reserve counts it.
  local tat = math.max(tonumber(state[1] or '0'), blocked + (burst - 1) * interval)
  redis.call('HSET', KEYS[1], 'tat', num(tat))
end
redis.call('PEXPIRE', KEYS[1], num((blocked - now + keep) / 1000))
return {math.floor(f * 1000000), blocked - now, ARGV[9], ARGV[10]}
