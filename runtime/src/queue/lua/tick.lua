-- One dispatcher step. ARGV: now seed
-- Returns { 'ok', admitted, expired, abandoned, closed, more, unclaimed }
local now, seed = tonumber(ARGV[1]), tonumber(ARGV[2])
local cfg = load_config()
if not cfg then return { 'not_configured' } end
local admitted, expired, abandoned, closed, more, unclaimed = 0, 0, 0, 0, 0, 0
local function report() return { 'ok', admitted, expired, abandoned, closed, more, unclaimed } end

-- Ends the active sessions whose score in `key` is due by now, as `reason`.
local function end_due(key, reason)
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, BATCH)
  if #due == BATCH then more = 1 end
  for _, sid in ipairs(due) do end_active(load_session(sid), reason, now) end
  return #due
end

-- Sessions whose time ran out free their slots.
expired = end_due(K_ACTIVE, 'expired')

-- Admitted visitors who did not reach the shop's gate within the claim
-- window lose their slots. Without a window, no deadline is left pending.
if cfg.claim_ms > 0 then
  unclaimed = end_due(K_UNCLAIMED, 'unclaimed')
else
  redis.call('DEL', K_UNCLAIMED)
end

-- Waiting users unseen for the abandon timeout leave the line, unless
-- presence went unrecorded within the grace (presence.lua), as
-- queue::presence_grace_ms computes it.
local cutoff = now - cfg.abandon_ms
local grace = math.min(math.min(math.max(math.floor(cfg.abandon_ms / 4), 1000), 30000) + 5000, cfg.abandon_ms)
local gone = {}
if tonumber(redis.call('HGET', K_META, 'presence_from') or '0') < now - grace then
  gone = redis.call('ZRANGEBYSCORE', K_SEEN, '-inf', '(' .. int(cutoff), 'LIMIT', 0, BATCH)
end
if #gone == BATCH then more = 1 end
for _, sid in ipairs(gone) do
  remove_waiting(load_session(sid), 'abandoned', now)
  abandoned = abandoned + 1
end

-- Addresses whose join rate has fully recovered are forgotten.
redis.call('ZREMRANGEBYSCORE', K_ADDR_RATE, '-inf', now)

-- Closed sessions are remembered for a while, then forgotten.
-- Kept at least as long as an entry token of theirs could still be valid.
local old = redis.call('ZRANGEBYSCORE', K_CLOSED, '-inf', now - math.max(CLOSED_RETENTION_MS, cfg.session_ms), 'LIMIT', 0, BATCH)
for _, sid in ipairs(old) do
  redis.call('HDEL', K_SESSIONS, sid)
  redis.call('ZREM', K_CLOSED, sid)
end

-- After closing time the rest of the line is told the room closed.
if cfg.closes_at > 0 and now >= cfg.closes_at then
  local rest = redis.call('ZRANGE', K_WAITING, 0, BATCH - 1)
  if #rest == BATCH then more = 1 end
  for _, sid in ipairs(rest) do
    remove_waiting(load_session(sid), 'room_closed', now)
    closed = closed + 1
  end
  return report()
end
if cfg.opens_at > 0 and now < cfg.opens_at then
  return report()
end

-- Opening: a Random room deals the pre-queue's tickets out again, once.
if redis.call('HGET', K_META, 'opened') ~= '1' then
  redis.call('HSET', K_META, 'opened', '1')
  if cfg.mode == 'Random' then
    -- Each lane is dealt out on its own, with the same seed.
    for _, lane in ipairs({ { '-inf', '(' .. int(PRIORITY_BASE) }, { int(PRIORITY_BASE), '+inf' } }) do
      local flat = redis.call('ZRANGEBYSCORE', K_WAITING, lane[1], lane[2], 'WITHSCORES')
      local sids, tickets = {}, {}
      for i = 1, #flat, 2 do
        sids[#sids + 1] = flat[i]
        tickets[#tickets + 1] = tonumber(flat[i + 1])
      end
      -- Park-Miller generator and Fisher-Yates, exactly as queue/shuffle.rs.
      local x = seed % 2147483647
      if x == 0 then x = 1 end
      for i = #sids, 2, -1 do
        x = (x * 48271) % 2147483647
        local j = (x % i) + 1
        sids[i], sids[j] = sids[j], sids[i]
      end
      for i = 1, #sids do
        redis.call('ZADD', K_WAITING, tickets[i], sids[i])
        local s = load_session(sids[i])
        s.ticket = tickets[i]
        save_session(s)
      end
    end
  end
  emit('o')
end
if cfg.paused then return report() end

-- Admission budget: free slots, the rate window and a token bucket that
-- spreads a minute's rate evenly (one second's worth of burst).
local budget = BATCH
local tokens, tokens_at = nil, now
if cfg.mode ~= 'Passthrough' then
  budget = math.min(budget, cfg.capacity - redis.call('ZCARD', K_ACTIVE))
  if cfg.rate > 0 then
    redis.call('ZREMRANGEBYSCORE', K_ADMITS, '-inf', now - RATE_WINDOW_MS)
    budget = math.min(budget, cfg.rate - redis.call('ZCARD', K_ADMITS))
    local burst = math.max(1, math.ceil(cfg.rate / 60))
    tokens = burst
    local at = tonumber(redis.call('HGET', K_META, 'tokens_at') or '')
    if at then
      tokens = math.min(burst, tonumber(redis.call('HGET', K_META, 'tokens')) + math.max(0, now - at) * cfg.rate / 60000)
      -- Never moves back, so callers with skewed clocks cannot earn a second credit.
      tokens_at = math.max(now, at)
    end
    budget = math.min(budget, math.floor(tokens))
  end
end
admitted = admit_front(budget, cfg, now)
if admitted == BATCH then more = 1 end
if tokens then
  redis.call('HSET', K_META, 'tokens', string.format('%.17g', tokens - admitted), 'tokens_at', int(tokens_at))
end
return report()
