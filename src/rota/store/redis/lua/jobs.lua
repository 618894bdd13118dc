-- Job records and their transitions, shared by the scripts: load a job, move it between
-- states and indexes, release a node's hold on it, finish it, take it back from a node,
-- purge it.

-- The fields of a job that transitions read; hot paths ask for fewer (state comes first).
-- concurrency_key, children and unique_key are read by every load that may lead to
-- leave_node() or finish(), which keep "concurrency", "settle" and "unique:*" true.
local FULL = { 'state', 'queue', 'seq', 'priority', 'node_id', 'token', 'attempts',
  'max_attempts', 'resources', 'cancel_requested', 'concurrency_key', 'children', 'unique_key' }
-- A job table from the values `v` an HMGET of `fields` returned for job `id`.
local function from_fields(id, fields, v)
  local j = { id = id }
  for i = 1, #fields do
    j[fields[i]] = v[i]
  end
  j.seq = tonumber(j.seq)
  j.token = tonumber(j.token or 0)
  j.attempts = tonumber(j.attempts or 0)
  j.max_attempts = tonumber(j.max_attempts or 1)
  j.node = j.node_id
  j.cancel = j.cancel_requested == '1'
  return j
end

local function load(id, fields)
  fields = fields or FULL
  local v = redis.call('HMGET', jkey(id), unpack(fields))
  if not v[1] then
    return nil
  end
  return from_fields(id, fields, v)
end

-- Move job j to state `to` in the state index and the counters (not in its hash).
local function move(j, to)
  local mv = MOVED[j.id]
  if mv then
    mv.to = to
  else
    MOVED[j.id] = { from = j.state, to = to, seq = j.seq }
  end
  count(j.queue, j.state, -1)
  count(j.queue, to, 1)
  j.state = to
end

local function usage_of(node, resources, sign)
  for name, qty in pairs(resources) do
    redis.call('HINCRBYFLOAT', B .. 'nused:' .. node, name, sign * qty)
  end
end

local function usage(node, resources, sign)
  if resources and resources ~= '' then
    usage_of(node, cjson.decode(resources), sign)
  end
end

-- Take an assigned or running job off its node (sets, lease, used resources).
local function leave_node(j)
  local n = j.node
  if not n then
    return
  end
  if j.state == 'assigned' then
    defer('ZREM', key_of('nassigned:', n), rank(j.priority, j.seq) .. j.id)
  elseif j.state == 'running' then
    defer('SREM', key_of('nrunning:', n), j.id)
    defer('ZREM', K_RUNNING, j.id)
  end
  if j.resources then
    usage(n, j.resources, -1)
    EMPTIED[n] = true
  end
  if j.concurrency_key then
    conc(j.concurrency_key, -1)
  end
end

-- Put job j (already off any node and out of "delayed") in pending; `clear` = fields to
-- delete from its hash.
local function to_pending(j, clear)
  defer('ZADD', B .. 'pending', 0, pmember_of(j.id))
  move(j, 'pending')
  redis.call('HSET', jkey(j.id), 'state', 'pending')
  if clear then
    redis.call('HDEL', jkey(j.id), unpack(clear))
  end
  wake(B .. 'wake:sched')
end

-- Whether job j (loaded: cancel set) has a preemption pending: cancel_requested, and
-- preempted_at >= started_at (see Store.preempt; an operator's cancel clears preempted_at).
local function preempting(j)
  if not j.cancel then
    return false
  end
  local v = redis.call('HMGET', jkey(j.id), 'preempted_at', 'started_at')
  return v[1] ~= false and v[2] ~= false and tonumber(v[1]) >= tonumber(v[2])
end

-- Job j, stopped for a preemption (already off its node, its attempt closed): back to
-- pending, the attempt not counted, preemptions + 1.
local function requeue_preempted(j)
  local k = jkey(j.id)
  redis.call('HSET', k, 'attempts', math.max(j.attempts - 1, 0))
  redis.call('HINCRBY', k, 'preemptions', 1)
  to_pending(j, { 'node_id', 'lease_expires_at', 'started_at', 'cancel_requested', 'traceback' })
end

-- Make job j (already off any node, out of pending/delayed) final in state `to`, setting
-- the fields in `set` ({name, value, ...}) and deleting those in `clear` as well.
local function finish(j, to, set, clear)
  local k = jkey(j.id)
  move(j, to)
  if set and #set > 0 then
    local f = { 'state', to, 'finished_at', NOWS }
    for i = 1, #set do
      f[i + 4] = set[i]
    end
    redis.call('HSET', k, unpack(f))
  else
    redis.call('HSET', k, 'state', to, 'finished_at', NOWS)
  end
  if clear and #clear > 0 then
    local c = { 'lease_expires_at' }
    for i = 1, #clear do
      c[i + 1] = clear[i]
    end
    redis.call('HDEL', k, unpack(c))
  else
    redis.call('HDEL', k, 'lease_expires_at')
  end
  defer('ZADD', K_FINISHED, NOW, j.id .. '\0' .. to .. ':' .. j.queue)
  if TTL > 0 then
    redis.call('EXPIRE', k, CEIL_TTL)
    redis.call('EXPIRE', akey(j.id), CEIL_TTL)
  end
  if j.children then -- some job depends on it: resolve_dependencies looks at them
    defer('ZADD', B .. 'settle', NOW, j.id)
  end
  if j.unique_key then -- let the key go (unless another job took it meanwhile)
    local u = B .. 'unique:' .. j.unique_key
    if redis.call('GET', u) == j.id then
      redis.call('DEL', u)
    end
  end
  WATCHED[#WATCHED + 1] = j.id
  wake(K_WAKE_SCHED)
end

-- A running job whose holder is gone: the attempt counts; pending again or dead (or
-- cancelled, if an operator asked for that). Returns the new state.
local function take_back(j, why)
  local k = jkey(j.id)
  close_attempt(j.id, j.token, 'lost', why == 'lease expired' and 'lease_expired' or 'node_lost',
    'lease lost: ' .. why)
  local pre = preempting(j)
  leave_node(j)
  if j.cancel and not pre then
    finish(j, 'cancelled', { 'error', 'cancelled (' .. why .. ')' })
  elseif j.attempts < j.max_attempts then
    redis.call('HSET', k, 'error', 'lease lost: ' .. why)
    to_pending(j, { 'node_id', 'lease_expires_at', 'cancel_requested' })
  else
    finish(j, 'dead', { 'error', 'lease lost on the last attempt: ' .. why })
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
      to_pending(j, { 'node_id' })
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
  redis.call('DEL', jkey(id), B .. 'done:' .. id, B .. 'children:' .. id, akey(id))
  redis.call('ZREM', B .. 'jobs', id)
  redis.call('ZREM', B .. 'state:' .. state, id)
  count(queue, state, -1)
  return 1
end

local function record(id)
  return redis.call('HGETALL', jkey(id))
end

local function records(ids)
  local out = {}
  for _, id in ipairs(ids) do
    out[#out + 1] = id
    out[#out + 1] = record(id)
  end
  return out
end
