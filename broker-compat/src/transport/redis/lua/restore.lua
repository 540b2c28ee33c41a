-- Atomic settle of one unacked message (kombu's ack / restore_by_tag).
-- KEYS[1] = unacked, KEYS[2] = unacked_index, KEYS[3..] = lists to push to.
-- ARGV[1] = delivery tag, ARGV[2] = the unacked value the caller read
-- (optimistic check, as kombu's WATCH unacked), ARGV[3] = envelope to push,
-- ARGV[4] = 'L' (LPUSH, back of the queue) or 'R' (RPUSH, front).
-- Returns -1 when the entry changed since it was read (caller re-reads),
-- 0 when it is gone (nothing pushed), else 1.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[2] then
  return -1
end
redis.call('ZREM', KEYS[2], ARGV[1])
if not cur then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
local push = (ARGV[4] == 'L') and 'LPUSH' or 'RPUSH'
for i = 3, #KEYS do
  redis.call(push, KEYS[i], ARGV[3])
end
return 1
