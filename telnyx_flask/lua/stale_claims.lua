-- Claims taken before a time that are still open (the worker holding them stopped renewing),
-- and pruning of claimed-set members whose call moved on, in one step: a call claimed afresh
-- between the caller's read and this script has a newer score and is left alone.
-- KEYS: claimed zset, then the call hash of each member given.
-- ARGV: before (ms), then the members (call_control_ids) the caller read, in KEYS' order.
-- Returns {call_control_id, claimed_by_id, ...} of the claims still open.
local before = tonumber(ARGV[1])
local stale = {}
for i = 2, #ARGV do
  local call_control_id = ARGV[i]
  local score = tonumber(redis.call('ZSCORE', KEYS[1], call_control_id))
  if score and score <= before then
    local call = redis.call('HMGET', KEYS[i], 'status', 'claimed_by_id')
    if call[1] == 'answering' and call[2] and call[2] ~= '' then
      stale[#stale + 1] = call_control_id
      stale[#stale + 1] = call[2]
    else
      redis.call('ZREM', KEYS[1], call_control_id)
    end
  end
end
return stale
