-- ARGV: now user new_sid address lane invite
-- address: what the per-address limits count the visitor as (empty: not
-- limited). lane: g (general) or p (priority). invite: the hash of an
-- invite code the join redeems (empty: none); a code is good once.
local now, user, new_sid, addr = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local lane, invite = ARGV[5], ARGV[6]
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

-- Every check comes before any write, so a refused join changes nothing.
if invite ~= '' and redis.call('SISMEMBER', K_INVITES, invite) == 0 then
  return { 'invalid_invite' }
end
-- A new place counts against its address: at most addr_live at once, and
-- at most addr_rate a minute by a generic cell rate (the next place's
-- time moves on by one interval per place, at most a minute ahead of now:
-- a burst of addr_rate, then evenly spread).
local next_at = nil
if addr ~= '' then
  if cfg.addr_live > 0 and tonumber(redis.call('HGET', K_ADDR_LIVE, addr) or '0') >= cfg.addr_live then
    return { 'address_full' }
  end
  if cfg.addr_rate > 0 then
    next_at = math.max(tonumber(redis.call('ZSCORE', K_ADDR_RATE, addr) or '0'), now) + RATE_WINDOW_MS / cfg.addr_rate
    if next_at - now > RATE_WINDOW_MS then
      return { 'address_rate', int(math.ceil(next_at - now - RATE_WINDOW_MS)) }
    end
  end
end

if next_at then redis.call('ZADD', K_ADDR_RATE, next_at, addr) end
if invite ~= '' then
  redis.call('SREM', K_INVITES, invite)
  redis.call('SADD', K_REDEEMED, invite)
end
local ticket = redis.call('HINCRBY', K_META, 'seq', 1)
if lane == 'p' then ticket = ticket + PRIORITY_BASE end
local s = { sid = new_sid, user = user, ticket = ticket, state = 'w' }
redis.call('HSET', K_USERS, user, new_sid)
if addr ~= '' then
  redis.call('HSET', K_SID_ADDR, new_sid, addr)
  redis.call('HINCRBY', K_ADDR_LIVE, addr, 1)
end
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
