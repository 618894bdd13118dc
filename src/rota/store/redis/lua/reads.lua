-- Operator reads that need a script: the ids of assigned/running jobs, and pending jobs
-- newest first.

-- name: active_ids
-- ARGV[3] = assigned | running. The ids of the jobs in that state (states without a
-- "state:" index): every node's "nassigned:" set, or "running".
if ARGV[3] == 'running' then
  return redis.call('ZRANGE', B .. 'running', 0, -1)
end
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', B .. 'nodes')) do
  for _, mem in ipairs(redis.call('ZRANGE', B .. 'nassigned:' .. node, 0, -1)) do
    out[#out + 1] = string.sub(mem, 21)
  end
end
return out

-- name: pending_newest
-- ARGV[3] = seq bound ("" = none), ARGV[4] = limit. The pending jobs with the highest seq
-- below the bound, as {id, seq}..., highest first. "pending" is ordered by priority then
-- seq, so each priority band (its first 8 hex digits) is read from its top: two
-- ZRANGEBYLEX a band, however many jobs wait.
local bound = ARGV[3] ~= '' and tonumber(ARGV[3]) or nil
local limit = tonumber(ARGV[4])
local found = {}
local start = '-'
while limit > 0 do
  local first = redis.call('ZRANGEBYLEX', K_PENDING, start, '+', 'LIMIT', 0, 1)
  if #first == 0 then
    break
  end
  local band = string.sub(first[1], 1, 8)
  local top = bound and ('(' .. band .. string.format('%012x', bound)) or ('[' .. band .. 'g')
  for _, m in ipairs(redis.call('ZREVRANGEBYLEX', K_PENDING, top, '[' .. band, 'LIMIT', 0,
    limit)) do
    local stop = string.find(m, '\0', 21, true)
    found[#found + 1] = { tonumber(string.sub(m, 9, 20), 16), string.sub(m, 21, (stop or 0) - 1) }
  end
  start = '[' .. band .. 'g'
end
table.sort(found, function(a, b)
  return a[1] > b[1]
end)
local out = {}
for i = 1, math.min(limit, #found) do
  out[#out + 1] = found[i][2]
  out[#out + 1] = found[i][1]
end
return out
