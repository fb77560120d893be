-- ARGV: now sid
local now, sid = tonumber(ARGV[1]), ARGV[2]
local s = load_session(sid)
if not s then return { 'unknown_session' } end
if s.state == 'w' then
  remove_waiting(s, 'left', now)
elseif s.state == 'a' then
  end_active(s, 'left', now)
end
return session_reply(s)
