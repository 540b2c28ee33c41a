-- Release the unacked_mutex only if we still own it (kombu's Lock.release).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
