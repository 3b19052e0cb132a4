-- The agent working on a call still holds it: renew the claim's lease, or take it back when
-- live state was rebuilt without it. Checked before each Telnyx command (a fencing check).
-- KEYS: call hash, ringing zset, claimed zset, event stream.
-- ARGV: agent id, agent name, action, now (ms), call.claimed event data (JSON), stream maxlen,
--       call_control_id.
-- Returns {'held', status} | {'missing'} | {'ended'} |
--         {'taken', status, claimed_by_id, claimed_by_name, action}.
local call = redis.call('HMGET', KEYS[1], 'status', 'claimed_by_id', 'claimed_by_name',
                        'claim_action')
local status, holder = call[1], call[2]
if not status then
  return {'missing'}
end
if status == 'ended' then
  return {'ended'}
end
if holder and holder ~= ARGV[1] then
  return {'taken', status, holder, call[3] or '', call[4] or ''}
end
if not holder then
  -- Rebuilt from PostgreSQL (which keeps no claims) while this agent was mid-answer.
  redis.call('HSET', KEYS[1], 'claimed_by_id', ARGV[1], 'claimed_by_name', ARGV[2],
             'claim_action', ARGV[3], 'claimed_at', ARGV[4])
  if status == 'ringing' then
    redis.call('HSET', KEYS[1], 'status', 'answering')
    status = 'answering'
    redis.call('ZREM', KEYS[2], ARGV[7])
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'event', 'call.claimed',
               'data', ARGV[5])
  end
end
if status == 'answering' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[7])
end
return {'held', status}
