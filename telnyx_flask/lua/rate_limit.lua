-- A fixed-window counter of one agent's costly requests of one kind.
-- KEYS: the counter. ARGV: window (s), requests allowed per window.
-- -> {1, 0} allowed | {0, seconds until the window ends}
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  -- A counter left without a lifetime (it cannot happen here, but it must never stick).
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
if count > tonumber(ARGV[2]) then
  return {0, ttl}
end
return {1, 0}
