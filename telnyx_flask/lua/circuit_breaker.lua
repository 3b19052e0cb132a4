-- The circuit breaker around the Telnyx API, shared by every worker on every host.
-- KEYS: the breaker's hash (state, failures, open_until, probe_until).
-- ARGV: op (check | allow | success | failure), now (ms), failure threshold, cool-down (ms),
--       probe timeout (ms), key TTL (s).
-- check   -> {'closed'} | {'open', retry_at_ms}: like allow, but takes no probe (a look before
--            claiming a call; the request itself then asks allow)
-- allow   -> {'closed'} | {'probe'} (this caller tries Telnyx once) | {'open', retry_at_ms}
-- success -> {'closed', transition ('closed' when it closed just now, else '')}
-- failure -> {state, transition ('opened' when it opened just now, else '')}
local op, now = ARGV[1], tonumber(ARGV[2])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'

local function open()
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + tonumber(ARGV[4]),
             'failures', 0)
  redis.call('HDEL', KEYS[1], 'probe_until')
  redis.call('EXPIRE', KEYS[1], ARGV[6])
end

if op == 'check' then
  local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
  local probing_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
  if state == 'open' and now < open_until then
    return {'open', tostring(open_until)}
  end
  if state == 'half_open' and now < probing_until then
    return {'open', tostring(probing_until)}
  end
  return {'closed'}
end

if op == 'allow' then
  if state == 'closed' then
    return {'closed'}
  end
  local until_ms = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
  if state == 'open' and now < until_ms then
    return {'open', tostring(until_ms)}
  end
  -- Cooled down: one caller at a time probes; the others still fail fast until it reports.
  local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
  if state == 'half_open' and now < probe_until then
    return {'open', tostring(probe_until)}
  end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[5]))
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  return {'probe'}
end

if op == 'success' then
  if state ~= 'closed' then
    redis.call('DEL', KEYS[1])
    return {'closed', 'closed'}
  end
  if redis.call('HEXISTS', KEYS[1], 'failures') == 1 then
    redis.call('DEL', KEYS[1])
  end
  return {'closed', ''}
end

-- failure
if state == 'half_open' then
  open()
  return {'open', 'opened'}
end
if state == 'open' then
  return {'open', ''}  -- a request that began before the breaker opened
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('EXPIRE', KEYS[1], ARGV[6])
if failures >= tonumber(ARGV[3]) then
  open()
  return {'open', 'opened'}
end
return {'closed', ''}
