-- The commitment to the room's shuffle, and the seed once it took place.
-- Returns {} (no sealed seed), { commitment } (not shuffled yet), or
-- { commitment, seed, salt, shuffled_at, joins }.
local f = redis.call('HMGET', K_META, 'shuffle_commitment', 'shuffle_seed', 'shuffle_salt', 'shuffled_at')
if not f[1] then return {} end
if not f[4] then return { f[1] } end
return { f[1], f[2], f[3], f[4], redis.call('LLEN', K_JOINS) }
