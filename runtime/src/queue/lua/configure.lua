-- ARGV: write_mode revision, then the rules as field/value pairs (the
-- fields `load_config` reads; numbers are 0 when unset, the message is
-- empty when there is none).
-- write_mode `start`: a process starting for the room writes its rules,
-- unless rules of a higher revision are in place. `restore`: rules lost
-- with Redis's data are written back, but never those of a purged room.
-- Returns { 'ok', 1 } when written, { 'ok', 0 } when not.
local write_mode, revision = ARGV[1], tonumber(ARGV[2])
if write_mode == 'restore' then
  if redis.call('EXISTS', K_PURGED) == 1 then return { 'not_configured' } end
  if redis.call('EXISTS', K_CFG) == 1 then return { 'ok', 0 } end
else
  redis.call('DEL', K_PURGED)
end
if tonumber(redis.call('HGET', K_CFG, 'revision') or '0') > revision then
  return { 'ok', 0 }
end
redis.call('DEL', K_CFG)
redis.call('HSET', K_CFG, 'revision', ARGV[2], unpack(ARGV, 3))
emit('c')
return { 'ok', 1 }
