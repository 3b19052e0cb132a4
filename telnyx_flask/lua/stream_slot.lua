-- One agent's open event streams, counted across every worker and host.
-- KEYS: the agent's sorted set of stream ids, scored by when each slot lapses (ms).
-- ARGV: op (take | renew), stream id, now (ms), lease (ms), most streams allowed.
-- take  -> {1} (the slot is this stream's) | {0, ms until the soonest slot lapses}
-- renew -> {1}: an open stream keeps its slot, even if it lapsed meanwhile (a Redis flush).
local op, stream, now, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
-- Slots of streams whose worker died without giving them back.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if op == 'take' and not redis.call('ZSCORE', KEYS[1], stream)
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then
  local soonest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(soonest[2]) - now}
end
redis.call('ZADD', KEYS[1], now + lease, stream)
-- Every slot lapses within one lease of the latest write, so the set can go with it.
redis.call('PEXPIRE', KEYS[1], lease)
return {1}
