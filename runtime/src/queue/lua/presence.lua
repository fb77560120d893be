-- ARGV: now. Presence may have gone unrecorded until `now` (a store
-- outage): tick.lua drops nobody as absent within the presence grace after
-- it. The instant never moves back.
if tonumber(redis.call('HGET', K_META, 'presence_from') or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', K_META, 'presence_from', ARGV[1])
end
return { 'ok' }
