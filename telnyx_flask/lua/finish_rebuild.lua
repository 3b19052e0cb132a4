-- The live state was rebuilt from PostgreSQL: mark the new generation, tell every page to take
-- a fresh snapshot, and release the rebuild lock, in one step.
-- KEYS: generation marker, event stream, rebuild lock.
-- ARGV: new generation, reset event data (JSON), stream maxlen, lock token.
redis.call('SET', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', 'reset', 'data', ARGV[2])
if redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('DEL', KEYS[3])
end
return 1
