-- Periodic jobs: store, delete and list schedules; fire one tick exactly once.

-- name: put_schedules
-- ARGV[3..] = name, spec pairs. Creates or replaces specs; stored last ticks are kept.
for i = 3, #ARGV, 2 do
  redis.call('HSET', B .. 'schedules', ARGV[i], ARGV[i + 1])
end
return 1

-- name: delete_schedules
-- ARGV[3..] = names. Returns how many existed.
local m = memo_get()
if m then
  return m
end
local n = 0
for i = 3, #ARGV do
  n = n + redis.call('HDEL', B .. 'schedules', ARGV[i])
  redis.call('HDEL', B .. 'schedules:ticks', ARGV[i])
end
memo_set(n)
return n

-- name: list_schedules
-- Returns {HGETALL schedules, HGETALL schedules:ticks}.
return { redis.call('HGETALL', B .. 'schedules'), redis.call('HGETALL', B .. 'schedules:ticks') }

-- name: fire_schedule
-- ARGV[3..5] = lease, ARGV[6] = name, ARGV[7] = tick, ARGV[8] = rows as submit's ARGV[3]
-- (one job; "" = skip the tick), ARGV[9] = specials as submit's ARGV[4]. Fenced. If the
-- schedule exists, its last tick is unset or earlier than tick, and the job's id is new:
-- sets the last tick and stores the job in one step and returns 1; else changes nothing
-- and returns 0.
local early = memo_or_fence()
if early then
  return early
end
local name, tick = ARGV[6], tonumber(ARGV[7])
if redis.call('HEXISTS', B .. 'schedules', name) == 0 then
  return 0
end
local last = redis.call('HGET', B .. 'schedules:ticks', name)
if last and tonumber(last) >= tick then
  return 0
end
if ARGV[8] ~= '' then
  local jobs = cjson.decode(ARGV[8])
  for _, a in ipairs(jobs) do
    if redis.call('ZSCORE', B .. 'jobs', a[1]) or redis.call('EXISTS', jkey(a[1])) == 1 then
      return 0 -- that tick's job exists: never overwrite it
    end
  end
  local specials = {}
  if ARGV[9] ~= '' then
    specials = cjson.decode(ARGV[9])
  end
  local _, err = do_submit(jobs, specials)
  if err then
    return err
  end
end
redis.call('HSET', B .. 'schedules:ticks', name, ARGV[7])
flush()
memo_set(1)
return 1
