-- Shared by every script of a room. All keys share the room's hash tag, so
-- the scripts run unchanged on Redis Cluster. The key order is fixed:
local K_CFG, K_META, K_USERS, K_SESSIONS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_WAITING, K_ACTIVE, K_SEEN, K_ADMITS = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_CLOSED, K_EVENTS, K_PURGED, K_UNCLAIMED = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local K_PROOFS = KEYS[13]

local EVENTS_MAXLEN = 100000
local BATCH = 1000
local RATE_WINDOW_MS = 60000
local CLOSED_RETENTION_MS = 3600000

local function int(x) return string.format('%d', x) end

-- The room's configuration, or nil when none was written yet.
local function load_config()
  local flat = redis.call('HGETALL', K_CFG)
  if #flat == 0 then return nil end
  local c = {}
  for i = 1, #flat, 2 do c[flat[i]] = flat[i + 1] end
  return {
    capacity = tonumber(c.capacity),
    rate = tonumber(c.rate or '0'),          -- 0: no rate limit
    session_ms = tonumber(c.session_ms),
    mode = c.mode,
    opens_at = tonumber(c.opens_at or '0'),  -- 0: no opening time
    closes_at = tonumber(c.closes_at or '0'),-- 0: no closing time
    paused = c.paused == '1',
    abandon_ms = tonumber(c.abandon_ms),
    claim_ms = tonumber(c.claim_ms or '0'), -- 0: no claim window
    max_session_ms = tonumber(c.max_session_ms or '0'), -- 0: session_ms
  }
end

-- A session record is "state|ticket|admitted_at|expires_at|reason|user";
-- state is w (waiting), a (active) or c (closed). The user comes last
-- because it may contain any character.
local function load_session(sid)
  local rec = redis.call('HGET', K_SESSIONS, sid)
  if not rec then return nil end
  local state, ticket, admitted, expires, reason, user =
    string.match(rec, '^([wac])|(%d+)|(%-?%d+)|(%-?%d+)|([%a_]*)|(.*)$')
  return { sid = sid, state = state, ticket = tonumber(ticket), admitted = tonumber(admitted),
           expires = tonumber(expires), reason = reason, user = user }
end

local function save_session(s)
  redis.call('HSET', K_SESSIONS, s.sid, s.state .. '|' .. int(s.ticket) .. '|' .. int(s.admitted or 0)
    .. '|' .. int(s.expires or 0) .. '|' .. (s.reason or '') .. '|' .. s.user)
end

-- Appends to the change stream; `n` numbers entries consecutively so a
-- reader can tell when it missed some.
local function emit(kind, ...)
  local n = redis.call('HINCRBY', K_META, 'evseq', 1)
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'k', kind, 'n', n, ...)
end

-- The reply describing one session: state fields, position, waiting count.
local function session_reply(s)
  local position = 0
  if s.state == 'w' then position = redis.call('ZRANK', K_WAITING, s.sid) + 1 end
  return { 'ok', s.sid, s.state, int(s.ticket), int(s.admitted or 0), int(s.expires or 0),
           s.reason or '', s.user, position, redis.call('ZCARD', K_WAITING) }
end

local function close_session(s, reason, now)
  s.state = 'c'
  s.reason = reason
  save_session(s)
  if redis.call('HGET', K_USERS, s.user) == s.sid then redis.call('HDEL', K_USERS, s.user) end
  redis.call('ZADD', K_CLOSED, now, s.sid)
end

local function remove_waiting(s, reason, now)
  redis.call('ZREM', K_WAITING, s.sid)
  redis.call('ZREM', K_SEEN, s.sid)
  close_session(s, reason, now)
  emit('d', 's', s.sid, 't', int(s.ticket), 'r', reason)
end

local function end_active(s, reason, now)
  redis.call('ZREM', K_ACTIVE, s.sid)
  redis.call('ZREM', K_UNCLAIMED, s.sid)
  close_session(s, reason, now)
  emit('e', 's', s.sid, 'r', reason)
end

local function admit(s, cfg, now)
  s.state = 'a'
  s.admitted = now
  s.expires = now + cfg.session_ms
  save_session(s)
  redis.call('ZADD', K_ACTIVE, s.expires, s.sid)
  -- Until the visitor reaches the shop's gate (claim.lua), the session
  -- ends as unclaimed at this deadline (tick.lua).
  if cfg.claim_ms > 0 then redis.call('ZADD', K_UNCLAIMED, now + cfg.claim_ms, s.sid) end
  if cfg.rate > 0 and cfg.mode ~= 'Passthrough' then redis.call('ZADD', K_ADMITS, now, s.sid) end
  redis.call('HINCRBY', K_META, 'admitted_total', 1)
  emit('a', 's', s.sid, 'u', s.user, 't', int(s.ticket), 'aa', int(now), 'ex', int(s.expires))
end

-- Admits up to `n` sessions from the front of the line; returns how many.
local function admit_front(n, cfg, now)
  if n <= 0 then return 0 end
  local front = redis.call('ZPOPMIN', K_WAITING, n)
  for i = 1, #front, 2 do
    local s = load_session(front[i])
    redis.call('ZREM', K_SEEN, s.sid)
    admit(s, cfg, now)
  end
  return #front / 2
end
