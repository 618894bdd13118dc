-- What a worker node calls: register, heartbeat, change state, list nodes, start its
-- assigned jobs (claim), complete them (and claim the next in the same call), release them.

-- Record outcomes [id, token, kind, result, error, traceback, retry_delay, cut_short]
-- ("" = none); returns 1/0 per outcome: accepted if running with that token (its attempt
-- is closed), or if that attempt already ended with the same kind (a retried report,
-- which changes nothing). Caller flushes.
local CFIELDS = { 'state', 'token', 'node_id', 'queue', 'seq', 'resources', 'attempts',
  'max_attempts', 'cancel_requested', 'concurrency_key', 'children', 'unique_key' }
local OUTPUTS = { 'result', 'error', 'traceback' }
local function do_complete(outcomes)
  local acc = {}
  ONLY_PLAIN = true
  for i, o in ipairs(outcomes) do
    local id = o[1]
    local v = redis.call('HMGET', jkey(id), unpack(CFIELDS))
    if v[1] ~= 'running' or tonumber(v[2]) ~= tonumber(o[2]) then
      acc[i] = attempt_ended_as(id, o[2], o[3]) and 1 or 0
    elseif o[3] == 'succeeded' and o[5] == '' and o[6] == '' and not (v[6] or v[10] or v[11]
        or v[12]) then
      -- the common case (a plain job succeeded) without the general bookkeeping: what
      -- leave_node(), finish() and move() would do for it
      local queue = v[4]
      defer('SREM', key_of('nrunning:', v[3]), id)
      defer('ZREM', K_RUNNING, id)
      defer('ZADD', K_SUCCEEDED, v[5], id)
      defer('ZADD', K_FINISHED, NOW, id .. '\0succeeded:' .. queue)
      count(queue, 'running', -1)
      count(queue, 'succeeded', 1)
      local k = jkey(id)
      if o[4] ~= '' then
        redis.call('HSET', k, 'state', 'succeeded', 'finished_at', NOWS, 'result', o[4])
      else
        redis.call('HSET', k, 'state', 'succeeded', 'finished_at', NOWS)
      end
      redis.call('HDEL', k, 'lease_expires_at', 'error', 'traceback')
      close_attempt(id, o[2], 'succeeded', o[8])
      if TTL > 0 then
        redis.call('EXPIRE', k, CEIL_TTL)
        redis.call('EXPIRE', akey(id), CEIL_TTL)
      end
      WATCHED[#WATCHED + 1] = id
      wake(K_WAKE_SCHED)
      acc[i] = 1
    else
      ONLY_PLAIN = false
      local j = from_fields(id, CFIELDS, v)
      local kind = o[3]
      local pre = (kind == 'cancelled' or kind == 'failed') and preempting(j)
      close_attempt(id, o[2], kind, pre and 'preempted' or o[8], o[5], o[6])
      leave_node(j)
      local set, clear = {}, {}
      for x = 1, 3 do
        local v = o[x + 3]
        if v ~= '' then
          set[#set + 1] = OUTPUTS[x]
          set[#set + 1] = v
        elseif x > 1 then
          clear[#clear + 1] = OUTPUTS[x]
        end
      end
      if pre then -- stopped for a preemption: back to pending, the attempt not counted
        requeue_preempted(j)
      elseif kind == 'succeeded' then
        finish(j, 'succeeded', set, clear)
      elseif kind == 'failed' and j.attempts < j.max_attempts and not j.cancel then
        local due = NOW + math.max(tonumber(o[7]) or 0, 0)
        defer('ZADD', B .. 'delayed', due, j.id)
        move(j, 'retrying')
        set[#set + 1] = 'state'
        set[#set + 1] = 'retrying'
        set[#set + 1] = 'scheduled_at'
        set[#set + 1] = fmt(due)
        clear[#clear + 1] = 'lease_expires_at'
        redis.call('HSET', jkey(j.id), unpack(set))
        redis.call('HDEL', jkey(j.id), unpack(clear))
        wake(B .. 'wake:sched')
      elseif kind == 'cancelled' or (kind == 'failed' and j.cancel) then
        finish(j, 'cancelled', set, clear)
      else -- fatal, or failed with no attempts left
        finish(j, 'dead', set, clear)
      end
      acc[i] = 1
    end
  end
  return acc
end

-- The reply's copy of a job hash `h` (HGETALL) with fields `upd` (name -> value) set, as
-- HSET leaves it (new fields go last, in the order of `order`).
local function patched(h, upd, order)
  local seen = {}
  for i = 1, #h, 2 do
    local v = upd[h[i]]
    if v ~= nil then
      h[i + 1] = v
      seen[h[i]] = true
    end
  end
  for _, f in ipairs(order) do
    if not seen[f] and upd[f] ~= nil then
      h[#h + 1] = f
      h[#h + 1] = upd[f]
    end
  end
  return h
end

-- The node's queues under the leader's current claim grant (see "grant" in the header):
-- "\0q1\0q2\0", or nil when the node has no grant or the grant is not current.
local function granted_queues(node)
  local g = redis.call('HMGET', B .. 'grant', 'token', node)
  if not g[1] or not g[2] then
    return nil
  end
  local l = redis.call('HMGET', B .. 'lease:scheduler', 'token', 'expires_at')
  if l[1] ~= g[1] or (tonumber(l[2]) or 0) <= NOW then
    return nil -- no current leader, or another one since: placement decides
  end
  return g[2]
end

local CLAIM_ORDER = { 'state', 'node_id', 'token', 'attempts', 'started_at',
  'lease_expires_at' }
-- Claim up to `want` plain jobs from the head of "pending" for `node` (live, granted):
-- in placement order, stopping at the first job that is not plain (resources, labels,
-- affinity, limits, parents) or not of a granted queue, so no job overtakes another.
-- Appends {id, HGETALL job} to `out` and ids to `ids`; returns how many. Caller flushes.
local function do_claim(node, want, exp, exps, out, ids, keep)
  local queues = granted_queues(node)
  if not queues then
    return 0
  end
  local members = redis.call('ZRANGEBYLEX', K_PENDING, '-', '+', 'LIMIT', 0, want)
  local take = {}
  for _, mem in ipairs(members) do
    local a = string.find(mem, '\0', 21, true)
    if not a then
      break -- a member an older rota wrote: the scheduler rewrites it
    end
    local b = string.find(mem, '\0', a + 1, true)
    local queue = string.sub(mem, a + 1, b - 1)
    if string.sub(mem, b + 1, b + 1) ~= '\0'
        or not string.find(queues, '\0' .. queue .. '\0', 1, true) then
      break
    end
    local id = string.sub(mem, 21, a - 1)
    local h = redis.call('HGETALL', jkey(id))
    local f = {}
    for i = 1, #h, 2 do
      f[h[i]] = h[i + 1]
    end
    if f.state ~= 'pending' or f.depends_on then
      break
    end
    take[#take + 1] = { id, queue, h, (tonumber(f.attempts) or 0) + 1, mem }
  end
  local n = #take
  if n == 0 then
    return 0
  end
  local token = take_tokens(n) -- never below the clock floor (see take_tokens)
  local rk, nrk = B .. 'running', B .. 'nrunning:' .. node
  for _, t in ipairs(take) do
    local id, queue = t[1], t[2]
    token = token + 1
    defer('ZREM', K_PENDING, t[5])
    defer('SADD', nrk, id)
    defer('ZADD', rk, exp, id)
    count(queue, 'pending', -1)
    count(queue, 'running', 1)
    local upd = { state = 'running', node_id = node, token = string.format('%d', token),
      attempts = tostring(t[4]), started_at = NOWS, lease_expires_at = exps }
    redis.call('HSET', jkey(id), 'state', 'running', 'node_id', node, 'token', upd.token,
      'attempts', upd.attempts, 'started_at', NOWS, 'lease_expires_at', exps)
    open_attempt(id, token, t[4], node, keep)
    out[#out + 1] = id
    out[#out + 1] = patched(t[3], upd, CLAIM_ORDER)
    ids[#ids + 1] = id
  end
  return n
end

-- Whether the node holds a current grant and the head of "pending" is a job it may claim.
local function head_claimable(node)
  local queues = granted_queues(node)
  if not queues then
    return false
  end
  local m = redis.call('ZRANGEBYLEX', K_PENDING, '-', '+', 'LIMIT', 0, 1)[1]
  if not m then
    return false
  end
  local a = string.find(m, '\0', 21, true)
  local b = a and string.find(m, '\0', a + 1, true)
  return b ~= nil and string.sub(m, b + 1, b + 1) == '\0'
    and string.find(queues, '\0' .. string.sub(m, a + 1, b - 1) .. '\0', 1, true) ~= nil
end

-- Start up to `limit` jobs for the node: its assigned jobs first (priority then FIFO),
-- then, under a current claim grant, plain pending jobs (do_claim). Returns {id, HGETALL
-- job}... of the jobs started (each hash read once, for the check and the reply, and
-- brought up to date in Lua), the list of their ids (to memoize) and how many were
-- claimed from "pending". Caller flushes.
local function do_start(node, limit, ttl, keep)
  local out, ids = {}, {}
  local ns = redis.call('HGET', B .. 'node:' .. node, 'state')
  if (ns ~= 'live' and ns ~= 'draining') or limit <= 0 then
    return out, ids, 0
  end
  local ak = B .. 'nassigned:' .. node
  local members = redis.call('ZRANGEBYLEX', ak, '-', '+', 'LIMIT', 0, limit)
  local exp = NOW + ttl
  local exps = fmt(exp)
  local rk, nrk = B .. 'running', B .. 'nrunning:' .. node
  for _, mem in ipairs(members) do
    defer('ZREM', ak, mem)
    local id = string.sub(mem, 21)
    local h = redis.call('HGETALL', jkey(id))
    local st, nd, queue, attempts, tk
    for i = 1, #h, 2 do
      local f = h[i]
      if f == 'state' then
        st = h[i + 1]
      elseif f == 'token' then
        tk = h[i + 1]
      elseif f == 'node_id' then
        nd = h[i + 1]
      elseif f == 'attempts' then
        attempts = h[i + 1]
      elseif f == 'queue' then
        queue = h[i + 1]
      end
    end
    if st == 'assigned' and nd == node then
      local a = tostring((tonumber(attempts) or 0) + 1)
      defer('SADD', nrk, id)
      defer('ZADD', rk, exp, id)
      count(queue, 'assigned', -1)
      count(queue, 'running', 1)
      redis.call('HSET', jkey(id), 'state', 'running', 'attempts', a, 'started_at', NOWS,
        'lease_expires_at', exps)
      open_attempt(id, tk or 0, a, node, keep)
      out[#out + 1] = id
      out[#out + 1] = patched(h, { state = 'running', attempts = a, started_at = NOWS,
        lease_expires_at = exps }, CLAIM_ORDER)
      ids[#ids + 1] = id
    end
  end
  local claimed = 0
  if #ids < limit and ns == 'live' then
    claimed = do_claim(node, limit - #ids, exp, exps, out, ids, keep)
  end
  return out, ids, claimed
end

-- name: register_node
-- ARGV[3..11] = id, name, slots, prefetch, resources, labels, queues (JSON), host, pid
local id = ARGV[3]
local k = B .. 'node:' .. id
redis.call('HSET', k, 'name', ARGV[4], 'slots', ARGV[5], 'prefetch', ARGV[6],
  'resources', ARGV[7], 'labels', ARGV[8], 'queues', ARGV[9], 'host', ARGV[10],
  'pid', ARGV[11], 'state', 'live', 'registered_at', NOWS, 'heartbeat_at', NOWS)
redis.call('HDEL', k, 'gone_at')
redis.call('SADD', B .. 'nodes', id)
redis.call('ZADD', B .. 'nodes:alive', NOW, id)
redis.call('ZREM', B .. 'nodes:gone', id)
redis.call('SREM', B .. 'nodes:orphaned', id)
wake(B .. 'wake:sched')
flush()
return 1

-- name: set_node_state
-- ARGV[3] = node id, ARGV[4] = live | draining | stopped | dead. Returns 0 if unknown.
local id, state = ARGV[3], ARGV[4]
local k = B .. 'node:' .. id
local cur = redis.call('HGET', k, 'state')
if not cur then
  return 0
end
if state == 'live' or state == 'draining' then
  redis.call('HSET', k, 'state', state)
  redis.call('HDEL', k, 'gone_at')
  if cur == 'dead' or cur == 'stopped' then
    redis.call('HSET', k, 'heartbeat_at', NOWS)
    redis.call('ZADD', B .. 'nodes:alive', NOW, id)
  end
  redis.call('ZREM', B .. 'nodes:gone', id)
  redis.call('SREM', B .. 'nodes:orphaned', id)
else
  redis.call('HSET', k, 'state', state, 'gone_at', NOWS)
  redis.call('ZADD', B .. 'nodes:gone', NOW, id)
  redis.call('ZREM', B .. 'nodes:alive', id)
  if redis.call('ZCARD', B .. 'nassigned:' .. id) > 0
      or redis.call('SCARD', B .. 'nrunning:' .. id) > 0 then
    redis.call('SADD', B .. 'nodes:orphaned', id) -- the next reap takes its jobs back
  end
end
wake(B .. 'wake:sched')
flush()
return 1

-- name: list_nodes
-- Every node: {id, HGETALL node, #assigned, #running, HGETALL used}...
return node_rows()

-- name: heartbeat
-- ARGV[3] = node id, ARGV[4] = lease ttl, ARGV[5..] = job id, token pairs.
-- Returns {alive, {lost ids}, {cancel-requested ids}}.
local node = ARGV[3]
local k = B .. 'node:' .. node
local st = redis.call('HGET', k, 'state')
local lost, cancel = {}, {}
if not st or st == 'dead' then
  for i = 5, #ARGV, 2 do
    lost[#lost + 1] = ARGV[i]
  end
  return { 0, lost, cancel }
end
redis.call('HSET', k, 'heartbeat_at', NOWS)
if st == 'live' or st == 'draining' then
  redis.call('ZADD', B .. 'nodes:alive', NOW, node)
end
local exp = NOW + tonumber(ARGV[4])
local exps = fmt(exp)
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local v = redis.call('HMGET', jkey(id), 'state', 'node_id', 'token')
  if v[1] == 'running' and v[2] == node and tonumber(v[3]) == tonumber(ARGV[i + 1]) then
    redis.call('HSET', jkey(id), 'lease_expires_at', exps)
    defer('ZADD', B .. 'running', exp, id)
  else
    lost[#lost + 1] = id
  end
end
flush()
for _, id in ipairs(redis.call('SMEMBERS', B .. 'nrunning:' .. node)) do
  if redis.call('HGET', jkey(id), 'cancel_requested') == '1' then
    cancel[#cancel + 1] = id
  end
end
return { 1, lost, cancel }

-- name: start_jobs
-- ARGV[3] = node id, ARGV[4] = limit, ARGV[5] = lease ttl, ARGV[6] = attempts kept per job.
-- Returns {id, HGETALL job}... of the jobs started, highest priority then oldest first.
local m = memo_get()
if m then
  return records(m)
end
local out, ids = do_start(ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
flush()
memo_set(ids)
return out

-- name: complete
-- ARGV[3] = JSON list of [id, token, kind, result, error, traceback, retry_delay,
-- cut_short] ("" = none). Returns 1/0 per outcome: accepted only if running with that token.
local m = memo_get()
if m then
  return m
end
local acc = do_complete(cjson.decode(ARGV[3]))
flush()
memo_set(acc)
return acc

-- name: complete_and_start
-- ARGV[3] = outcomes as for complete, ARGV[4] = node id, ARGV[5] = limit, ARGV[6] = lease
-- ttl, ARGV[7] = attempts kept per job: complete, then start_jobs, in one script. Returns {{1/0 per outcome}, {id, HGETALL
-- job}...}.
local m = memo_get()
if m then
  return { m[1], records(m[2]) }
end
local acc = do_complete(cjson.decode(ARGV[3]))
local limit = tonumber(ARGV[5])
local out, ids = do_start(ARGV[4], limit, tonumber(ARGV[6]), tonumber(ARGV[7]))
if #ids >= limit and ONLY_PLAIN and head_claimable(ARGV[4]) then
  -- The room the outcomes freed is filled again and the node claims what comes next
  -- itself: nothing for the scheduler to do (its idle cycle still looks at the rest).
  WAKE[K_WAKE_SCHED] = nil
end
flush()
memo_set({ acc, ids })
return { acc, out }

-- name: release_jobs
-- ARGV[3] = node id, ARGV[4..] = job id, token pairs. Back to pending, attempt not counted.
local m = memo_get()
if m then
  return m
end
local node = ARGV[3]
local n = 0
for i = 4, #ARGV, 2 do
  local j = load(ARGV[i])
  if j and j.node == node and j.token == tonumber(ARGV[i + 1])
      and (j.state == 'assigned' or j.state == 'running') then
    local k = jkey(j.id)
    local pre = j.state == 'running' and preempting(j)
    if j.state == 'running' then
      close_attempt(j.id, j.token, 'released', 'shutdown')
    end
    leave_node(j)
    if j.state == 'running' then
      redis.call('HSET', k, 'attempts', math.max(j.attempts - 1, 0))
    end
    if j.cancel and not pre then -- an operator asked to cancel it: do not run it again
      finish(j, 'cancelled', { 'error', 'cancelled' })
    else
      if pre then
        redis.call('HINCRBY', k, 'preemptions', 1)
      end
      to_pending(j, { 'node_id', 'lease_expires_at', 'started_at', 'cancel_requested' })
    end
    n = n + 1
  end
end
flush()
memo_set(n)
return n
