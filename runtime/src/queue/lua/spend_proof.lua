-- ARGV: now id expires_at. Records the proof-of-work challenge `id` as
-- spent until `expires_at`. Spent ids that expired are forgotten first
-- (each once, so the trim costs O(1) per spend over time).
-- Returns { 'ok', 1 } the first time, { 'ok', 0 } for a replay.
redis.call('ZREMRANGEBYSCORE', K_PROOFS, '-inf', ARGV[1])
return { 'ok', redis.call('ZADD', K_PROOFS, 'NX', ARGV[3], ARGV[2]) }
