-- What a producer or an operator changes: submit (unique keys, parents, reserved slots),
-- cancel, retry dead jobs.

-- Store jobs: rows as submit's ARGV[3], specials as its ARGV[4] (a decoded list, in index
-- order). Returns the number of jobs or, if a unique key replaced some job by an existing
-- one, the list of ids; or nil and an error reply, having written nothing. Wakes the
-- scheduler unless every job stored took a reserved slot. Caller flushes.
local function do_submit(jobs, specials)
  local n = #jobs
  local CHUNK = 1000 -- unpack() has a stack limit: bulk commands go in chunks
  local index = {}
  for c = 1, n, CHUNK do
    local ids = {}
    for i = c, math.min(c + CHUNK - 1, n) do
      local id = jobs[i][1]
      if index[id] then
        return nil, redis.error_reply('ROTA_DUPLICATE job id ' .. id .. ' appears twice')
      end
      index[id] = i
      ids[#ids + 1] = id
    end
    local found = redis.call('ZMSCORE', B .. 'jobs', unpack(ids))
    for i = 1, #ids do
      if found[i] then
        return nil, redis.error_reply('ROTA_DUPLICATE job id ' .. ids[i] .. ' already exists')
      end
    end
  end
  -- Workflows and unique keys: decided before anything is written.
  local replaced, parents_of, settle, takes = nil, {}, {}, {}
  if #specials > 0 then
    replaced = {}
    local holders = {} -- unique key -> id, within this batch
    for _, sp in ipairs(specials) do
      local i, parents, ukey = sp[1], sp[2], sp[3]
      local id = jobs[i][1]
      if ukey ~= '' then
        local holder = holders[ukey]
        if not holder then
          local h = redis.call('GET', B .. 'unique:' .. ukey)
          if h then
            local st = redis.call('HGET', jkey(h), 'state')
            if st and not FINALS[st] then
              holder = h
            end
          end
        end
        if holder then
          replaced[i] = holder
        else
          holders[ukey] = id
          local ms = sp[4] ~= '' and math.ceil(tonumber(sp[4]) * 1000) or nil
          if not ms or ms > 0 then
            takes[#takes + 1] = { ukey, id, ms }
          end
        end
      end
      if not replaced[i] and #parents > 0 then
        local deps = {}
        for _, p in ipairs(parents) do
          local k = index[p]
          local parent = p
          if k and k >= i then
            return nil, redis.error_reply('ROTA_INVALID parent ' .. p .. ' of job ' .. id ..
              ' comes after it in the batch')
          elseif k and replaced[k] then
            parent = replaced[k] -- a parent deduplicated by its unique key
            k = index[parent] -- its holder may be earlier in this batch
          end
          if not k then -- a job already stored
            local st = redis.call('HGET', jkey(parent), 'state')
            if not st then
              return nil, redis.error_reply('ROTA_INVALID parent ' .. p .. ' of job ' .. id ..
                ' does not exist')
            elseif FINALS[st] then
              settle[parent] = true
            end
          end
          deps[#deps + 1] = parent
        end
        parents_of[i] = deps
      end
    end
  end
  local first = redis.call('INCRBY', B .. 'seq', n) - n
  -- Reserved slots serve plain jobs only while nothing waits for placement (so no job
  -- overtakes one already pending), in batches of one priority (taken in order, they
  -- are taken in placement order) and until a job of this call goes pending.
  local reserved = redis.call('EXISTS', B .. 'reserved') == 1
    and redis.call('ZCARD', K_PENDING) == 0
  for i = 2, reserved and n or 0 do
    if jobs[i][5] ~= jobs[1][5] then
      reserved = false
      break
    end
  end
  local placed_all = true -- every job stored took a reserved slot
  for c = 1, n, CHUNK do
    local all, pmem, sched, delayed, waiting = {}, {}, {}, {}, {}
    for i = c, math.min(c + CHUNK - 1, n) do
      if not (replaced and replaced[i]) then
        local a = jobs[i]
        local id, queue, prio = a[1], a[3], a[5]
        local seq = first + i
        local f = { 'task', a[2], 'queue', queue, 'payload', a[4], 'created_at', NOWS,
          'seq', seq }
        if prio ~= 0 then
          f[#f + 1] = 'priority'; f[#f + 1] = prio
        end
        local state = 'pending'
        local enq = NOWS -- when it becomes pending (the member of a job with an alloc spec)
        local deps = parents_of[i]
        if deps then
          state = 'waiting'
          waiting[#waiting + 1] = seq; waiting[#waiting + 1] = id
          f[#f + 1] = 'depends_on'; f[#f + 1] = cjson.encode(deps)
        elseif a[6] ~= '' or a[7] ~= '' then
          local due = NOW + (tonumber(a[6]) or 0)
          if a[7] ~= '' then
            due = tonumber(a[7])
          end
          enq = fmt(due)
          f[#f + 1] = 'scheduled_at'; f[#f + 1] = enq
          if due > NOW then
            state = 'scheduled'
            sched[#sched + 1] = seq; sched[#sched + 1] = id
            delayed[#delayed + 1] = due; delayed[#delayed + 1] = id
          end
        end
        if state == 'pending' then
          local res, labels, aff, ck, cl, rl, al, to
          for x = 8, #a, 2 do
            local name = a[x]
            if name == 'resources' then
              res = a[x + 1]
            elseif name == 'labels' then
              labels = a[x + 1]
            elseif name == 'affinity' then
              aff = a[x + 1]
            elseif name == 'concurrency_key' then
              ck = a[x + 1]
            elseif name == 'concurrency_limit' then
              cl = a[x + 1]
            elseif name == 'rate_limit' then
              rl = a[x + 1]
            elseif name == 'alloc' then
              al = a[x + 1]
            elseif name == 'timeout' then
              to = a[x + 1]
            end
          end
          local node = nil
          if reserved and not (res or labels or aff or ck or rl or al or (tonumber(cl) or 0) ~= 0) then
            node = take_reserved(queue)
          end
          if node then -- placed at once, in a slot the leader reserved
            state = 'assigned'
            local token = take_tokens(1) + 1
            f[#f + 1] = 'node_id'; f[#f + 1] = node
            f[#f + 1] = 'token'; f[#f + 1] = token
            defer('ZADD', B .. 'nassigned:' .. node, 0, rank(prio, seq) .. id)
            wake(B .. 'wake:node:' .. node)
          else
            reserved = false
            pmem[#pmem + 1] = 0
            pmem[#pmem + 1] = pmember(prio, seq, id, queue, a[2], res, labels, aff, ck, cl, rl,
              al, to, enq)
          end
        end
        if state ~= 'assigned' then
          placed_all = false
        end
        f[#f + 1] = 'state'; f[#f + 1] = state
        for x = 8, #a do
          f[#f + 1] = a[x]
        end
        redis.call('HSET', jkey(id), unpack(f))
        all[#all + 1] = seq; all[#all + 1] = id
        count(queue, state, 1)
      end
    end
    if #all > 0 then
      redis.call('ZADD', B .. 'jobs', unpack(all))
    end
    for key, t in pairs({ pending = pmem, ['state:scheduled'] = sched, delayed = delayed,
      ['state:waiting'] = waiting }) do
      if #t > 0 then
        redis.call('ZADD', B .. key, unpack(t))
      end
    end
  end
  if not placed_all then
    wake(K_WAKE_SCHED)
  end
  if not replaced then
    return n
  end
  for i, deps in pairs(parents_of) do
    local id = jobs[i][1]
    for _, p in ipairs(deps) do
      redis.call('SADD', B .. 'children:' .. p, id)
      redis.call('HSET', jkey(p), 'children', '1')
    end
  end
  for p in pairs(settle) do
    redis.call('ZADD', B .. 'settle', NOW, p)
  end
  for _, t in ipairs(takes) do
    if t[3] then
      redis.call('SET', B .. 'unique:' .. t[1], t[2], 'PX', t[3])
    else
      redis.call('SET', B .. 'unique:' .. t[1], t[2])
    end
  end
  if next(replaced) == nil then
    return n
  end
  local ids = {}
  for i = 1, n do
    ids[i] = replaced[i] or jobs[i][1]
  end
  return ids
end

-- name: submit
-- ARGV[3] = JSON list of [id, task, queue, payload, priority, delay, eta, field, value...]
-- (delay/eta "" = none; the optional fields are the ones that differ from their default),
-- ARGV[4] = JSON list of [index, parents, unique key, unique_for] for the jobs that have
-- depends_on or a unique_key (absent or "" = none). All or none: a duplicate id or an
-- unknown parent refuses the whole batch before anything is written. Returns the number of
-- jobs, or (when a unique key gave some job an existing id) the list of ids.
local m = memo_get()
if m then
  return m
end
local specials = {}
if ARGV[4] and ARGV[4] ~= '' then
  specials = cjson.decode(ARGV[4])
end
local reply, err = do_submit(cjson.decode(ARGV[3]), specials)
if err then
  return err
end
flush()
memo_set(reply)
return reply

-- name: cancel
-- ARGV[3] = job id. Returns the state after the call, or nil if there is no such job.
-- A waiting job is cancelled at once (its entries in its parents' "children" sets go
-- lazily, in resolve_dependencies).
local j = load(ARGV[3])
if not j then
  return false
end
local s = j.state
if FINALS[s] then
  return s
end
if s == 'running' then
  if preempting(j) then -- a preemption pending becomes a plain cancel
    redis.call('HDEL', jkey(j.id), 'preempted_at')
  end
  redis.call('HSET', jkey(j.id), 'cancel_requested', '1')
  if j.node then
    wake(B .. 'wake:node:' .. j.node)
  end
  flush()
  return s
end
if s == 'scheduled' or s == 'retrying' then
  redis.call('ZREM', B .. 'delayed', j.id)
elseif s == 'pending' then -- (and the member an older rota wrote, rank..id)
  redis.call('ZREM', B .. 'pending', pmember_of(j.id), rank(j.priority, j.seq) .. j.id)
elseif s == 'assigned' then
  leave_node(j)
  wake(B .. 'wake:node:' .. j.node)
end
finish(j, 'cancelled', { 'error', 'cancelled' })
flush()
return 'cancelled'

-- name: retry_dead
-- ARGV[3..] = job ids. Dead jobs go back to pending with attempts reset.
local m = memo_get()
if m then
  return m
end
local n = 0
for i = 3, #ARGV do
  local j = load(ARGV[i])
  if j and j.state == 'dead' then
    local k = jkey(j.id)
    redis.call('ZREM', B .. 'finished', j.id .. '\0dead:' .. j.queue)
    redis.call('PERSIST', k)
    redis.call('PERSIST', akey(j.id))
    redis.call('DEL', B .. 'done:' .. j.id)
    redis.call('HSET', k, 'attempts', 0, 'scheduled_at', NOWS)
    to_pending(j, { 'finished_at', 'started_at', 'node_id', 'cancel_requested' })
    n = n + 1
  end
end
flush()
memo_set(n)
return n
