-- reserve admits one send of a sender to a recipient, or says what holds it
-- back, in one atomic step: the recipient's back-off after a pair-rate
-- refusal, the sender's Retry-After, the daily cap on unique recipients, and
-- the sender's rate. Only when every one of them lets the send go are the
-- sender's slot and the recipient's daily entry written, so a message that
-- waits takes nothing from the others.
--
-- The sender's rate is a GCRA schedule ("theoretical arrival time", tat)
-- that reserves slots instead of only testing them: each call takes the
-- next free slot, possibly in the future, and the caller sleeps until it.
-- Messages leave in the order they asked, at exactly the configured rate.
--
-- KEYS[1]  the sender's state hash: tat, f0, t0 (throttling), blocked,
--          bu (the latest back-off of any of its recipients: backoff.lua),
--          xp (when the hash expires, as this script last set it)
-- KEYS[2]  the sender's daily recipients: sorted set, score = last send
-- KEYS[3]  the recipient's back-off hash: n, until
-- KEYS[4]  (optional) the recipient's pair schedule (pair.lua): its slot
--          is reserved first, in the same step
-- ARGV[1]  now, or 0 for Redis's clock
-- ARGV[2]  slot interval at the full rate (0: no sender limit)
-- ARGV[3]  burst
-- ARGV[4]  recovery period of a throttled rate
-- ARGV[5]  max wait: a slot further away than this is not reserved
-- ARGV[6]  max hold: a back-off or Retry-After longer than this is
--          reported instead of reserved through
-- ARGV[7]  daily limit (0: off)
-- ARGV[8]  the recipient as counted by the daily limit ("": not counted)
-- ARGV[9]  the daily window (24h)
-- ARGV[10] how long the sender's state outlives its last use
-- ARGV[11] with KEYS[4]: the pair interval, and ARGV[12] the pair burst
--
-- Returns {reserved (0 or 1), wait, reason, counted}: the wait until the
-- reserved slot, or until the limit named by reason may let the send go;
-- counted is 1 when the reservation added the recipient to the daily count.
-- A pair slot that lies ahead is reserved alone: {0, wait, 'pair'}; the
-- caller waits for it, then asks again without KEYS[4].
local now = clock(ARGV[1])
if KEYS[4] then
  local wait = reservePair(KEYS[4], now, tonumber(ARGV[11]), tonumber(ARGV[12]))
  if wait > 0 then return {0, wait, 'pair'} end
end
local interval, burst, recovery = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local maxWait, maxHold = tonumber(ARGV[5]), tonumber(ARGV[6])
local limit, member, window = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local keep = tonumber(ARGV[10])

local earliest = now
local state = redis.call('HMGET', KEYS[1], 'tat', 'f0', 't0', 'blocked', 'bu', 'xp')
-- A recipient's back-off is read only while one of the sender's may last.
if tonumber(state[5] or '0') > now then
  local backoff = tonumber(redis.call('HGET', KEYS[3], 'until') or '0')
  if backoff - now > maxHold then return {0, backoff - now, 'recipient'} end
  if backoff > earliest then earliest = backoff end
end

local blocked = tonumber(state[4] or '0')
if blocked - now > maxHold then return {0, blocked - now, 'blocked'} end
if blocked > earliest then earliest = blocked end

local counted = limit > 0 and member ~= ''
local added = 0
if counted then
  -- A recipient drops out once its last send is a whole window old.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', num(now - window))
  local known = redis.call('ZSCORE', KEYS[2], member)
  if not known then added = 1 end
  if not known and redis.call('ZCARD', KEYS[2]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {0, tonumber(oldest[2]) + window - now, 'daily'}
  end
end

local slot = earliest
if interval > 0 then
  local t = interval / factor(state[2], state[3], now, recovery)
  local tat = tonumber(state[1] or '0')
  -- The burst's tolerance is counted at the full rate: counted in slots of
  -- a throttled rate, it would shrink as the rate climbs back and push the
  -- schedule a throttle set into the future.
  slot = math.max(earliest, tat - (burst - 1) * interval)
  if slot - now > maxWait then return {0, slot - now, 'rate'} end
  -- The state's life is set again only once it has run a quarter down:
  -- the other scripts never set it shorter than keep from their now.
  local expires = math.max(tat, slot, blocked) + keep
  if expires - tonumber(state[6] or '0') > keep / 4 then
    redis.call('HSET', KEYS[1], 'tat', num(math.max(tat, slot) + t), 'xp', num(expires))
    redis.call('PEXPIRE', KEYS[1], num((expires - now) / 1000))
  else
    redis.call('HSET', KEYS[1], 'tat', num(math.max(tat, slot) + t))
  end
end

if counted then
  redis.call('ZADD', KEYS[2], num(slot), member)
  redis.call('PEXPIRE', KEYS[2], num((slot - now + window) / 1000 + 1))
end
return {1, slot - now, '', added}
