-- One agent takes a ringing call: ringing -> answering, atomically, announced as call.claimed.
-- KEYS: call hash, ringing zset, claimed zset, event stream.
-- ARGV: agent id, agent name, action (answer | decline | timeout), claimed_at (ms),
--       call.claimed event data (JSON), stream maxlen, call_control_id.
-- Returns {'claimed', ringing_score} | {'missing'} |
--         {'taken', status, claimed_by_id, claimed_by_name, action}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  -- An orphan (its hash expired or was lost): drop it, or it would be swept forever.
  redis.call('ZREM', KEYS[2], ARGV[7])
  redis.call('ZREM', KEYS[3], ARGV[7])
  return {'missing'}
end
if status ~= 'ringing' then
  local by = redis.call('HMGET', KEYS[1], 'claimed_by_id', 'claimed_by_name', 'claim_action')
  return {'taken', status, by[1] or '', by[2] or '', by[3] or ''}
end
redis.call('HSET', KEYS[1], 'status', 'answering', 'claimed_by_id', ARGV[1],
           'claimed_by_name', ARGV[2], 'claim_action', ARGV[3], 'claimed_at', ARGV[4])
local call_control_id = redis.call('HGET', KEYS[1], 'call_control_id')
redis.call('ZREM', KEYS[2], call_control_id)
redis.call('ZADD', KEYS[3], ARGV[4], call_control_id)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'event', 'call.claimed', 'data', ARGV[5])
return {'claimed', redis.call('HGET', KEYS[1], 'ringing_score') or ''}
