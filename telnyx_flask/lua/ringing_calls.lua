-- The ringing calls, oldest first, as flat HGETALL replies; prunes members whose call has
-- expired or stopped ringing, so the set cannot hold stale entries.
-- KEYS: ringing zset, then the call hash of each member, in the set's order.
-- ARGV: the members (call_control_ids) the caller read, in the same order.
-- Returns {'calls', {flat HGETALL, ...}}, or {'retry', members now} when the set changed since
-- the caller read it (a script may touch only the keys it was given).
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local same = #members == #ARGV
for i = 1, #members do
  if not same then
    break
  end
  same = members[i] == ARGV[i]
end
if not same then
  return {'retry', members}
end
local calls = {}
for i, call_control_id in ipairs(members) do
  local key = KEYS[i + 1]
  if redis.call('HGET', key, 'status') == 'ringing' then
    calls[#calls + 1] = redis.call('HGETALL', key)
  else
    redis.call('ZREM', KEYS[1], call_control_id)
  end
end
return {'calls', calls}
