-- Admits the next `count` sessions from the front of the line now, past
-- the admission rate and a pause but never past capacity: a control of the
-- people who run the sale. Done once per request id: the first call sets
-- how many it admits in all (count, within the free slots at that moment),
-- each call admits at most one batch of them, and calls after the last
-- batch admit nobody, so a repeated request changes nothing. Nobody is
-- admitted before the room opened (a Random room has not dealt its tickets
-- yet) or after it closed. The admissions count in the rate window like any
-- other.
-- ARGV: now count request_id. Returns { 'ok', admitted, left }
local now, count, request = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local cfg = load_config()
if not cfg then return { 'not_configured' } end
local open = redis.call('HGET', K_META, 'opened') == '1' and not (cfg.closes_at > 0 and now >= cfg.closes_at)
if redis.call('HGET', K_META, 'admit_request') ~= request then
  local total = 0
  if open then
    total = count
    if cfg.mode ~= 'Passthrough' then
      total = math.max(0, math.min(total, cfg.capacity - redis.call('ZCARD', K_ACTIVE)))
    end
  end
  redis.call('HSET', K_META, 'admit_request', request, 'admit_left', total)
end
local left = tonumber(redis.call('HGET', K_META, 'admit_left'))
local admitted = 0
if open then admitted = admit_front(math.min(left, BATCH), cfg, now) end
left = left - admitted
redis.call('HSET', K_META, 'admit_left', left)
return { 'ok', admitted, left }
