-- Telnyx refused to put an accepted transfer through: the call goes back to the agent who
-- offered it (the caller never left them), announced as call.transfer_ended, result failed.
-- KEYS: call hash, event stream.
-- ARGV[1]: one JSON object: call_control_id, from_agent {id, name}, to_agent {id, name},
--          reason, now_ms, stream_maxlen.
-- Returns 1 if given back, 0 if the call had moved on (ended, or no longer the colleague's).
local back = cjson.decode(ARGV[1])
local call = redis.call('HMGET', KEYS[1], 'status', 'claimed_by_id')
if not call[1] or call[1] == 'ended' or call[2] ~= back.to_agent.id then
  return 0
end
redis.call('HSET', KEYS[1], 'claimed_by_id', back.from_agent.id, 'claimed_by_name',
           back.from_agent.name, 'claim_action', 'answer', 'claimed_at', back.now_ms)
redis.call('HDEL', KEYS[1], 'transfer_accepted')
local event = {call_control_id = back.call_control_id, result = 'failed', reason = back.reason,
               from_agent = back.from_agent, to_agent = back.to_agent}
redis.call('XADD', KEYS[2], 'MAXLEN', '~', back.stream_maxlen, '*', 'event',
           'call.transfer_ended', 'data', cjson.encode(event))
return 1
