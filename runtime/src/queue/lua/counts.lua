-- Returns { waiting, active, admitted_total, opened }
return { redis.call('ZCARD', K_WAITING), redis.call('ZCARD', K_ACTIVE),
  tonumber(redis.call('HGET', K_META, 'admitted_total') or '0'),
  redis.call('HGET', K_META, 'opened') == '1' and 1 or 0 }
