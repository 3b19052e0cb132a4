-- Merge a call's state from PostgreSQL into its live hash, and announce what changed.
-- KEYS: call hash, ringing zset, event stream, claimed zset, active zset.
-- ARGV: version, status, now (ms: the ring-timeout clock starts here), fields (JSON object of strings), call_control_id,
--       ringing / answered / ended / recording event data (JSON), stream maxlen,
--       active TTL, ended TTL, quiet ('1': restoring from PostgreSQL, announce nothing).
-- Idempotent and order-free: a state no newer than the one held changes nothing, and each event
-- is announced on the one transition that causes it.
local version = tonumber(ARGV[1])
local held = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if version <= held then
  return {}
end

local rank = {ringing = 1, answering = 2, answered = 3, ended = 4}
local old_status = redis.call('HGET', KEYS[1], 'status')
local old_rank = rank[old_status] or 0
local status = ARGV[2]
if (rank[status] or 0) <= old_rank then
  status = old_status
end
local had_recording = redis.call('HEXISTS', KEYS[1], 'has_recording') == 1

local fields = cjson.decode(ARGV[4])
local flat = {'version', ARGV[1], 'status', status}
for name, value in pairs(fields) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', KEYS[1], unpack(flat))

local announced = {}
local function announce(name, data)
  if ARGV[13] == '1' then
    return
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[10], '*', 'event', name, 'data', data)
  announced[#announced + 1] = name
end

if status == 'ringing' then
  if old_rank == 0 then
    redis.call('HSET', KEYS[1], 'ringing_score', ARGV[3])
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
    announce('call.ringing', ARGV[6])
  end
else
  redis.call('ZREM', KEYS[2], ARGV[5])
end
if status ~= 'answering' then
  redis.call('ZREM', KEYS[4], ARGV[5])
end
if status == 'ended' then
  redis.call('ZREM', KEYS[5], ARGV[5])
else
  redis.call('ZADD', KEYS[5], 'NX', ARGV[3], ARGV[5])
end
if status == 'answered' and old_rank < 3 then
  announce('call.answered', ARGV[7])
end
if status == 'ended' and old_rank < 4 then
  announce('call.ended', ARGV[8])
end
if fields['has_recording'] and not had_recording then
  announce('call.recording', ARGV[9])
end

if status == 'ended' then
  redis.call('EXPIRE', KEYS[1], ARGV[12])
else
  redis.call('EXPIRE', KEYS[1], ARGV[11])
end
return announced
