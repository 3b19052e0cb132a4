-- The agent working on a call still holds it: renew the claim's lease, or take it back when
-- live state was rebuilt without it. Checked before each Telnyx command (a fencing check).
-- KEYS: call hash, ringing zset, claimed zset, event stream.
-- ARGV[1]: one JSON object: call_control_id, agent {id, name}, action, now_ms, stream_maxlen.
-- Returns {'held', status} | {'missing'} | {'ended'} |
--         {'taken', status, claimed_by_id, claimed_by_name, action}.
local claim = cjson.decode(ARGV[1])
local call = redis.call('HMGET', KEYS[1], 'status', 'claimed_by_id', 'claimed_by_name',
                        'claim_action')
local status, holder = call[1], call[2]
if not status then
  return {'missing'}
end
if status == 'ended' then
  return {'ended'}
end
if holder and holder ~= claim.agent.id then
  return {'taken', status, holder, call[3] or '', call[4] or ''}
end
if not holder then
  -- Rebuilt from PostgreSQL (which keeps no claims) while this agent was mid-answer.
  redis.call('HSET', KEYS[1], 'claimed_by_id', claim.agent.id, 'claimed_by_name',
             claim.agent.name, 'claim_action', claim.action, 'claimed_at', claim.now_ms)
  if status == 'ringing' then
    redis.call('HSET', KEYS[1], 'status', 'answering')
    status = 'answering'
    redis.call('ZREM', KEYS[2], claim.call_control_id)
    local event = {call_control_id = claim.call_control_id, agent = claim.agent,
                   action = claim.action}
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', claim.stream_maxlen, '*', 'event',
               'call.claimed', 'data', cjson.encode(event))
  end
end
if status == 'answering' then
  redis.call('ZADD', KEYS[3], claim.now_ms, claim.call_control_id)
end
return {'held', status}
