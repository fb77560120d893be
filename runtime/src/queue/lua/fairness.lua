-- The commitment to the room's shuffle, and the seed once it took place.
-- Returns {} (no sealed seed), { commitment } (not shuffled yet), or
-- { commitment, seed, salt, shuffled_at, general, priority }: the last two
-- count the join list's entries of each lane.
local f = redis.call('HMGET', K_META, 'shuffle_commitment', 'shuffle_seed', 'shuffle_salt',
  'shuffled_at', 'shuffled_general', 'shuffled_priority')
if not f[1] then return {} end
if not f[4] then return { f[1] } end
return f
