-- The calls a page should show (ringing and in progress) and the stream's newest id, read in
-- one step so that a page resuming from that id misses nothing and sees nothing twice.
-- KEYS: active zset, event stream, then the call hash of each member, in the set's order.
-- ARGV: the members (call_control_ids) the caller read, in the same order.
-- Returns {'calls', newest stream id, {flat HGETALL, ...}}, pruning members whose call expired
-- or ended; or {'retry', members now} when the set changed since the caller read it: a call
-- missing from KEYS would be missing from the snapshot, and the id would skip past it.
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
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local newest_id = '0-0'
if newest[1] then
  newest_id = newest[1][1]
end
local calls = {}
for i, call_control_id in ipairs(members) do
  local key = KEYS[i + 2]
  local status = redis.call('HGET', key, 'status')
  if status and status ~= 'ended' then
    calls[#calls + 1] = redis.call('HGETALL', key)
  else
    redis.call('ZREM', KEYS[1], call_control_id)
  end
end
return {'calls', newest_id, calls}
