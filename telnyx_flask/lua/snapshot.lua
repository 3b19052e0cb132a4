-- The calls a page should show (ringing and in progress) and the stream's newest id, read in
-- one step so that a page resuming from that id misses nothing and sees nothing twice.
-- KEYS: active zset, event stream. ARGV: call hash key prefix.
-- Returns {newest stream id, {flat HGETALL, ...}}; prunes members whose call expired or ended.
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local newest_id = '0-0'
if newest[1] then
  newest_id = newest[1][1]
end
local calls = {}
for _, call_control_id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. call_control_id
  local status = redis.call('HGET', key, 'status')
  if status and status ~= 'ended' then
    calls[#calls + 1] = redis.call('HGETALL', key)
  else
    redis.call('ZREM', KEYS[1], call_control_id)
  end
end
return {newest_id, calls}
