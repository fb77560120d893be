-- Ends an active session for the shop's checkout, with the reason
-- `completed` or `revoked`. Doing it again with the same reason is
-- harmless; a session waiting or ended otherwise is not_active.
-- ARGV: now sid reason
local now, sid, reason = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local s = load_session(sid)
if not s then return { 'unknown_session' } end
if s.state == 'a' then
  end_active(s, reason, now)
elseif not (s.state == 'c' and s.reason == reason) then
  return { 'not_active' }
end
return session_reply(s)
