-- A consistent line for a reader to follow from, and the sessions closed
-- lately (their entry tokens are refused).
-- Returns { cursor, seq, n, closed1 .. closedn, sid1, ticket1, sid2, ticket2, ... }
local last = redis.call('XREVRANGE', K_EVENTS, '+', '-', 'COUNT', 1)
local cursor = '0-0'
if #last > 0 then cursor = last[1][1] end
local reply = { cursor, tonumber(redis.call('HGET', K_META, 'evseq') or '0') }
local closed = redis.call('ZRANGE', K_CLOSED, 0, -1)
reply[#reply + 1] = #closed
for i = 1, #closed do reply[#reply + 1] = closed[i] end
local flat = redis.call('ZRANGE', K_WAITING, 0, -1, 'WITHSCORES')
for i = 1, #flat do reply[#reply + 1] = flat[i] end
return reply
