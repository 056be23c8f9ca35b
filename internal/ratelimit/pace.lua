-- pace counts how many bulk messages a sender's feeder may move into
-- asynq's queue now: the slots of its own schedule (ftat, at the sender's
-- rate, lowered by a throttle) that lie within ahead. It reserves nothing
-- on the schedule the handlers use (tat): each handler still reserves its
-- message's slot there, up to the horizon ahead, so the limits hold
-- whatever the feeder moves. The feeder follows tat only when tat runs
-- further ahead than the handlers accept (transactional messages took
-- slots meanwhile): a handler taking up a message late pushes tat a little,
-- and following that would lose the slot for good.
--
-- KEYS[1]  the sender's state hash: tat, f0, t0, blocked, ftat
-- ARGV[1]  now, or 0 for Redis's clock
-- ARGV[2]  slot interval at the full rate (0: no sender limit)
-- ARGV[3]  burst
-- ARGV[4]  recovery period of a throttled rate
-- ARGV[5]  ahead: how far ahead of its slot a message is handed over
-- ARGV[6]  the most to count
-- ARGV[7]  how long the sender's state outlives its last use
-- ARGV[8]  slack: how far tat may run ahead of ftat before ftat follows
--
-- Returns {count, wait until the Retry-After has passed}.
local now = clock(ARGV[1])
local interval, burst, recovery = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local horizon, most, keep = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local slack = tonumber(ARGV[8])

local state = redis.call('HMGET', KEYS[1], 'tat', 'f0', 't0', 'blocked', 'ftat')
local blocked = tonumber(state[4] or '0')
if blocked - now > horizon then return {0, blocked - now} end
if interval <= 0 then return {most, math.max(0, blocked - now)} end

-- A feeder's tick that came late hands over the slots it missed, up to
-- ahead of them: the handlers' schedule still spaces them.
local earliest = math.max(now - horizon, blocked)
local t = interval / factor(state[2], state[3], now, recovery)
local tat = math.max(tonumber(state[1] or '0') - slack, tonumber(state[5] or '0'))
local n = 0
while n < most do
  local slot = math.max(earliest, tat - (burst - 1) * interval)
  if slot - now > horizon then break end
  tat = math.max(tat, slot) + t
  n = n + 1
end
if n > 0 then
  redis.call('HSET', KEYS[1], 'ftat', num(tat))
  redis.call('PEXPIRE', KEYS[1], num((math.max(tat, blocked) - now + keep) / 1000))
end
return {n, math.max(0, blocked - now)}
