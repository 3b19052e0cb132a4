-- Is the live state in this Redis the one built from PostgreSQL, and on which Redis are we?
-- KEYS: the generation marker.
-- Returns {1 or 0, this Redis's replication id}. The marker is "<generation> <replication id
-- of the Redis it was built on>" (live_rebuild.py writes it with finish_rebuild.lua). A
-- failover promotes a replica under a new replication id, and whatever the old primary had not
-- passed on is lost: a marker from another replication id means rebuild, as a missing one does.
local ok, info = pcall(redis.call, 'INFO', 'replication')
-- A stand-in without INFO (fakeredis, in development) has no failovers to detect.
local replid = ok and string.match(info, 'master_replid:(%w+)') or ''
local marker = redis.call('GET', KEYS[1])
if marker and string.match(marker, ' (%w*)$') == replid then
  return {1, replid}
end
return {0, replid}
