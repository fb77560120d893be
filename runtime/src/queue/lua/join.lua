-- ARGV: now user new_sid
local now, user, new_sid = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local cfg = load_config()
if not cfg then return { 'not_configured' } end

local existing = redis.call('HGET', K_USERS, user)
if existing then
  local s = load_session(existing)
  if s.state == 'w' then redis.call('ZADD', K_SEEN, 'XX', 'GT', now, s.sid) end
  local reply = session_reply(s)
  reply[#reply + 1] = 0
  return reply
end
if cfg.mode == 'Reject' then return { 'rejected' } end
if cfg.closes_at > 0 and now >= cfg.closes_at then return { 'room_closed' } end

local ticket = redis.call('HINCRBY', K_META, 'seq', 1)
local s = { sid = new_sid, user = user, ticket = ticket, state = 'w' }
redis.call('HSET', K_USERS, user, new_sid)
if cfg.mode == 'Passthrough' then
  admit(s, cfg, now)
else
  save_session(s)
  redis.call('ZADD', K_WAITING, ticket, new_sid)
  redis.call('ZADD', K_SEEN, now, new_sid)
  emit('j', 't', int(ticket))
end
local reply = session_reply(s)
reply[#reply + 1] = 1
return reply
