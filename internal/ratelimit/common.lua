-- Helpers shared by the sender scripts; Go prepends this file to each.
--
-- Times are unix microseconds. Every worker takes "now" from Redis's own
-- clock, so that workers on machines whose clocks disagree still share one
-- schedule; tests pass a fixed now instead.

local function clock(given)
  local n = tonumber(given)
  if n > 0 then return n end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- num formats a number as an integer string: Lua would print a large one
-- in exponent form and lose its last digits.
local function num(n)
  return string.format('%.0f', n)
end

-- factor is the share of the configured rate the sender may use now: 1
-- normally, lowered by upstream throttling at t0 to f0, and climbing back
-- by half of the full rate per recovery period.
local function factor(f0, t0, now, recovery)
  if not f0 then return 1 end
  local f = tonumber(f0) + (now - tonumber(t0)) * 0.5 / recovery
  if f > 1 then return 1 end
  return f
end

-- reservePair takes the next free slot on a recipient's schedule (key: its
-- theoretical arrival time) and returns the wait until it (0: now). See
-- pair.lua. A recipient without a schedule, as most are (none of its sends
-- within the last interval), takes its slot now in one command; the key
-- then lives as long as the general case below would set it.
local function reservePair(key, now, interval, burst)
  local held = redis.call('SET', key, num(now + interval), 'PX', num(interval / 1000 + 1000), 'NX', 'GET')
  if not held then return 0 end
  local tat = tonumber(held)
  if tat < now then tat = now end
  local slot = math.max(now, tat - (burst - 1) * interval)
  tat = math.max(tat, slot) + interval
  redis.call('SET', key, num(tat), 'PX', num((tat - now) / 1000 + 1000))
  return slot - now
end
