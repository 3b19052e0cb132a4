-- Merge calls' states from PostgreSQL into their live hashes, and announce what changed. One call
-- applies a whole group commit (the webhooks a worker applied together), in the order given.
-- KEYS: ringing zset, event stream, claimed zset, active zset, then one call hash per state.
-- ARGV[1]: a JSON array of states, each one object:
--   version, status, call_control_id,
--   arrived_ms (the ring-timeout clock starts here),
--   fields (object of strings to store),
--   summary (data of call.ringing and call.answered), ended (of call.ended),
--   recording (of call.recording),
--   quiet (true: restoring from PostgreSQL, announce nothing).
-- ARGV[2]: one JSON object: stream_maxlen, active_ttl, ended_ttl (seconds).
-- Returns, per state, {'ok', the events it announced} or {'error', why}: one state that fails
-- fails only itself.
-- Idempotent and order-free: a state no newer than the one held (by version) changes nothing,
-- and each event is announced on the one transition that causes it.
local states = cjson.decode(ARGV[1])
local limits = cjson.decode(ARGV[2])
local rank = {ringing = 1, answering = 2, answered = 3, ended = 4}

local function apply(call_key, state)
  local call_control_id = state.call_control_id
  local version = tonumber(state.version)
  local held = tonumber(redis.call('HGET', call_key, 'version') or '0')
  if version <= held then
    return {}
  end

  local old_status = redis.call('HGET', call_key, 'status')
  local old_rank = rank[old_status] or 0
  local status = state.status
  if (rank[status] or 0) <= old_rank then
    status = old_status
  end
  local had_recording = redis.call('HEXISTS', call_key, 'has_recording') == 1

  local fields = state.fields
  local flat = {'version', tostring(version), 'status', status}
  for name, value in pairs(fields) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  redis.call('HSET', call_key, unpack(flat))

  local announced = {}
  local function announce(name, data)
    if state.quiet then
      return
    end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', limits.stream_maxlen, '*', 'event', name,
               'data', cjson.encode(data))
    announced[#announced + 1] = name
  end

  local arrived = tostring(state.arrived_ms)
  if status == 'ringing' then
    if old_rank == 0 then
      redis.call('HSET', call_key, 'ringing_score', arrived)
      redis.call('ZADD', KEYS[1], arrived, call_control_id)
      announce('call.ringing', state.summary)
    end
  else
    redis.call('ZREM', KEYS[1], call_control_id)
  end
  if status ~= 'answering' then
    redis.call('ZREM', KEYS[3], call_control_id)
  end
  if status == 'ended' then
    redis.call('ZREM', KEYS[4], call_control_id)
  else
    redis.call('ZADD', KEYS[4], 'NX', arrived, call_control_id)
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
    redis.call('EXPIRE', call_key, limits.ended_ttl)
  else
    redis.call('EXPIRE', call_key, limits.active_ttl)
  end
  return announced
end

local replies = {}
for i, state in ipairs(states) do
  local ok, result = pcall(apply, KEYS[4 + i], state)
  if ok then
    replies[i] = {'ok', result}
  else
    replies[i] = {'error', type(result) == 'table' and result.err or tostring(result)}
  end
end
return replies
