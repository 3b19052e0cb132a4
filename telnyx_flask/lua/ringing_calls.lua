-- The ringing calls, oldest first, as flat HGETALL replies; prunes members whose call has
-- expired or stopped ringing, so the set cannot hold stale entries.
-- KEYS: ringing zset. ARGV: call hash key prefix.
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local calls = {}
for _, call_control_id in ipairs(members) do
  local key = ARGV[1] .. call_control_id
  if redis.call('HGET', key, 'status') == 'ringing' then
    calls[#calls + 1] = redis.call('HGETALL', key)
  else
    redis.call('ZREM', KEYS[1], call_control_id)
  end
end
return calls
