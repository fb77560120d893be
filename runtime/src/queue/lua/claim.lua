-- The visitor of a session reached the shop's gate: its claim deadline is
-- dropped. A deadline already past ends the session as unclaimed, as the
-- next tick would. Without a claim window nothing is pending.
-- ARGV: now sid. Returns the session as it stands after, then 1 when this
-- claim ended it (too late), else 0.
local now, sid = tonumber(ARGV[1]), ARGV[2]
local s = load_session(sid)
if not s then return { 'unknown_session' } end
local cfg = load_config()
local deadline = tonumber(redis.call('ZSCORE', K_UNCLAIMED, sid) or '')
local lapsed = 0
if deadline and s.state == 'a' and cfg and cfg.claim_ms > 0 and deadline <= now then
  end_active(s, 'unclaimed', now)
  lapsed = 1
elseif deadline then
  redis.call('ZREM', K_UNCLAIMED, sid)
end
local reply = session_reply(s)
reply[#reply + 1] = lapsed
return reply
