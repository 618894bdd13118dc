-- What the scheduler reads and writes to place jobs: pending pages, the placement
-- snapshot (promote due jobs + live nodes + first pending page), assign, reserved slots.

-- Every node: {id, HGETALL node, #assigned, #running, HGETALL used}...
local function node_rows()
  local out = {}
  for _, id in ipairs(redis.call('SMEMBERS', B .. 'nodes')) do
    local h = redis.call('HGETALL', B .. 'node:' .. id)
    if #h > 0 then
      out[#out + 1] = { id, h, redis.call('ZCARD', B .. 'nassigned:' .. id),
        redis.call('SCARD', B .. 'nrunning:' .. id), redis.call('HGETALL', B .. 'nused:' .. id) }
    end
  end
  return out
end

-- Every live node's state and load, not its spec (which changes only when the node
-- registers again, setting registered_at; the caller keeps specs by that): {id,
-- registered_at, heartbeat_at, #assigned, #running, HGETALL used}..., and their free room.
local function live_loads()
  local out, free = {}, 0
  for _, id in ipairs(redis.call('SMEMBERS', B .. 'nodes')) do
    local v = redis.call('HMGET', B .. 'node:' .. id, 'state', 'registered_at', 'heartbeat_at',
      'slots', 'prefetch')
    if v[1] == 'live' then
      local a = redis.call('ZCARD', B .. 'nassigned:' .. id)
      local r = redis.call('SCARD', B .. 'nrunning:' .. id)
      out[#out + 1] = { id, v[2], v[3], a, r, redis.call('HGETALL', B .. 'nused:' .. id) }
      free = free + math.max(0, tonumber(v[4]) + tonumber(v[5]) - a - r)
    end
  end
  return out, free
end

-- Pending jobs from ZRANGEBYLEX `start`: their members (which hold what placement needs).
-- A member written by an older rota (rank..id only) is rewritten on the way.
local function pending_rows(start, limit)
  local members = redis.call('ZRANGEBYLEX', B .. 'pending', start, '+', 'LIMIT', 0, limit)
  for i, mem in ipairs(members) do
    if not string.find(mem, '\0', 21, true) then
      local out = {}
      for k = 1, #members do
        local m = members[k]
        if k >= i and not string.find(m, '\0', 21, true) then
          redis.call('ZREM', B .. 'pending', m)
          local id = string.sub(m, 21)
          m = redis.call('HGET', jkey(id), 'state') == 'pending' and pmember_of(id) or nil
          if m then
            redis.call('ZADD', B .. 'pending', 0, m)
          end
        end
        out[#out + 1] = m or nil
      end
      return out
    end
  end
  return members
end

-- Move up to `limit` due scheduled/retrying jobs to pending (no scheduler wake-up: the
-- caller is the scheduler). Flushes; returns how many.
local function do_promote(limit)
  local n = 0
  local ids = redis.call('ZRANGEBYSCORE', B .. 'delayed', '-inf', NOW, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    defer('ZREM', B .. 'delayed', id)
    local j = load(id)
    if j and (j.state == 'scheduled' or j.state == 'retrying') then
      to_pending(j)
      n = n + 1
    end
  end
  WAKE = {}
  flush()
  return n
end

-- A node for a plain job of `queue` from the slots the leader reserved (see "reserved"
-- in the header), or nil: the first live node on the queue's list, which it leaves.
local function take_reserved(queue)
  local K = B .. 'reserved'
  local v = redis.call('HGET', K, queue)
  if not v then
    return nil
  end
  local at, found = 1, nil
  while at <= #v do
    local stop = string.find(v, '\0', at, true) or (#v + 1)
    local node = string.sub(v, at, stop - 1)
    at = stop + 1
    if redis.call('HGET', B .. 'node:' .. node, 'state') == 'live' then
      found = node
      break
    end
  end
  if at <= #v then
    redis.call('HSET', K, queue, string.sub(v, at))
  else
    redis.call('HDEL', K, queue)
  end
  return found
end

-- name: pending_jobs
-- ARGV[3] = ZRANGEBYLEX start, ARGV[4] = limit.
-- Returns {id, queue, priority, seq, resources, labels, affinity}... ("" = none).
return pending_rows(ARGV[3], tonumber(ARGV[4]))

-- name: placement_snapshot
-- ARGV[3..5] = lease, ARGV[6] = promote limit, ARGV[7] = first page size at most,
-- ARGV[8] = at least, ARGV[9] = 1: read the page even with no room (census). Fenced.
-- promote_due, list_nodes and the first pending_jobs page in one script, the page sized
-- to the live nodes' free room (clamped to [at least, at most]; 0 rows with no room).
-- Returns {promoted, live node rows as live_loads, pending rows as pending_jobs, page size}.
local e = fence()
if e then
  return e
end
redis.call('DEL', B .. 'reserved') -- this cycle places from what it reads here
local promoted = 0
if #redis.call('ZRANGEBYSCORE', B .. 'delayed', '-inf', NOW, 'LIMIT', 0, 1) > 0 then
  promoted = do_promote(tonumber(ARGV[6]))
end
local nodes, free = live_loads()
local live = #nodes
local size = math.min(tonumber(ARGV[7]), math.max(tonumber(ARGV[8]), free))
local pending = {}
if (free > 0 and live > 0) or ARGV[9] == '1' then
  if free <= 0 or live == 0 then
    size = tonumber(ARGV[7])
  end
  pending = pending_rows('-', size)
end
return { promoted, nodes, pending, size }

-- name: assign
-- ARGV[3..5] = lease, ARGV[6..] = job id, node id, pending member triples (the member as
-- pending_jobs returned it; "" = build it from the job's hash). Fenced. A job is placed
-- only if its member is still in "pending" (which is what being pending means), so the
-- job's hash is only written, never read. Tokens come from take_tokens, once a call.
local early = memo_or_fence()
if early then
  return early
end
local node_state = {}
local cand, seen = {}, {}
for i = 6, #ARGV, 3 do
  local id, node, mem = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ns = node_state[node]
  if ns == nil then
    ns = redis.call('HGET', B .. 'node:' .. node, 'state')
    node_state[node] = ns
  end
  if ns == 'live' and not seen[id] then
    seen[id] = true
    if string.sub(mem, 21, 21 + #id) ~= id .. '\0' then
      mem = pmember_of(id)
    end
    if mem then
      cand[#cand + 1] = { id, node, mem }
    end
  end
end
local placed = {}
for c = 1, #cand, 1000 do
  local ms = {}
  for i = c, math.min(c + 999, #cand) do
    ms[#ms + 1] = cand[i][3]
  end
  local scores = redis.call('ZMSCORE', B .. 'pending', unpack(ms))
  for i = 1, #ms do
    if scores[i] then
      placed[#placed + 1] = cand[c + i - 1]
    end
  end
end
local n = #placed
if n > 0 then
  local token = take_tokens(n)
  for _, p in ipairs(placed) do
    local id, node, mem = p[1], p[2], p[3]
    local a = 22 + #id -- queue starts here
    local b = string.find(mem, '\0', a, true)
    local queue = string.sub(mem, a, b - 1)
    local c = string.find(mem, '\0', b + 1, true)
    defer('ZREM', B .. 'pending', mem)
    defer('ZADD', B .. 'nassigned:' .. node, 0, string.sub(mem, 1, 20) .. id)
    count(queue, 'pending', -1)
    count(queue, 'assigned', 1)
    if c > b + 1 then -- resources, labels, affinity, concurrency key...
      local x = cjson.decode(string.sub(mem, b + 1, c - 1))
      if type(x[1]) == 'table' then
        usage_of(node, x[1], 1)
      end
      if type(x[4]) == 'string' then
        conc(x[4], 1)
      end
    end
    token = token + 1
    redis.call('HSET', jkey(id), 'state', 'assigned', 'node_id', node, 'token', token)
    wake(B .. 'wake:node:' .. node)
  end
end
flush()
memo_set(n)
return n

-- name: preempt
-- ARGV[3..5] = lease, ARGV[6..] = job id, reason pairs. Fenced (see Store.preempt): an
-- assigned job goes back to pending at once; a running one gets cancel_requested for its
-- node to stop it. Both get preempted_at and error = the reason. Returns how many.
local early = memo_or_fence()
if early then
  return early
end
local n = 0
for i = 6, #ARGV, 2 do
  local j = load(ARGV[i])
  if j and j.state == 'assigned' then
    local node = j.node
    leave_node(j)
    redis.call('HSET', jkey(j.id), 'preempted_at', NOWS, 'error', ARGV[i + 1])
    redis.call('HINCRBY', jkey(j.id), 'preemptions', 1)
    to_pending(j, { 'node_id' })
    wake(B .. 'wake:node:' .. node)
    n = n + 1
  elseif j and j.state == 'running' and not j.cancel then
    redis.call('HSET', jkey(j.id), 'cancel_requested', '1', 'preempted_at', NOWS,
      'error', ARGV[i + 1])
    if j.node then
      wake(B .. 'wake:node:' .. j.node)
    end
    n = n + 1
  end
end
flush()
memo_set(n)
return n

-- name: reserve_slots
-- ARGV[3..5] = lease, ARGV[6..] = queue, node ids joined by "\0" pairs. Fenced. Replaces
-- the reserved slots (see "reserved" in the header). Returns the number of queues.
local e = fence()
if e then
  return e
end
redis.call('DEL', B .. 'reserved')
if #ARGV > 5 then
  redis.call('HSET', B .. 'reserved', unpack(ARGV, 6))
end
return (#ARGV - 5) / 2

-- name: grant_claims
-- ARGV[3..5] = lease, ARGV[6..] = node id, "\0q1\0q2\0" pairs. Fenced. Replaces the claim
-- grant (see "grant" in the header) with one under this lease's token. Returns the number
-- of nodes.
local e = fence()
if e then
  return e
end
redis.call('DEL', B .. 'grant')
redis.call('HSET', B .. 'grant', 'token', ARGV[5], unpack(ARGV, 6))
return (#ARGV - 5) / 2
