-- Agents' presence: work out each agent's effective presence and announce it when it changes.
-- Any number of workers may run this at once; each change is stored and announced once.
-- KEYS: active calls zset, presence hash (agent id -> JSON record), available set, event stream,
--       then one stream-slot zset per agent of request.agents (in that order), then the call
--       hash of each active call, in the order of ARGV[2..].
-- ARGV[1]: one JSON object:
--   op: observe (the agents listed, with their row from PostgreSQL, and their open pages)
--     | restore (as observe, quietly, without looking at pages: Redis lost them, and the
--       pages still open take their slots back within a lease)
--     | settle (calls changed hands or ended: agents on a call, or holding one, again)
--   now_ms, away_after_ms (observe only), stream_maxlen, ttl_seconds,
--   agents: [{id, name, chosen, chosen_at}] (chosen_at: microseconds, a string),
--   add: true to add listed agents not known yet (a page of theirs opened, they chose, or a
--     restore); otherwise only known agents are worked out,
--   forget_others: true to drop agents not listed (the listing is every active agent).
-- ARGV[2..]: the active calls' ids the caller read, in the zset's order.
-- Returns {'retry', members now} when the active set changed since the caller read it, else
-- {'done', {agent id, presence, ...}} with every agent announced: whose presence changed, who
-- was added, or whose choice changed.
--
-- A record: {name, chosen, chosen_at, presence, away_at (ms, a string: set when observe first
-- finds no page open, to then + away_after_ms; unset while a page is open)}. Effective
-- presence: on_call while the agent holds a call (a claim other than a decline, answering or
-- answered); else away if chosen away or past away_at; else available.
local request = cjson.decode(ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local same = #members == #ARGV - 1
for i = 1, #members do
  if not same then
    break
  end
  same = members[i] == ARGV[i + 1]
end
if not same then
  return {'retry', members}
end

local now = tonumber(request.now_ms)
local agents = request.agents or {}
local first_call_key = 4 + #agents

local holding = {}
for i = 1, #members do
  local call = redis.call('HMGET', KEYS[first_call_key + i], 'status', 'claimed_by_id',
                          'claim_action')
  if (call[1] == 'answering' or call[1] == 'answered') and call[2] and call[3] ~= 'decline' then
    holding[call[2]] = true
  end
end

local function effective(id, record)
  if holding[id] then
    return 'on_call'
  end
  if record.chosen == 'away' then
    return 'away'
  end
  if record.away_at and now > tonumber(record.away_at) then
    return 'away'
  end
  return 'available'
end

local changes = {}
-- `chose` is true when the agent's choice just changed (their other pages show it, even while
-- On a call hides it).
local function settle(id, record, dirty, chose)
  local old = record.presence
  local presence = effective(id, record)
  if presence ~= old then
    record.presence = presence
    dirty = true
  end
  if dirty then
    redis.call('HSET', KEYS[2], id, cjson.encode(record))
  end
  if presence == 'available' then
    redis.call('SADD', KEYS[3], id)
  else
    redis.call('SREM', KEYS[3], id)
  end
  if presence ~= old or chose then
    changes[#changes + 1] = id
    changes[#changes + 1] = presence
    -- An agent's first presence is a change too (other pages add them to their list), but a
    -- restore is quiet: pages take a fresh snapshot after it.
    if request.op ~= 'restore' then
      local event = {agent = {id = id, name = record.name}, presence = presence,
                     chosen = record.chosen}
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', request.stream_maxlen, '*', 'event',
                 'agent.presence', 'data', cjson.encode(event))
    end
  end
end

if request.op == 'settle' then
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    local id = all[i]
    local record = cjson.decode(all[i + 1])
    if record.presence == 'on_call' or holding[id] then
      settle(id, record, false, false)
    end
  end
else
  local listed = {}
  for i, agent in ipairs(agents) do
    listed[agent.id] = true
    local raw = redis.call('HGET', KEYS[2], agent.id)
    if raw or request.add then
      local record = raw and cjson.decode(raw) or {}
      local dirty = not raw
      if record.name ~= agent.name then
        record.name = agent.name
        dirty = true
      end
      -- PostgreSQL's newest choice wins, whichever worker read it first.
      local chose = false
      if tonumber(agent.chosen_at) >= tonumber(record.chosen_at or '-1')
          and (record.chosen ~= agent.chosen or record.chosen_at ~= agent.chosen_at) then
        chose = record.chosen ~= agent.chosen
        record.chosen = agent.chosen
        record.chosen_at = agent.chosen_at
        dirty = true
      end
      local page_open = request.op == 'restore'
          or redis.call('ZCOUNT', KEYS[4 + i], '(' .. now, '+inf') > 0
      if page_open then
        if record.away_at then
          record.away_at = nil
          dirty = true
        end
      elseif not record.away_at then
        record.away_at = tostring(now + tonumber(request.away_after_ms))
        dirty = true
      end
      settle(agent.id, record, dirty, chose)
    end
  end
  if request.forget_others then
    for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
      if not listed[id] then
        redis.call('HDEL', KEYS[2], id)
        redis.call('SREM', KEYS[3], id)
      end
    end
  end
end
-- Bounded by the agents, and gone with a retired prefix.
redis.call('EXPIRE', KEYS[2], request.ttl_seconds)
redis.call('EXPIRE', KEYS[3], request.ttl_seconds)
return {'done', changes}
