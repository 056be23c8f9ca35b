-- daily counts one recipient against a portfolio's daily cap on unique
-- recipients, for a sender whose portfolio is not its own number: the
-- portfolio's count lives in the portfolio's hash slot, apart from the
-- sender's rate, so it is taken first and given back (undaily) when the
-- rate then holds the send back or the upstream refuses it.
--
-- KEYS[1]  the portfolio's daily recipients: sorted set, score = last send
-- ARGV[1]  now, or 0 for Redis's clock
-- ARGV[2]  daily limit
-- ARGV[3]  the recipient
-- ARGV[4]  the daily window (24h)
--
-- Returns {admitted (0 or 1), wait, added}: when not admitted, the wait
-- until the oldest recipient drops out; added is 1 when the recipient was
-- not counted before.
local now = clock(ARGV[1])
local limit, member, window = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now - window))
local known = redis.call('ZSCORE', KEYS[1], member)
if not known and redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now, 0}
end
redis.call('ZADD', KEYS[1], num(now), member)
redis.call('PEXPIRE', KEYS[1], num(window / 1000 + 1))
if known then return {1, 0, 0} end
return {1, 0, 1}
