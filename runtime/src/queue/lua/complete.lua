-- ARGV: now sid
local now, sid = tonumber(ARGV[1]), ARGV[2]
local s = load_session(sid)
if not s then return { 'unknown_session' } end
if s.state == 'a' then
  end_active(s, 'completed', now)
elseif not (s.state == 'c' and s.reason == 'completed') then
  return { 'not_active' }
end
return session_reply(s)
