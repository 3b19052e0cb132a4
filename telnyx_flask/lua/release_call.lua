-- Give a claimed call back: answering -> ringing, when Telnyx refused the agent's commands (or
-- the claim went stale). Only the claim named is released; announced as call.released.
-- KEYS: call hash, ringing zset, claimed zset, event stream.
-- ARGV: agent id holding the claim, call.released event data (JSON), stream maxlen.
-- Returns 1 if released, 0 if the call had moved on (answered, ended, or claimed by another).
local by = redis.call('HMGET', KEYS[1], 'status', 'claimed_by_id', 'call_control_id',
                      'ringing_score')
if by[1] ~= 'answering' or by[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'ringing')
redis.call('HDEL', KEYS[1], 'claimed_by_id', 'claimed_by_name', 'claim_action', 'claimed_at')
redis.call('ZREM', KEYS[3], by[3])
redis.call('ZADD', KEYS[2], by[4] or '0', by[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'event', 'call.released', 'data', ARGV[2])
return 1
