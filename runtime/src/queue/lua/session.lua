-- ARGV: touch_now (0: read only) sid
local now, sid = tonumber(ARGV[1]), ARGV[2]
local s = load_session(sid)
if not s then return { 'unknown_session' } end
if now > 0 and s.state == 'w' then redis.call('ZADD', K_SEEN, 'XX', 'GT', now, sid) end
return session_reply(s)
