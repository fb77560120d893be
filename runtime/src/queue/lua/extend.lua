-- The shop's checkout extends an active session: it keeps its slot at
-- least for_ms from now, but never past the room's longest session
-- (max_session_ms after its admission, or session_ms when that is unset).
-- Never shortens a session. A session whose time is up, or that is not
-- active, is not_active.
-- ARGV: now sid for_ms
local now, sid, for_ms = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local s = load_session(sid)
if not s then return { 'unknown_session' } end
if s.state ~= 'a' or s.expires <= now then return { 'not_active' } end
local cfg = load_config()
local longest = cfg and math.max(cfg.max_session_ms, cfg.session_ms) or 0
local expires = math.min(now + for_ms, s.admitted + longest)
if expires > s.expires then
  s.expires = expires
  save_session(s)
  redis.call('ZADD', K_ACTIVE, s.expires, s.sid)
  emit('x', 's', s.sid, 'u', s.user, 'aa', int(s.admitted), 'ex', int(s.expires))
end
return session_reply(s)
