-- Makes invite codes good for one join each. ARGV: hashes of the codes.
-- A code already redeemed stays spent, so loading the same list again (a
-- broker restarting) changes nothing. Returns { 'ok', newly_added }
local added = 0
for i = 1, #ARGV do
  if redis.call('SISMEMBER', K_REDEEMED, ARGV[i]) == 0 then
    added = added + redis.call('SADD', K_INVITES, ARGV[i])
  end
end
return { 'ok', added }
