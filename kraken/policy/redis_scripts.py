"""The Lua scripts behind ``RedisLimiter``: one per operation, each atomic on the server.

Rules every script keeps:

* check and count happen in the same script, so workers and hosts cannot race between them;
* a key is never left without an expiry: whatever creates or increments a key sets its
  PEXPIRE in the same script, and a script that finds a counter without one (written by
  something else) repairs it - a limit can never turn into a permanent ban;
* time comes from the Redis server (``TIME``), never from the callers, so hosts with skewed
  clocks still share one window. Needs Redis >= 5 (scripts replicated by effects).

Replies are arrays of integers (Lua numbers are truncated to integers by Redis).
"""

ACQUIRE = """
-- KEYS[1] request count (string, PEXPIRE window)
-- KEYS[2] tokens charged (string, PEXPIRE window)
-- KEYS[3] concurrency slots (sorted set: slot id -> expiry in ms; PEXPIRE lease)
-- ARGV: rpm, tpm, max_concurrent, tokens (estimate), window_ms, lease_ms, slot id
-- Reply: {0, remaining requests, window ms left}  admitted (remaining -1 when rpm is 0)
--        {1, ms left, count}                        refused: requests
--        {2, ms left, tokens used}                  refused: tokens
--        {3, 0, slots in use}                       refused: concurrency
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local maxc = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local lease = tonumber(ARGV[6])

local function ms_left(key)
  local t = redis.call('PTTL', key)
  if t < 0 then
    redis.call('PEXPIRE', key, window)
    t = window
  end
  return t
end

if rpm > 0 then
  local count = tonumber(redis.call('GET', KEYS[1]) or '0')
  if count >= rpm then
    return {1, ms_left(KEYS[1]), count}
  end
end
if tpm > 0 then
  local used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= tpm or used + math.min(tokens, tpm) > tpm then
    return {2, ms_left(KEYS[2]), used}
  end
end
if maxc > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  local n = redis.call('ZCARD', KEYS[3])
  if n >= maxc then
    if redis.call('PTTL', KEYS[3]) == -1 then
      redis.call('PEXPIRE', KEYS[3], lease)
    end
    return {3, 0, n}
  end
  redis.call('ZADD', KEYS[3], now + lease, ARGV[7])
  -- the newest slot expires last; never shorten the key below a slot that outlives it
  if redis.call('PTTL', KEYS[3]) < lease then
    redis.call('PEXPIRE', KEYS[3], lease)
  end
end
if rpm > 0 then
  local count = redis.call('INCR', KEYS[1])
  return {0, rpm - count, ms_left(KEYS[1])}
end
return {0, -1, 0}
"""

RELEASE = """
-- KEYS[1] concurrency slots, KEYS[2] tokens charged
-- ARGV: slot id ('' = none), tokens used (0 = none), window_ms
if ARGV[1] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
local tokens = tonumber(ARGV[2])
if tokens > 0 then
  redis.call('INCRBY', KEYS[2], tokens)
  if redis.call('PTTL', KEYS[2]) < 0 then
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
end
return 1
"""

AUTH_FAILURE = """
-- KEYS[1] failed authentications from one client address (keyed by its HMAC, never the address)
-- ARGV: window_ms (<= 3600000: the privacy policy's one hour)
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
"""

CHECK_IP = """
-- KEYS[1] failed authentications from one client address
-- ARGV: limit, window_ms
-- Reply: {0, failures} allowed, {1, ms left} refused
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n < tonumber(ARGV[1]) then
  return {0, n}
end
local t = redis.call('PTTL', KEYS[1])
if t < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  t = tonumber(ARGV[2])
end
return {1, t}
"""

AUTH_ATTEMPT = """
-- KEYS[1] failed authentications from one client address (as in AUTH_FAILURE)
-- KEYS[2] its authentication attempts in flight (sorted set: attempt id -> expiry in ms;
--         PEXPIRE attempt_ms). An attempt a crashed worker never gave back expires.
-- ARGV: limit, window_ms, attempt id, attempt_ms
-- Reply: {0, failures + attempts}   admitted, the attempt is held
--        {1, ms to wait}            refused
local limit = tonumber(ARGV[1])
local hold = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local failures = tonumber(redis.call('GET', KEYS[1]) or '0')
local held = redis.call('ZCARD', KEYS[2])
if failures + held >= limit then
  if redis.call('PTTL', KEYS[2]) == -1 then
    redis.call('PEXPIRE', KEYS[2], hold)
  end
  if failures < limit then
    return {1, 1000}  -- attempts in flight end within seconds
  end
  local ms = redis.call('PTTL', KEYS[1])
  if ms < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    ms = tonumber(ARGV[2])
  end
  return {1, ms}
end
redis.call('ZADD', KEYS[2], now + hold, ARGV[3])
if redis.call('PTTL', KEYS[2]) < hold then
  redis.call('PEXPIRE', KEYS[2], hold)
end
return {0, failures + held + 1}
"""

AUTH_DONE = """
-- KEYS[1] failed authentications, KEYS[2] attempts in flight (as in AUTH_ATTEMPT)
-- ARGV: attempt id ('' = none held), failed (1 = count a failure), window_ms
if ARGV[1] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if ARGV[2] == '1' then
  redis.call('INCR', KEYS[1])
  if redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
end
return 1
"""
