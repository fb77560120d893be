-- Shared by every script of a room. All keys share the room's hash tag, so
-- the scripts run unchanged on Redis Cluster. The key order is fixed:
local K_CFG, K_META, K_USERS, K_SESSIONS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_WAITING, K_ACTIVE, K_SEEN, K_ADMITS = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_CLOSED, K_EVENTS, K_PURGED, K_UNCLAIMED = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
-- Per-address limits: address -> when its join rate allows the next new
-- place (a zset, so old entries are trimmed by score), address -> live
-- sessions, and session -> the address it counts against.
local K_ADDR_RATE, K_ADDR_LIVE, K_SID_ADDR = KEYS[13], KEYS[14], KEYS[15]
-- Invite codes (hashes) good for one join, and those already redeemed.
local K_INVITES, K_REDEEMED = KEYS[16], KEYS[17]
-- The join list of a Random room's shuffle (queue/fairness.rs).
local K_JOINS = KEYS[18]
-- Spent proof-of-work challenges, scored by when they expire.
local K_PROOFS = KEYS[19]

local EVENTS_MAXLEN = 100000
local BATCH = 1000
local RATE_WINDOW_MS = 60000
local CLOSED_RETENTION_MS = 3600000
-- Tickets from here up wait in the priority lane (queue/lane.rs).
local PRIORITY_BASE = 281474976710656

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
    addr_rate = tonumber(c.addr_rate or '0'), -- 0: no per-address join rate
    addr_live = tonumber(c.addr_live or '0'), -- 0: no per-address session cap
    -- Percent of admissions for the priority lane while both lanes wait.
    priority_share = tonumber(c.priority_share or '100'),
    -- Checked by the brokers, before a join reaches the store.
    pow_bits = tonumber(c.pow_bits or '0'), -- 0: no proof of work
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

-- The scores of the lane a ticket waits in.
local function lane_range(ticket)
  if ticket >= PRIORITY_BASE then return int(PRIORITY_BASE), '+inf' end
  return '-inf', '(' .. int(PRIORITY_BASE)
end

-- The reply describing one session: state fields, then its position and
-- the waiting count in its lane.
local function session_reply(s)
  local low, high = lane_range(s.ticket)
  local position = 0
  if s.state == 'w' then position = redis.call('ZCOUNT', K_WAITING, low, int(s.ticket)) end
  return { 'ok', s.sid, s.state, int(s.ticket), int(s.admitted or 0), int(s.expires or 0),
           s.reason or '', s.user, position, redis.call('ZCOUNT', K_WAITING, low, high) }
end

local function close_session(s, reason, now)
  s.state = 'c'
  s.reason = reason
  save_session(s)
  if redis.call('HGET', K_USERS, s.user) == s.sid then redis.call('HDEL', K_USERS, s.user) end
  redis.call('ZADD', K_CLOSED, now, s.sid)
  local addr = redis.call('HGET', K_SID_ADDR, s.sid)
  if addr then
    redis.call('HDEL', K_SID_ADDR, s.sid)
    if redis.call('HINCRBY', K_ADDR_LIVE, addr, -1) <= 0 then redis.call('HDEL', K_ADDR_LIVE, addr) end
  end
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

-- Admits the first `n` sessions of the lane whose scores are low..high.
local function admit_lane(low, high, n, cfg, now)
  if n <= 0 then return end
  local front = redis.call('ZRANGEBYSCORE', K_WAITING, low, high, 'LIMIT', 0, n)
  if #front == 0 then return end
  redis.call('ZREM', K_WAITING, unpack(front))
  redis.call('ZREM', K_SEEN, unpack(front))
  for _, sid in ipairs(front) do admit(load_session(sid), cfg, now) end
end

-- Admits up to `n` sessions from the front of the lanes; returns how many.
-- While both lanes wait, the priority lane gets priority_share percent of
-- the admissions (all of them at 100), the fraction carried over from call
-- to call; a lane takes what the other cannot use.
local function admit_front(n, cfg, now)
  if n <= 0 then return 0 end
  local priority_waiting = redis.call('ZCOUNT', K_WAITING, int(PRIORITY_BASE), '+inf')
  local general_waiting = redis.call('ZCARD', K_WAITING) - priority_waiting
  local credit = tonumber(redis.call('HGET', K_META, 'lane_credit') or '0') + n * cfg.priority_share / 100
  local from_priority = math.min(priority_waiting, n, math.floor(credit))
  local from_general = math.min(general_waiting, n - from_priority)
  from_priority = math.min(priority_waiting, n - from_general)
  credit = math.max(0, math.min(1, credit - from_priority))
  redis.call('HSET', K_META, 'lane_credit', string.format('%.17g', credit))
  admit_lane(int(PRIORITY_BASE), '+inf', from_priority, cfg, now)
  admit_lane('-inf', '(' .. int(PRIORITY_BASE), from_general, cfg, now)
  return from_priority + from_general
end
