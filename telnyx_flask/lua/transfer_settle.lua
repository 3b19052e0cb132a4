-- The one step that closes a transfer offer: of the colleague accepting or declining, the
-- offering agent cancelling, and the expiry sweep, exactly one wins. Accepting moves the claim
-- to the colleague. The call ending first leaves nothing to win. Announced as
-- call.transfer_ended with the result.
-- KEYS: call hash, transfer offers zset, event stream.
-- ARGV[1]: one JSON object: call_control_id, result (accepted | declined | cancelled | expired),
--          by (the agent acting; '' for the sweep), now_ms, stream_maxlen.
-- Returns {'settled', offer JSON} | {'missing'} | {'ended'} | {'none'} |
--         {'again', offer JSON} (the colleague accepting once more: it is theirs already) |
--         {'not_yours', to_id, to_name} (accept or decline by someone else) |
--         {'not_offering', from_id, from_name} (cancel by someone else) | {'not_due'}.
local settle = cjson.decode(ARGV[1])
local call = redis.call('HMGET', KEYS[1], 'status', 'transfer_offer_id', 'transfer_from_id',
                        'transfer_from_name', 'transfer_to_id', 'transfer_to_name',
                        'transfer_expires_ms', 'transfer_accepted')
local status = call[1]
local function close_offer()
  redis.call('ZREM', KEYS[2], settle.call_control_id)
  redis.call('HDEL', KEYS[1], 'transfer_offer_id', 'transfer_from_id', 'transfer_from_name',
             'transfer_to_id', 'transfer_to_name', 'transfer_expires_ms', 'transfer_expires_at')
end
if not status then
  redis.call('ZREM', KEYS[2], settle.call_control_id)  -- an orphan: its hash expired
  return {'missing'}
end
if status == 'ended' then
  close_offer()
  return {'ended'}
end
if not call[5] then
  redis.call('ZREM', KEYS[2], settle.call_control_id)
  if settle.result == 'accepted' and call[8] then
    local accepted = cjson.decode(call[8])
    if accepted.to_agent.id == settle.by then
      return {'again', call[8]}
    end
  end
  return {'none'}
end
local offer = {
  offer_id = call[2],
  from_agent = {id = call[3], name = call[4] or ''},
  to_agent = {id = call[5], name = call[6] or ''},
}
if (settle.result == 'accepted' or settle.result == 'declined') and settle.by ~= call[5] then
  return {'not_yours', call[5], call[6] or ''}
end
if settle.result == 'cancelled' and settle.by ~= call[3] then
  return {'not_offering', call[3], call[4] or ''}
end
if settle.result == 'expired' and tonumber(call[7] or '0') > tonumber(settle.now_ms) then
  return {'not_due'}
end
close_offer()
local encoded = cjson.encode(offer)
if settle.result == 'accepted' then
  redis.call('HSET', KEYS[1], 'claimed_by_id', offer.to_agent.id, 'claimed_by_name',
             offer.to_agent.name, 'claim_action', 'answer', 'claimed_at', settle.now_ms,
             'transfer_accepted', encoded)
end
local event = {call_control_id = settle.call_control_id, result = settle.result,
               from_agent = offer.from_agent, to_agent = offer.to_agent}
redis.call('XADD', KEYS[3], 'MAXLEN', '~', settle.stream_maxlen, '*', 'event',
           'call.transfer_ended', 'data', cjson.encode(event))
return {'settled', encoded}
