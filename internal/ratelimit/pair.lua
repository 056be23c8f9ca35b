-- pair reserves one send to a recipient its own slot on the recipient's
-- schedule (the pair limit): PairBurst back to back after a quiet spell,
-- then one per PairInterval. Like the sender's rate (reserve.lua), it is a
-- GCRA schedule that reserves instead of only testing: each call takes the
-- next free slot, however far, so that K messages to one recipient go K
-- slots apart in the order they asked, each told exactly when, and none
-- wakes only to be told to wait again.
--
-- KEYS[1]  the recipient's schedule: its theoretical arrival time
-- ARGV[1]  now, or 0 for Redis's clock
-- ARGV[2]  the interval
-- ARGV[3]  the burst
--
-- Returns the wait until the reserved slot (0: now).
local now = clock(ARGV[1])
local interval, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local slot = math.max(now, tat - (burst - 1) * interval)
tat = math.max(tat, slot) + interval
redis.call('SET', KEYS[1], num(tat), 'PX', num((tat - now) / 1000 + 1000))
return num(slot - now)
