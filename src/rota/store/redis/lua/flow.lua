-- Workflows: settle waiting jobs once their parents are final.

-- name: resolve_dependencies
-- ARGV[3..5] = lease, ARGV[6] = limit. Fenced. Looks at the waiting children of the jobs
-- in "settle" (oldest first): to pending once every parent succeeded, to upstream_failed
-- as soon as one is dead, cancelled, upstream_failed or gone. Waiting jobs are never
-- scanned: only the children of parents that became final. A final parent's children are
-- popped from its "children" set as they are looked at (one that still waits for another
-- parent is found again through that parent's set); a parent that is no longer final
-- (retry_dead) leaves "settle" with its set intact. Moves at most `limit` jobs and looks at
-- no more than 4 x `limit`; a parent stays in "settle" until its set is empty.
-- Returns how many moved.
local early = memo_or_fence()
if early then
  return early
end
local limit = tonumber(ARGV[6])
local parents = redis.call('ZRANGE', B .. 'settle', 0, math.max(limit, 1) - 1)
if #parents == 0 then
  return 0 -- the usual case, every scheduler cycle: one read, nothing written
end
local moved, budget = 0, 4 * limit
local known = {} -- job id -> state (false: gone), each read once per call
local function state_of(id)
  local st = known[id]
  if st == nil then
    st = redis.call('HGET', jkey(id), 'state')
    known[id] = st
  end
  return st
end
local fields = { 'state', 'queue', 'seq', 'priority', 'depends_on', 'children', 'unique_key' }
for _, p in ipairs(parents) do
  if moved >= limit or budget <= 0 then
    break
  end
  local ps = state_of(p)
  if ps and not FINALS[ps] then
    redis.call('ZREM', B .. 'settle', p) -- retried since: its children wait for it again
  else
    local ck = B .. 'children:' .. p
    while moved < limit and budget > 0 do
      local kids = redis.call('SPOP', ck, math.min(limit - moved, budget))
      if #kids == 0 then
        redis.call('ZREM', B .. 'settle', p)
        break
      end
      budget = budget - #kids
      for _, c in ipairs(kids) do
        local j = load(c, fields)
        if j and j.state == 'waiting' then
          local deps = cjson.decode(j.depends_on or '[]')
          local failed, why, ready = nil, nil, true
          for _, q in ipairs(deps) do
            local st = state_of(q)
            if not st or (FINALS[st] and st ~= 'succeeded') then
              failed, why = q, st or 'gone'
              break
            elseif st ~= 'succeeded' then
              ready = false
            end
          end
          if failed or ready then
            if failed then
              finish(j, 'upstream_failed', { 'error', 'upstream failed: parent ' .. failed ..
                ' is ' .. why })
            else
              to_pending(j)
            end
            known[c] = j.state
            for _, q in ipairs(deps) do
              if q ~= p then
                redis.call('SREM', B .. 'children:' .. q, c)
              end
            end
            moved = moved + 1
          end
        end
      end
    end
  end
end
flush()
memo_set(moved)
return moved
