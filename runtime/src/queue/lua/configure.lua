-- ARGV: capacity rate session_ms mode opens_at closes_at paused abandon_ms
-- (rate, opens_at and closes_at are 0 when unset)
redis.call('DEL', K_CFG)
redis.call('HSET', K_CFG, 'capacity', ARGV[1], 'rate', ARGV[2], 'session_ms', ARGV[3],
  'mode', ARGV[4], 'opens_at', ARGV[5], 'closes_at', ARGV[6], 'paused', ARGV[7],
  'abandon_ms', ARGV[8])
emit('c')
return { 'ok' }
