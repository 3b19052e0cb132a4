-- Merge a call's state from PostgreSQL into its live hash, and announce what changed.
-- KEYS: call hash, ringing zset, event stream, claimed zset, active zset.
-- ARGV[1]: one JSON object:
--   version, status, call_control_id,
--   arrived_ms (the ring-timeout clock starts here),
--   fields (object of strings to store),
--   summary (data of call.ringing and call.answered), ended (of call.ended),
--   recording (of call.recording),
--   stream_maxlen, active_ttl, ended_ttl (seconds),
--   quiet (true: restoring from PostgreSQL, announce nothing).
-- Idempotent and order-free: a state no newer than the one held changes nothing, and each event
-- is announced on the one transition that causes it.
local state = cjson.decode(ARGV[1])
local call_control_id = state.call_control_id
local version = tonumber(state.version)
local held = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if version <= held then
  return {}
end

local rank = {ringing = 1, answering = 2, answered = 3, ended = 4}
local old_status = redis.call('HGET', KEYS[1], 'status')
local old_rank = rank[old_status] or 0
local status = state.status
if (rank[status] or 0) <= old_rank then
  status = old_status
end
local had_recording = redis.call('HEXISTS', KEYS[1], 'has_recording') == 1

local fields = state.fields
local flat = {'version', tostring(version), 'status', status}
for name, value in pairs(fields) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', KEYS[1], unpack(flat))

local announced = {}
local function announce(name, data)
  if state.quiet then
    return
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', state.stream_maxlen, '*', 'event', name,
             'data', cjson.encode(data))
  announced[#announced + 1] = name
end

local arrived = tostring(state.arrived_ms)
if status == 'ringing' then
  if old_rank == 0 then
    redis.call('HSET', KEYS[1], 'ringing_score', arrived)
    redis.call('ZADD', KEYS[2], arrived, call_control_id)
    announce('call.ringing', state.summary)
  end
else
  redis.call('ZREM', KEYS[2], call_control_id)
end
if status ~= 'answering' then
  redis.call('ZREM', KEYS[4], call_control_id)
end
if status == 'ended' then
  redis.call('ZREM', KEYS[5], call_control_id)
else
  redis.call('ZADD', KEYS[5], 'NX', arrived, call_control_id)
end
if status == 'answered' and old_rank < 3 then
  announce('call.answered', state.summary)
end
if status == 'ended' and old_rank < 4 then
  announce('call.ended', state.ended)
end
if fields['has_recording'] and not had_recording then
  announce('call.recording', state.recording)
end

if status == 'ended' then
  redis.call('EXPIRE', KEYS[1], state.ended_ttl)
else
  redis.call('EXPIRE', KEYS[1], state.active_ttl)
end
return announced
