-- ARGV: capacity rate session_ms mode opens_at closes_at paused abandon_ms
-- claim_ms max_session_ms message revision write_mode pow_bits (rate,
-- opens_at, closes_at, claim_ms, max_session_ms and pow_bits are 0 when
-- unset; message is empty when there is none).
-- write_mode `start`: a process starting for the room writes its rules,
-- unless rules of a higher revision are in place. `restore`: rules lost
-- with Redis's data are written back, but never those of a purged room.
-- Returns { 'ok', 1 } when written, { 'ok', 0 } when not.
local revision = tonumber(ARGV[12])
if ARGV[13] == 'restore' then
  if redis.call('EXISTS', K_PURGED) == 1 then return { 'not_configured' } end
  if redis.call('EXISTS', K_CFG) == 1 then return { 'ok', 0 } end
else
  redis.call('DEL', K_PURGED)
end
if tonumber(redis.call('HGET', K_CFG, 'revision') or '0') > revision then
  return { 'ok', 0 }
end
redis.call('DEL', K_CFG)
redis.call('HSET', K_CFG, 'capacity', ARGV[1], 'rate', ARGV[2], 'session_ms', ARGV[3],
  'mode', ARGV[4], 'opens_at', ARGV[5], 'closes_at', ARGV[6], 'paused', ARGV[7],
  'abandon_ms', ARGV[8], 'claim_ms', ARGV[9], 'max_session_ms', ARGV[10], 'message', ARGV[11], 'revision', ARGV[12],
  'pow_bits', ARGV[14])
emit('c')
return { 'ok', 1 }
