-- An agent offers the call they are on to a colleague: the offer is kept on the call's hash and
-- in the set the expiry sweep reads, and announced as call.transfer_offered. One offer at a time.
-- KEYS: call hash, transfer offers zset, event stream.
-- ARGV[1]: one JSON object: call_control_id, offer_id, from_agent {id, name},
--          to_agent {id, name}, expires_ms, expires_at (ISO 8601), stream_maxlen.
-- Returns {'offered'} | {'missing'} | {'ended'} | {'not_answered', status} |
--         {'not_yours', claimed_by_id, claimed_by_name} | {'offer_open', to_id, to_name}.
local offer = cjson.decode(ARGV[1])
local call = redis.call('HMGET', KEYS[1], 'status', 'claimed_by_id', 'claimed_by_name',
                        'claim_action', 'transfer_to_id', 'transfer_to_name')
local status = call[1]
if not status then
  return {'missing'}
end
if status == 'ended' then
  return {'ended'}
end
-- A claim rebuilt from PostgreSQL names its agent but no action.
if call[2] ~= offer.from_agent.id or (call[4] and call[4] ~= 'answer') then
  if status == 'ringing' then
    return {'not_answered', status}
  end
  return {'not_yours', call[2] or '', call[3] or ''}
end
if status ~= 'answered' then
  return {'not_answered', status}
end
if call[5] then
  return {'offer_open', call[5], call[6] or ''}
end
redis.call('HSET', KEYS[1], 'transfer_offer_id', offer.offer_id,
           'transfer_from_id', offer.from_agent.id, 'transfer_from_name', offer.from_agent.name,
           'transfer_to_id', offer.to_agent.id, 'transfer_to_name', offer.to_agent.name,
           'transfer_expires_ms', offer.expires_ms, 'transfer_expires_at', offer.expires_at)
redis.call('ZADD', KEYS[2], offer.expires_ms, offer.call_control_id)
local fields = redis.call('HMGET', KEYS[1], 'from', 'to', 'caller_name', 'prospect_id',
                          'answered_at')
local event = {
  call_control_id = offer.call_control_id,
  status = status,
  from = fields[1] or cjson.null,
  to = fields[2] or cjson.null,
  caller_name = fields[3] or cjson.null,
  prospect_id = fields[4] or cjson.null,
  answered_at = fields[5] or cjson.null,
  from_agent = offer.from_agent,
  to_agent = offer.to_agent,
  expires_at = offer.expires_at,
}
redis.call('XADD', KEYS[3], 'MAXLEN', '~', offer.stream_maxlen, '*', 'event',
           'call.transfer_offered', 'data', cjson.encode(event))
return {'offered'}
