-- One agent takes a ringing call: ringing -> answering, atomically, announced as call.claimed.
-- KEYS: call hash, ringing zset, claimed zset, event stream.
-- ARGV[1]: one JSON object: call_control_id, agent {id, name},
--          action (answer | decline | timeout), now_ms (claimed at), stream_maxlen.
-- Returns {'claimed', ringing_score} | {'missing'} |
--         {'taken', status, claimed_by_id, claimed_by_name, action}.
local claim = cjson.decode(ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  -- An orphan (its hash expired or was lost): drop it, or it would be swept forever.
  redis.call('ZREM', KEYS[2], claim.call_control_id)
  redis.call('ZREM', KEYS[3], claim.call_control_id)
  return {'missing'}
end
if status ~= 'ringing' then
  local by = redis.call('HMGET', KEYS[1], 'claimed_by_id', 'claimed_by_name', 'claim_action')
  return {'taken', status, by[1] or '', by[2] or '', by[3] or ''}
end
redis.call('HSET', KEYS[1], 'status', 'answering', 'claimed_by_id', claim.agent.id,
           'claimed_by_name', claim.agent.name, 'claim_action', claim.action,
           'claimed_at', claim.now_ms)
local call_control_id = redis.call('HGET', KEYS[1], 'call_control_id')
redis.call('ZREM', KEYS[2], call_control_id)
redis.call('ZADD', KEYS[3], claim.now_ms, call_control_id)
local event = {call_control_id = claim.call_control_id, agent = claim.agent, action = claim.action}
redis.call('XADD', KEYS[4], 'MAXLEN', '~', claim.stream_maxlen, '*', 'event', 'call.claimed',
           'data', cjson.encode(event))
return {'claimed', redis.call('HGET', KEYS[1], 'ringing_score') or ''}
