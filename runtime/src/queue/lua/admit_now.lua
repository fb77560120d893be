-- Admits up to `count` sessions (at most one batch) from the front of the
-- line now, past the admission rate and a pause but never past capacity:
-- a control of the people who run the sale. Nobody is admitted before the
-- room opened (a Random room has not dealt its tickets yet) or after it
-- closed. The admissions count in the rate window like any other.
-- ARGV: now count. Returns { 'ok', admitted }
local now, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local cfg = load_config()
if not cfg then return { 'not_configured' } end
if redis.call('HGET', K_META, 'opened') ~= '1' or (cfg.closes_at > 0 and now >= cfg.closes_at) then
  return { 'ok', 0 }
end
local budget = math.min(count, BATCH)
if cfg.mode ~= 'Passthrough' then
  budget = math.min(budget, cfg.capacity - redis.call('ZCARD', K_ACTIVE))
end
return { 'ok', admit_front(budget, cfg, now) }
