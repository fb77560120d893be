-- The visitor of a session reached the shop's gate: its claim deadline is
-- dropped. A deadline already past ends the session as unclaimed, as the
-- next tick would. Without a claim window nothing is pending.
-- ARGV: now sid. Returns the session as it stands after.
local now, sid = tonumber(ARGV[1]), ARGV[2]
local s = load_session(sid)
if not s then return { 'unknown_session' } end
local cfg = load_config()
local deadline = tonumber(redis.call('ZSCORE', K_UNCLAIMED, sid) or '')
if deadline and s.state == 'a' and cfg and cfg.claim_ms > 0 and deadline <= now then
  end_active(s, 'unclaimed', now)
elseif deadline then
  redis.call('ZREM', K_UNCLAIMED, sid)
end
return session_reply(s)
