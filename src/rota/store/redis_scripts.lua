--[[ rota's Redis store: every state change is one of the scripts below.

redis.py splits this file at the "-- name: X" marker lines and registers each script with
the "lib" section (helpers, TIME, the common arguments) prepended. Every script gets
KEYS[1] = B, the key base "<prefix>:{<prefix>}:" (so every key of an app shares one hash
slot), ARGV[1] = a request id (replies of non-idempotent scripts are memoized under it so
a command replayed after a dropped connection does not run twice) and ARGV[2] = the result
TTL in seconds (0: final jobs never expire); ARGV[3..] are the script's own arguments.
Time is always Redis' TIME, stored as unix seconds ("%.6f").

Key layout (every key starts with B; <st> is a job state, <q> a queue):

  B.."seq"              string  last job sequence number (INCRBY by submit)
  B.."job:"..id         hash    the job: task queue payload priority state attempts
                                max_attempts timeout resources labels affinity backoff_base
                                backoff_max created_at scheduled_at node_id token started_at
                                finished_at lease_expires_at result error traceback
                                cancel_requested seq (missing field = None/empty).
                                Written by every job script; EXPIRE result TTL once final.
  B.."jobs"             zset    seq -> id: every stored job (submit adds, purge removes)
  B.."state:"..st       zset    seq -> id: jobs in state st (every transition moves it)
  B.."counts"           hash    "<st>:<q>" -> number of jobs (every transition)
  B.."pending"          zset    all scores 0, member rank..id (rank = 8 hex of
                                2^31-1-priority, 12 hex of seq): placement order, read
                                with ZRANGEBYLEX. submit/promote/release/reap/retry add,
                                assign/cancel remove.
  B.."delayed"          zset    due time -> id: scheduled and retrying jobs
                                (submit/complete add, promote_due/cancel remove)
  B.."running"          zset    lease_expires_at -> id: running jobs (start_jobs adds,
                                heartbeat extends, complete/reap/release/cancel remove)
  B.."finished"         zset    finished_at -> id.."\0"..st..":"..q: final jobs, for
                                result expiry (in reap) and prune
  B.."done:"..id        list    one element pushed when the job becomes final (TTL 300 s):
                                wait_for_results blocks on it with BLMOVE (non-consuming)
  B.."node:"..id        hash    name slots prefetch resources labels queues host pid
                                state registered_at heartbeat_at gone_at
                                (register_node, heartbeat, set_node_state, reap)
  B.."nodes"            set     every node id (register_node adds, prune removes)
  B.."nodes:alive"      zset    heartbeat_at -> node id: live and draining nodes (reap
                                reads the silent ones from the low end)
  B.."nodes:gone"       zset    gone_at -> node id: dead and stopped nodes (for prune)
  B.."nodes:orphaned"   set     nodes set dead/stopped by set_node_state while holding
                                jobs: the next reap takes those jobs back
  B.."nassigned:"..id   zset    rank..job id: the node's assigned jobs (assign adds,
                                start_jobs takes them in priority-then-FIFO order)
  B.."nrunning:"..id    set     the node's running job ids
  B.."nused:"..id       hash    resource -> quantity held by the node's assigned + running
                                jobs (HINCRBYFLOAT; deleted when the node holds nothing)
  B.."wake:sched"       list    <= 1 element: LPUSH+LTRIM by scripts that create placement
                                work; wait_for_pending BLPOPs it
  B.."wake:node:"..id   list    <= 1 element: LPUSH+LTRIM by assign and cancel;
                                wait_for_assignments BLPOPs it
  B.."lease:"..name     hash    holder token expires_at acquired_at (token survives
                                release and expiry so the next holder gets a higher one)
  B.."stats:"..name     string  JSON document (put_stats)
  B.."req:"..rid        string  memoized reply of a request, TTL 120 s
]]

-- name: lib
local B = KEYS[1]
local RID = ARGV[1]
local TTL = tonumber(ARGV[2]) or 0
local DONE_TTL = 300
local MEMO_TTL = 120
local T = redis.call('TIME')
local NOW = tonumber(T[1]) + tonumber(T[2]) / 1000000

local function fmt(t)
  return string.format('%.6f', t)
end
local NOWS = fmt(NOW)

local function jkey(id)
  return B .. 'job:' .. id
end

-- Sort key of a job in "pending" and "nassigned:*": priority descending, then seq.
local function rank(priority, seq)
  local p = tonumber(priority) or 0
  if p > 2147483647 then
    p = 2147483647
  elseif p < -2147483648 then
    p = -2147483648
  end
  return string.format('%08x%012x', 2147483647 - p, tonumber(seq))
end

local COUNTS = {}
local function count(queue, state, delta)
  local f = state .. ':' .. queue
  COUNTS[f] = (COUNTS[f] or 0) + delta
end
local function flush_counts()
  for f, d in pairs(COUNTS) do
    if d ~= 0 then
      if redis.call('HINCRBY', B .. 'counts', f, d) <= 0 then
        redis.call('HDEL', B .. 'counts', f)
      end
    end
  end
  COUNTS = {}
end

local WAKE = {}
local function wake(key)
  WAKE[key] = true
end
local function flush_wakes()
  for k in pairs(WAKE) do
    redis.call('LPUSH', k, '1')
    redis.call('LTRIM', k, 0, 0)
  end
  WAKE = {}
end

local function memo_get()
  if RID == '' then
    return nil
  end
  local m = redis.call('GET', B .. 'req:' .. RID)
  if m then
    return cjson.decode(m)
  end
  return nil
end
local function memo_set(value)
  if RID ~= '' then
    redis.call('SET', B .. 'req:' .. RID, cjson.encode(value), 'EX', MEMO_TTL)
  end
end

-- Raise LeaseLost (as an error reply) unless the lease in ARGV[3..5] is current.
local function fence()
  local name, holder, token = ARGV[3], ARGV[4], tonumber(ARGV[5])
  local v = redis.call('HMGET', B .. 'lease:' .. name, 'holder', 'token', 'expires_at')
  if v[1] ~= holder or tonumber(v[2]) ~= token or tonumber(v[3]) <= NOW then
    return redis.error_reply('ROTA_LEASE_LOST lease ' .. name .. ' token ' .. ARGV[5] ..
      ' of ' .. holder .. ' is no longer current')
  end
  return nil
end

local F = { 'state', 'queue', 'seq', 'priority', 'node_id', 'token', 'attempts',
  'max_attempts', 'resources', 'cancel_requested' }
local function load(id)
  local v = redis.call('HMGET', jkey(id), unpack(F))
  if not v[1] then
    return nil
  end
  return {
    id = id, state = v[1], queue = v[2], seq = tonumber(v[3]), priority = v[4],
    node = v[5], token = tonumber(v[6] or '0'), attempts = tonumber(v[7] or '0'),
    max_attempts = tonumber(v[8] or '1'), resources = v[9], cancel = v[10] == '1',
  }
end

-- Move job j to state `to` in the state index and the counters, and in its hash.
local function move(j, to)
  redis.call('ZREM', B .. 'state:' .. j.state, j.id)
  redis.call('ZADD', B .. 'state:' .. to, j.seq, j.id)
  count(j.queue, j.state, -1)
  count(j.queue, to, 1)
  j.state = to
end

local function usage(node, resources, sign)
  if resources and resources ~= '' then
    for name, qty in pairs(cjson.decode(resources)) do
      redis.call('HINCRBYFLOAT', B .. 'nused:' .. node, name, sign * qty)
    end
  end
end

-- Take an assigned or running job off its node (sets, lease, used resources).
local function leave_node(j)
  local n = j.node
  if not n then
    return
  end
  if j.state == 'assigned' then
    redis.call('ZREM', B .. 'nassigned:' .. n, rank(j.priority, j.seq) .. j.id)
  elseif j.state == 'running' then
    redis.call('SREM', B .. 'nrunning:' .. n, j.id)
    redis.call('ZREM', B .. 'running', j.id)
  end
  usage(n, j.resources, -1)
  if j.resources and redis.call('ZCARD', B .. 'nassigned:' .. n) == 0
      and redis.call('SCARD', B .. 'nrunning:' .. n) == 0 then
    redis.call('DEL', B .. 'nused:' .. n) -- no float drift once the node is empty
  end
end

-- Put job j (already off any node and out of "delayed") in pending.
local function to_pending(j)
  redis.call('ZADD', B .. 'pending', 0, rank(j.priority, j.seq) .. j.id)
  move(j, 'pending')
  redis.call('HSET', jkey(j.id), 'state', 'pending')
  wake(B .. 'wake:sched')
end

-- Make job j (already off any node, out of pending/delayed) final in state `to`.
local function finish(j, to)
  local k = jkey(j.id)
  move(j, to)
  redis.call('HSET', k, 'state', to, 'finished_at', NOWS)
  redis.call('HDEL', k, 'lease_expires_at')
  redis.call('ZADD', B .. 'finished', NOW, j.id .. '\0' .. to .. ':' .. j.queue)
  if TTL > 0 then
    redis.call('EXPIRE', k, math.ceil(TTL))
  end
  local d = B .. 'done:' .. j.id
  redis.call('DEL', d)
  redis.call('RPUSH', d, '1')
  redis.call('EXPIRE', d, DONE_TTL)
  wake(B .. 'wake:sched')
end

-- A running job whose holder is gone: the attempt counts; pending again or dead (or
-- cancelled, if an operator asked for that). Returns the new state.
local function take_back(j, why)
  local k = jkey(j.id)
  leave_node(j)
  redis.call('HDEL', k, 'lease_expires_at')
  if j.cancel then
    redis.call('HSET', k, 'error', 'cancelled (' .. why .. ')')
    finish(j, 'cancelled')
  elseif j.attempts < j.max_attempts then
    redis.call('HSET', k, 'error', 'lease lost: ' .. why)
    redis.call('HDEL', k, 'node_id')
    to_pending(j)
  else
    redis.call('HSET', k, 'error', 'lease lost on the last attempt: ' .. why)
    finish(j, 'dead')
  end
  return j.state
end

-- Take back every job a lost node holds. Returns requeued, retried, dead.
local function take_back_node(node, why)
  local requeued, retried, dead = 0, 0, 0
  local ak = B .. 'nassigned:' .. node
  for _, mem in ipairs(redis.call('ZRANGE', ak, 0, -1)) do
    local j = load(string.sub(mem, 21))
    if j and j.state == 'assigned' and j.node == node then
      leave_node(j)
      redis.call('HDEL', jkey(j.id), 'node_id')
      to_pending(j)
      requeued = requeued + 1
    else
      redis.call('ZREM', ak, mem)
    end
  end
  for _, id in ipairs(redis.call('SMEMBERS', B .. 'nrunning:' .. node)) do
    local j = load(id)
    if j and j.state == 'running' and j.node == node then
      if take_back(j, why) == 'pending' then
        retried = retried + 1
      else
        dead = dead + 1
      end
    else
      redis.call('SREM', B .. 'nrunning:' .. node, id)
    end
  end
  redis.call('DEL', B .. 'nused:' .. node)
  return requeued, retried, dead
end

-- Delete a final job (member of "finished") and its index entries.
local function purge(member)
  local id, rest = string.match(member, '^(.-)%z(.*)$')
  redis.call('ZREM', B .. 'finished', member)
  if not id then
    return 0
  end
  local state, queue = string.match(rest, '^([^:]*):(.*)$')
  redis.call('DEL', jkey(id), B .. 'done:' .. id)
  redis.call('ZREM', B .. 'jobs', id)
  redis.call('ZREM', B .. 'state:' .. state, id)
  count(queue, state, -1)
  return 1
end

local function record(id)
  return redis.call('HGETALL', jkey(id))
end

-- name: submit
-- ARGV[3] = JSON list of [id, task, queue, payload, priority, max_attempts, timeout,
--   resources, labels, affinity, backoff_base, backoff_max, delay, eta] ("" = none).
-- All or none: a duplicate id refuses the whole batch before anything is written.
if RID ~= '' and redis.call('EXISTS', B .. 'req:' .. RID) == 1 then
  return 0 -- replay of a submit that was stored
end
local jobs = cjson.decode(ARGV[3])
local n = #jobs
local seen = {}
for i = 1, n do
  local id = jobs[i][1]
  if seen[id] or redis.call('EXISTS', jkey(id)) == 1 then
    return redis.error_reply('ROTA_DUPLICATE job id ' .. id .. ' already exists')
  end
  seen[id] = true
end
local first = redis.call('INCRBY', B .. 'seq', n) - n
local pmem, pend, sched, delayed = {}, {}, {}, {}
local function flush_zadd(key, t)
  if #t > 0 then
    redis.call('ZADD', key, unpack(t))
  end
end
for i = 1, n do
  local a = jobs[i]
  local id, queue = a[1], a[3]
  local seq = first + i
  local due = NOW + (tonumber(a[13]) or 0)
  if a[14] ~= '' then
    due = tonumber(a[14])
  end
  local state = 'pending'
  if due > NOW then
    state = 'scheduled'
  end
  local f = { 'task', a[2], 'queue', queue, 'payload', a[4], 'priority', a[5],
    'state', state, 'attempts', 0, 'max_attempts', a[6], 'backoff_base', a[11],
    'backoff_max', a[12], 'created_at', NOWS, 'scheduled_at', fmt(due), 'token', 0,
    'seq', seq }
  if a[7] ~= '' then
    f[#f + 1] = 'timeout'; f[#f + 1] = a[7]
  end
  if a[8] ~= '' then
    f[#f + 1] = 'resources'; f[#f + 1] = a[8]
  end
  if a[9] ~= '' then
    f[#f + 1] = 'labels'; f[#f + 1] = a[9]
  end
  if a[10] ~= '' then
    f[#f + 1] = 'affinity'; f[#f + 1] = a[10]
  end
  if state == 'scheduled' then
    sched[#sched + 1] = seq; sched[#sched + 1] = id
    delayed[#delayed + 1] = due; delayed[#delayed + 1] = id
  else
    pend[#pend + 1] = seq; pend[#pend + 1] = id
    pmem[#pmem + 1] = 0; pmem[#pmem + 1] = rank(a[5], seq) .. id
  end
  redis.call('HSET', jkey(id), unpack(f))
  count(queue, state, 1)
  if i % 2000 == 0 or i == n then -- unpack() has a stack limit: flush in chunks
    flush_zadd(B .. 'pending', pmem)
    flush_zadd(B .. 'state:pending', pend)
    flush_zadd(B .. 'state:scheduled', sched)
    flush_zadd(B .. 'delayed', delayed)
    local ix = {}
    for k = i - ((i - 1) % 2000), i do
      ix[#ix + 1] = first + k; ix[#ix + 1] = jobs[k][1]
    end
    redis.call('ZADD', B .. 'jobs', unpack(ix))
    pmem, pend, sched, delayed = {}, {}, {}, {}
  end
end
flush_counts()
wake(B .. 'wake:sched')
flush_wakes()
if RID ~= '' then
  redis.call('SET', B .. 'req:' .. RID, '1', 'EX', MEMO_TTL)
end
return n

-- name: cancel
-- ARGV[3] = job id. Returns the state after the call, or nil if there is no such job.
local j = load(ARGV[3])
if not j then
  return false
end
local s = j.state
if s == 'succeeded' or s == 'dead' or s == 'cancelled' then
  return s
end
if s == 'running' then
  redis.call('HSET', jkey(j.id), 'cancel_requested', '1')
  if j.node then
    wake(B .. 'wake:node:' .. j.node)
  end
  flush_wakes()
  return s
end
if s == 'scheduled' or s == 'retrying' then
  redis.call('ZREM', B .. 'delayed', j.id)
elseif s == 'pending' then
  redis.call('ZREM', B .. 'pending', rank(j.priority, j.seq) .. j.id)
elseif s == 'assigned' then
  leave_node(j)
  wake(B .. 'wake:node:' .. j.node)
end
redis.call('HSET', jkey(j.id), 'error', 'cancelled')
finish(j, 'cancelled')
flush_counts()
flush_wakes()
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
    redis.call('DEL', B .. 'done:' .. j.id)
    redis.call('HSET', k, 'attempts', 0, 'scheduled_at', NOWS)
    redis.call('HDEL', k, 'finished_at', 'started_at', 'node_id', 'cancel_requested')
    to_pending(j)
    n = n + 1
  end
end
flush_counts()
flush_wakes()
memo_set(n)
return n

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
wake(B .. 'wake:sched')
flush_wakes()
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
flush_wakes()
return 1

-- name: list_nodes
-- Every node: {id, HGETALL node, #assigned, #running, HGETALL used}...
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', B .. 'nodes')) do
  local h = redis.call('HGETALL', B .. 'node:' .. id)
  if #h > 0 then
    out[#out + 1] = { id, h, redis.call('ZCARD', B .. 'nassigned:' .. id),
      redis.call('SCARD', B .. 'nrunning:' .. id), redis.call('HGETALL', B .. 'nused:' .. id) }
  end
end
return out

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
    redis.call('ZADD', B .. 'running', exp, id)
  else
    lost[#lost + 1] = id
  end
end
for _, id in ipairs(redis.call('SMEMBERS', B .. 'nrunning:' .. node)) do
  if redis.call('HGET', jkey(id), 'cancel_requested') == '1' then
    cancel[#cancel + 1] = id
  end
end
return { 1, lost, cancel }

-- name: start_jobs
-- ARGV[3] = node id, ARGV[4] = limit, ARGV[5] = lease ttl.
-- Returns {id, HGETALL job}... of the jobs started, highest priority then oldest first.
local node = ARGV[3]
local ids = memo_get()
local ns = redis.call('HGET', B .. 'node:' .. node, 'state')
if not ids and ns ~= 'live' and ns ~= 'draining' then
  ids = {}
end
if not ids then
  ids = {}
  local ak = B .. 'nassigned:' .. node
  local members = redis.call('ZRANGEBYLEX', ak, '-', '+', 'LIMIT', 0, tonumber(ARGV[4]))
  local exp = NOW + tonumber(ARGV[5])
  local exps = fmt(exp)
  for _, mem in ipairs(members) do
    redis.call('ZREM', ak, mem)
    local j = load(string.sub(mem, 21))
    if j and j.state == 'assigned' and j.node == node then
      redis.call('SADD', B .. 'nrunning:' .. node, j.id)
      redis.call('ZADD', B .. 'running', exp, j.id)
      move(j, 'running')
      redis.call('HSET', jkey(j.id), 'state', 'running', 'attempts', j.attempts + 1,
        'started_at', NOWS, 'lease_expires_at', exps)
      ids[#ids + 1] = j.id
    end
  end
  flush_counts()
  memo_set(ids)
end
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = record(id)
end
return out

-- name: complete
-- ARGV[3] = JSON list of [id, token, kind, result, error, traceback, retry_delay]
-- ("" = none). Returns 1/0 per outcome: accepted only if running with that token.
local m = memo_get()
if m then
  return m
end
local outcomes = cjson.decode(ARGV[3])
local acc = {}
for i, o in ipairs(outcomes) do
  local j = load(o[1])
  if j and j.state == 'running' and j.token == tonumber(o[2]) then
    local k = jkey(j.id)
    local kind = o[3]
    leave_node(j)
    redis.call('HDEL', k, 'lease_expires_at')
    if o[5] ~= '' then
      redis.call('HSET', k, 'error', o[5])
    else
      redis.call('HDEL', k, 'error')
    end
    if o[6] ~= '' then
      redis.call('HSET', k, 'traceback', o[6])
    else
      redis.call('HDEL', k, 'traceback')
    end
    if kind == 'succeeded' then
      if o[4] ~= '' then
        redis.call('HSET', k, 'result', o[4])
      end
      finish(j, 'succeeded')
    elseif kind == 'failed' and j.attempts < j.max_attempts and not j.cancel then
      local due = NOW + math.max(tonumber(o[7]) or 0, 0)
      redis.call('ZADD', B .. 'delayed', due, j.id)
      move(j, 'retrying')
      redis.call('HSET', k, 'state', 'retrying', 'scheduled_at', fmt(due))
      wake(B .. 'wake:sched')
    elseif kind == 'cancelled' or (kind == 'failed' and j.cancel) then
      finish(j, 'cancelled')
    else -- fatal, or failed with no attempts left
      finish(j, 'dead')
    end
    acc[i] = 1
  else
    acc[i] = 0
  end
end
flush_counts()
flush_wakes()
memo_set(acc)
return acc

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
    leave_node(j)
    redis.call('HDEL', k, 'node_id', 'lease_expires_at', 'started_at')
    if j.state == 'running' then
      redis.call('HSET', k, 'attempts', math.max(j.attempts - 1, 0))
    end
    if j.cancel then -- an operator asked to cancel it: do not run it again
      redis.call('HSET', k, 'error', 'cancelled')
      finish(j, 'cancelled')
    else
      to_pending(j)
    end
    n = n + 1
  end
end
flush_counts()
flush_wakes()
memo_set(n)
return n

-- name: acquire_lease
-- ARGV[3] = name, ARGV[4] = holder, ARGV[5] = ttl.
-- Returns {holder, token, expires_at, acquired_at} or nil if someone else holds it.
local k = B .. 'lease:' .. ARGV[3]
local holder = ARGV[4]
local v = redis.call('HMGET', k, 'holder', 'token', 'expires_at', 'acquired_at')
local token = tonumber(v[2] or '0')
local exp = fmt(NOW + tonumber(ARGV[5]))
if v[1] and v[1] ~= '' and tonumber(v[3]) > NOW then
  if v[1] ~= holder then
    return false
  end
  redis.call('HSET', k, 'expires_at', exp)
  return { holder, token, exp, v[4] }
end
token = token + 1
redis.call('HSET', k, 'holder', holder, 'token', token, 'expires_at', exp, 'acquired_at', NOWS)
return { holder, token, exp, NOWS }

-- name: release_lease
-- ARGV[3] = name, ARGV[4] = holder, ARGV[5] = token.
local k = B .. 'lease:' .. ARGV[3]
local v = redis.call('HMGET', k, 'holder', 'token')
if v[1] == ARGV[4] and tonumber(v[2]) == tonumber(ARGV[5]) then
  redis.call('HSET', k, 'holder', '', 'expires_at', '0')
  return 1
end
return 0

-- name: get_lease
-- ARGV[3] = name. Returns {holder, token, expires_at, acquired_at} if held and unexpired.
local v = redis.call('HMGET', B .. 'lease:' .. ARGV[3], 'holder', 'token', 'expires_at',
  'acquired_at')
if v[1] and v[1] ~= '' and tonumber(v[3]) > NOW then
  return { v[1], tonumber(v[2]), v[3], v[4] }
end
return false

-- name: promote_due
-- ARGV[3..5] = lease, ARGV[6] = limit. Fenced. Due scheduled/retrying jobs -> pending.
local m = memo_get()
if m then
  return m
end
local e = fence()
if e then
  return e
end
local n = 0
local ids = redis.call('ZRANGEBYSCORE', B .. 'delayed', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[6]))
for _, id in ipairs(ids) do
  redis.call('ZREM', B .. 'delayed', id)
  local j = load(id)
  if j and (j.state == 'scheduled' or j.state == 'retrying') then
    to_pending(j)
    n = n + 1
  end
end
flush_counts()
WAKE = {} -- the caller is the scheduler itself
memo_set(n)
return n

-- name: reap
-- ARGV[3..5] = lease, ARGV[6] = failure timeout, ARGV[7] = max expired results to purge.
-- Fenced. Returns {{dead node ids}, requeued, retried, dead jobs}.
local m = memo_get()
if m then
  return m
end
local e = fence()
if e then
  return e
end
local dead_nodes = {}
local requeued, retried, dead_jobs = 0, 0, 0
local function add(a, b, c)
  requeued, retried, dead_jobs = requeued + a, retried + b, dead_jobs + c
end
local silent = redis.call('ZRANGEBYSCORE', B .. 'nodes:alive', '-inf',
  '(' .. fmt(NOW - tonumber(ARGV[6])))
for _, node in ipairs(silent) do
  dead_nodes[#dead_nodes + 1] = node
  redis.call('HSET', B .. 'node:' .. node, 'state', 'dead', 'gone_at', NOWS)
  redis.call('ZREM', B .. 'nodes:alive', node)
  redis.call('ZADD', B .. 'nodes:gone', NOW, node)
  add(take_back_node(node, 'node stopped heartbeating'))
end
for _, node in ipairs(redis.call('SMEMBERS', B .. 'nodes:orphaned')) do
  add(take_back_node(node, 'node ' .. node .. ' left'))
end
redis.call('DEL', B .. 'nodes:orphaned')
for _, id in ipairs(redis.call('ZRANGEBYSCORE', B .. 'running', '-inf', '(' .. fmt(NOW))) do
  local j = load(id)
  if j and j.state == 'running' then
    if take_back(j, 'lease expired') == 'pending' then
      add(0, 1, 0)
    else
      add(0, 0, 1)
    end
  else
    redis.call('ZREM', B .. 'running', id)
  end
end
if TTL > 0 then
  local old = redis.call('ZRANGEBYSCORE', B .. 'finished', '-inf', NOW - TTL, 'LIMIT', 0,
    tonumber(ARGV[7]))
  for _, mem in ipairs(old) do
    purge(mem)
  end
end
flush_counts()
WAKE = {}
local reply = { dead_nodes, requeued, retried, dead_jobs }
memo_set(reply)
return reply

-- name: pending_jobs
-- ARGV[3] = ZRANGEBYLEX start, ARGV[4] = limit.
-- Returns {id, queue, priority, seq, resources, labels, affinity}... ("" = none).
local members = redis.call('ZRANGEBYLEX', B .. 'pending', ARGV[3], '+', 'LIMIT', 0,
  tonumber(ARGV[4]))
local out = {}
for _, mem in ipairs(members) do
  local id = string.sub(mem, 21)
  local v = redis.call('HMGET', jkey(id), 'queue', 'priority', 'seq', 'resources', 'labels',
    'affinity')
  if v[1] then
    out[#out + 1] = id
    out[#out + 1] = v[1]
    out[#out + 1] = v[2]
    out[#out + 1] = v[3]
    out[#out + 1] = v[4] or ''
    out[#out + 1] = v[5] or ''
    out[#out + 1] = v[6] or ''
  end
end
return out

-- name: assign
-- ARGV[3..5] = lease, ARGV[6..] = job id, node id pairs. Fenced.
local m = memo_get()
if m then
  return m
end
local e = fence()
if e then
  return e
end
local node_state = {}
local n = 0
for i = 6, #ARGV, 2 do
  local id, node = ARGV[i], ARGV[i + 1]
  local ns = node_state[node]
  if ns == nil then
    ns = redis.call('HGET', B .. 'node:' .. node, 'state')
    node_state[node] = ns
  end
  if ns == 'live' then
    local j = load(id)
    if j and j.state == 'pending' then
      local r = rank(j.priority, j.seq) .. id
      redis.call('ZREM', B .. 'pending', r)
      redis.call('ZADD', B .. 'nassigned:' .. node, 0, r)
      usage(node, j.resources, 1)
      move(j, 'assigned')
      redis.call('HSET', jkey(id), 'state', 'assigned', 'node_id', node, 'token', j.token + 1)
      wake(B .. 'wake:node:' .. node)
      n = n + 1
    end
  end
end
flush_counts()
flush_wakes()
memo_set(n)
return n

-- name: prune
-- ARGV[3] = older than (seconds), ARGV[4] = max jobs this call.
-- Returns {jobs deleted, 1 if more may be left}.
local m = memo_get()
if m then
  return m
end
local cutoff = NOW - tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local old = redis.call('ZRANGEBYSCORE', B .. 'finished', '-inf', '(' .. fmt(cutoff), 'LIMIT', 0,
  limit)
local n = 0
for _, mem in ipairs(old) do
  n = n + purge(mem)
end
local gone = redis.call('ZRANGEBYSCORE', B .. 'nodes:gone', '-inf', '(' .. fmt(cutoff), 'LIMIT',
  0, limit)
for _, id in ipairs(gone) do
  if redis.call('ZCARD', B .. 'nassigned:' .. id) == 0
      and redis.call('SCARD', B .. 'nrunning:' .. id) == 0 then -- else: after the next reap
    redis.call('DEL', B .. 'node:' .. id, B .. 'nassigned:' .. id, B .. 'nrunning:' .. id,
      B .. 'nused:' .. id, B .. 'wake:node:' .. id)
    redis.call('SREM', B .. 'nodes', id)
    redis.call('ZREM', B .. 'nodes:gone', id)
  end
end
flush_counts()
local reply = { n, #old >= limit and 1 or 0 }
memo_set(reply)
return reply
