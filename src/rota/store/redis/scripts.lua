--[[ rota's Redis store: every state change is one of the scripts below.

redis.py splits this file at the "-- name: X" marker lines and loads it as one Redis
function library (FUNCTION LOAD, Redis 7+): the "lib" section (helpers and the per-call
state) once, then each script as the function "<library>_<name>", which starts with
begin(keys, args) (the common arguments, TIME, fresh per-call state) and is called with
FCALL. The library's name carries a hash of this file, so rota versions never clash.
Every script gets KEYS[1] = B, the key base "<prefix>:{<prefix>}:" (so every key of an app shares one hash
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
                                cancel_requested seq, and the flow fields depends_on (JSON
                                list of parent ids) pass_results ("1") workflow_id
                                unique_key concurrency_key concurrency_limit rate_limit
                                (written by submit), children ("1": some job depends on
                                this one; submit sets it on the parent). A missing field
                                has its default: priority/attempts/token/concurrency_limit
                                0, max_attempts 1, backoff_base 1, backoff_max 300,
                                scheduled_at = created_at, others None/{}/().
                                Written by every job script; EXPIRE result TTL once final.
  B.."jobs"             zset    seq -> id: every stored job (submit adds and checks it for
                                duplicate ids with ZMSCORE, purge removes)
  B.."state:"..st       zset    seq -> id: jobs in state st, for st = scheduled, retrying,
                                waiting and the final states (every transition moves it).
                                Pending jobs are listed from "pending" (script
                                pending_newest reads each priority band from its top);
                                assigned and running ones from "nassigned:*" and
                                "running", which the fleet's capacity bounds (script
                                active_ids).
  B.."token"            string  last fencing token handed out (INCRBY by assign: a job's
                                token is new and higher at each assignment)
  B.."children:"..id    set     ids of the waiting jobs that depend on job id (submit adds;
                                resolve_dependencies pops them once job id is final, and
                                removes a job it settles from its other parents' sets;
                                purge deletes it)
  B.."settle"           zset    enqueue time -> parent id: final jobs whose children
                                resolve_dependencies must look at. finish() adds a job that
                                has the "children" field; submit adds a parent that is
                                already final; resolve_dependencies removes what it is done
                                with. Jobs without children never touch it.
  B.."unique:"..key     string  id of the job holding unique_key key (submit sets it, with
                                PX = unique_for when given; finish() deletes it if it still
                                names the job). Checked lazily: a holder that is final or
                                gone does not count.
  B.."concurrency"      hash    concurrency_key -> number of assigned + running jobs with it
                                (assign adds; leave_node, i.e. complete/cancel/release/reap,
                                subtracts; a field at 0 is deleted). Jobs without a
                                concurrency_key never touch it.
  B.."schedules"        hash    schedule name -> spec (JSON text; put_schedules,
                                delete_schedules)
  B.."schedules:ticks"  hash    schedule name -> last tick handled (fire_schedule sets it,
                                delete_schedules removes it)
  B.."counts"           hash    "<st>:<q>" -> number of jobs (every transition)
  B.."pending"          zset    all scores 0, member rank..id.."\0"..queue.."\0"..x.."\0"..task
                                (rank = 8 hex of 2^31-1-priority, 12 hex of seq; x = "" or
                                the JSON list [resources, labels, affinity,
                                concurrency_key, concurrency_limit, rate_limit]): placement
                                order, read with ZRANGEBYLEX, and everything placement
                                needs, so the scheduler never reads job hashes. Built by
                                pmember() from the job's fields, which never change while
                                it is pending. submit/promote/release/reap/retry and
                                resolve_dependencies add, assign (given the member the
                                scheduler read) and cancel remove.
  B.."delayed"          zset    due time -> id: scheduled and retrying jobs
                                (submit/complete add, promote_due/cancel remove)
  B.."running"          zset    lease_expires_at -> id: running jobs (start_jobs adds,
                                heartbeat extends, complete/reap/release/cancel remove)
  B.."finished"         zset    finished_at -> id.."\0"..st..":"..q: final jobs, for
                                result expiry (in reap) and prune
  B.."watch:"..id       string  set (with a TTL) by wait_for_results before it reads the
                                job's state: someone waits for this job
  B.."done:"..id        list    one element pushed when a watched job becomes final (TTL
                                300 s): wait_for_results blocks on it with BLMOVE
                                (non-consuming, so every waiter sees it)
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
                                work; wait_for_pending BLPOPs it (wait_for_pending_snapshot
                                with placement_snapshot pipelined behind the BLPOP)
  B.."wake:node:"..id   list    <= 1 element: LPUSH+LTRIM by assign and cancel;
                                wait_for_assignments BLPOPs it (the worker's asyncio
                                wait_and_start with start_jobs pipelined behind the BLPOP)
  B.."reserved"         hash    queue -> node ids joined by "\0": slots of live nodes the
                                scheduler leader chose with its policy for plain jobs
                                (reserve_slots writes them when nothing is left pending;
                                placement_snapshot deletes the hash; submit takes the first
                                live node of its queue's list for a plain job while
                                "pending" is empty: it is assigned at once)
  B.."lease:"..name     hash    holder token expires_at acquired_at (token survives
                                release and expiry so the next holder gets a higher one)
  B.."stats:"..name     string  JSON document (put_stats)
  B.."req:"..rid        string  memoized reply of a request, TTL 120 s
]]

-- name: lib
-- Per-call state: set by begin() at the start of every script (a library's locals outlive
-- a call, so nothing here may carry over from one call to the next).
local KEYS, ARGV -- the call's keys and arguments
local B, RID, TTL, CEIL_TTL -- key base, request id, result TTL (see the header)
local NOW, NOWS -- Redis' TIME, as a number and as stored ("%.6f")
local K_RUNNING, K_FINISHED, K_PENDING, K_WAKE_SCHED, K_SUCCEEDED
local KEYS_OF -- family -> name -> key, built on first use (key_of)
local COUNTS -- state -> queue -> change to "counts", sent by flush()
local CONC -- changes to "concurrency" (assigned + running jobs per key), sent by flush()
local WAKE -- wake-up lists to push, by flush()
local BUF, BUFS -- deferred index writes: command -> key -> buffer; buffers in first-use order
local MOVED -- state index moves, per job (first state -> last state)
local EMPTIED -- nodes that released resources: drop their "nused" hash once empty
local WATCHED -- ids of jobs that became final: flush() signals those someone waits for

local DONE_TTL = 300
local MEMO_TTL = 120

local function fmt(t)
  return string.format('%.6f', t)
end

local function jkey(id)
  return B .. 'job:' .. id
end

-- Keys built once per call, per node / per state on first use.
local function key_of(family, name)
  local by = KEYS_OF[family]
  if not by then
    by = {}
    KEYS_OF[family] = by
  end
  local k = by[name]
  if not k then
    k = B .. family .. name
    by[name] = k
  end
  return k
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

-- A pending job's member in "pending" (see the header): everything placement reads.
local function pmember(priority, seq, id, queue, task, res, labels, aff, ck, cl, rl)
  local x = ''
  if res or labels or aff or ck or rl or (tonumber(cl) or 0) ~= 0 then
    x = '[' .. (res or 'null') .. ',' .. (labels or 'null') .. ',' .. (aff or 'null') .. ','
      .. (ck and cjson.encode(ck) or 'null') .. ',' .. tostring(tonumber(cl) or 0) .. ','
      .. (rl and cjson.encode(rl) or 'null') .. ']'
  end
  return rank(priority, seq) .. id .. '\0' .. queue .. '\0' .. x .. '\0' .. task
end

local PFIELDS = { 'priority', 'seq', 'queue', 'task', 'resources', 'labels', 'affinity',
  'concurrency_key', 'concurrency_limit', 'rate_limit' }
-- The member of job `id` built from its hash (nil if it is gone).
local function pmember_of(id)
  local v = redis.call('HMGET', jkey(id), unpack(PFIELDS))
  if not v[2] then
    return nil
  end
  return pmember(v[1], v[2], id, v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10])
end

-- States with a "state:<st>" index (pending, assigned and running jobs have none).
local INDEXED = { scheduled = true, retrying = true, waiting = true, succeeded = true,
  dead = true, cancelled = true, upstream_failed = true }

local function count(queue, state, delta)
  local by = COUNTS[state]
  if not by then
    by = {}
    COUNTS[state] = by
  end
  by[queue] = (by[queue] or 0) + delta
end

local function conc(key, delta)
  CONC[key] = (CONC[key] or 0) + delta
end

local FINALS = { succeeded = true, dead = true, cancelled = true, upstream_failed = true }

local function wake(key)
  WAKE[key] = true
end

-- Index writes that no later read in the same script depends on are buffered and sent as
-- one command per key (in chunks: unpack() has a stack limit) by flush().
local function defer(cmd, key, a, b)
  local by = BUF[cmd]
  if not by then
    by = {}
    BUF[cmd] = by
  end
  local buf = by[key]
  if not buf then
    buf = { cmd = cmd, key = key, n = 0 }
    by[key] = buf
    BUFS[#BUFS + 1] = buf
  end
  buf.n = buf.n + 1
  buf[buf.n] = a
  if b ~= nil then
    buf.n = buf.n + 1
    buf[buf.n] = b
  end
end

-- State index moves, kept per job (first state -> last state) so that a job moved twice
-- in one script ends up in one index only.

local function flush()
  for id, mv in pairs(MOVED) do
    if mv.from ~= mv.to then
      if INDEXED[mv.from] then
        defer('ZREM', key_of('state:', mv.from), id)
      end
      if INDEXED[mv.to] then
        defer('ZADD', key_of('state:', mv.to), mv.seq, id)
      end
    end
  end
  MOVED = {}
  -- One EXISTS for all "watch:" keys of the jobs that became final (usually none is set).
  for c = 1, #WATCHED, 1000 do
    local keys = {}
    for i = c, math.min(c + 999, #WATCHED) do
      keys[#keys + 1] = B .. 'watch:' .. WATCHED[i]
    end
    if redis.call('EXISTS', unpack(keys)) > 0 then
      for i = c, math.min(c + 999, #WATCHED) do
        local id = WATCHED[i]
        if redis.call('EXISTS', B .. 'watch:' .. id) == 1 then -- someone waits for it
          local d = B .. 'done:' .. id -- deleted by retry_dead: never more than one element
          redis.call('RPUSH', d, '1')
          redis.call('EXPIRE', d, DONE_TTL)
        end
      end
    end
  end
  WATCHED = {}
  for _, buf in ipairs(BUFS) do
    for i = 1, buf.n, 4000 do
      redis.call(buf.cmd, buf.key, unpack(buf, i, math.min(i + 3999, buf.n)))
    end
  end
  BUF, BUFS = {}, {}
  for n in pairs(EMPTIED) do
    if redis.call('ZCARD', B .. 'nassigned:' .. n) == 0
        and redis.call('SCARD', B .. 'nrunning:' .. n) == 0 then
      redis.call('DEL', B .. 'nused:' .. n) -- no float drift once the node is empty
    end
  end
  EMPTIED = {}
  for state, by in pairs(COUNTS) do
    for queue, d in pairs(by) do
      local f = state .. ':' .. queue
      if d ~= 0 and redis.call('HINCRBY', B .. 'counts', f, d) <= 0 then
        redis.call('HDEL', B .. 'counts', f)
      end
    end
  end
  COUNTS = {}
  for key, d in pairs(CONC) do
    if d ~= 0 and redis.call('HINCRBY', B .. 'concurrency', key, d) <= 0 then
      redis.call('HDEL', B .. 'concurrency', key)
    end
  end
  CONC = {}
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

-- A fenced script's start: the memoized reply of a replayed request, else the fence's
-- error reply, else nil (go on).
local function memo_or_fence()
  local m = memo_get()
  if m then
    return m
  end
  return fence()
end

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
  leave_node(j)
  if j.cancel then
    finish(j, 'cancelled', { 'error', 'cancelled (' .. why .. ')' })
  elseif j.attempts < j.max_attempts then
    redis.call('HSET', k, 'error', 'lease lost: ' .. why)
    to_pending(j, { 'node_id', 'lease_expires_at' })
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
  redis.call('DEL', jkey(id), B .. 'done:' .. id, B .. 'children:' .. id)
  redis.call('ZREM', B .. 'jobs', id)
  redis.call('ZREM', B .. 'state:' .. state, id)
  count(queue, state, -1)
  return 1
end

local function record(id)
  return redis.call('HGETALL', jkey(id))
end

-- Record outcomes [id, token, kind, result, error, traceback, retry_delay] ("" = none);
-- returns 1/0 per outcome: accepted only if running with that token. Caller flushes.
local CFIELDS = { 'state', 'token', 'node_id', 'queue', 'seq', 'resources', 'attempts',
  'max_attempts', 'cancel_requested', 'concurrency_key', 'children', 'unique_key' }
local OUTPUTS = { 'result', 'error', 'traceback' }
local function do_complete(outcomes)
  local acc = {}
  for i, o in ipairs(outcomes) do
    local id = o[1]
    local v = redis.call('HMGET', jkey(id), unpack(CFIELDS))
    if v[1] ~= 'running' or tonumber(v[2]) ~= tonumber(o[2]) then
      acc[i] = 0
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
      if TTL > 0 then
        redis.call('EXPIRE', k, CEIL_TTL)
      end
      WATCHED[#WATCHED + 1] = id
      wake(K_WAKE_SCHED)
      acc[i] = 1
    else
      local j = from_fields(id, CFIELDS, v)
      local kind = o[3]
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
      if kind == 'succeeded' then
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

-- Move up to `limit` of the node's assigned jobs to running. Returns {id, HGETALL job}...
-- of the jobs started (each hash read once, for the check and the reply, and brought up to
-- date in Lua) and the list of their ids (to memoize). Caller flushes.
local function do_start(node, limit, ttl)
  local out, ids = {}, {}
  local ns = redis.call('HGET', B .. 'node:' .. node, 'state')
  if (ns ~= 'live' and ns ~= 'draining') or limit <= 0 then
    return out, ids
  end
  local ak = B .. 'nassigned:' .. node
  local members = redis.call('ZRANGEBYLEX', ak, '-', '+', 'LIMIT', 0, limit)
  if #members == 0 then
    return out, ids
  end
  local exp = NOW + ttl
  local exps = fmt(exp)
  local rk, nrk = B .. 'running', B .. 'nrunning:' .. node
  for _, mem in ipairs(members) do
    defer('ZREM', ak, mem)
    local id = string.sub(mem, 21)
    local h = redis.call('HGETALL', jkey(id))
    local st, nd, queue, ia, is, il
    for i = 1, #h, 2 do
      local f = h[i]
      if f == 'state' then
        st = i + 1
      elseif f == 'node_id' then
        nd = h[i + 1]
      elseif f == 'attempts' then
        ia = i + 1
      elseif f == 'queue' then
        queue = h[i + 1]
      elseif f == 'started_at' then
        is = i + 1
      elseif f == 'lease_expires_at' then
        il = i + 1
      end
    end
    if st and h[st] == 'assigned' and nd == node then
      local a = tostring((ia and tonumber(h[ia]) or 0) + 1)
      defer('SADD', nrk, id)
      defer('ZADD', rk, exp, id)
      count(queue, 'assigned', -1)
      count(queue, 'running', 1)
      redis.call('HSET', jkey(id), 'state', 'running', 'attempts', a, 'started_at', NOWS,
        'lease_expires_at', exps)
      -- the reply: the hash as HSET left it (new fields go last, in HSET's order)
      h[st] = 'running'
      local n = #h
      if ia then
        h[ia] = a
      else
        h[n + 1], h[n + 2], n = 'attempts', a, n + 2
      end
      if is then
        h[is] = NOWS
      else
        h[n + 1], h[n + 2], n = 'started_at', NOWS, n + 2
      end
      if il then
        h[il] = exps
      else
        h[n + 1], h[n + 2] = 'lease_expires_at', exps
      end
      out[#out + 1] = id
      out[#out + 1] = h
      ids[#ids + 1] = id
    end
  end
  return out, ids
end

local function records(ids)
  local out = {}
  for _, id in ipairs(ids) do
    out[#out + 1] = id
    out[#out + 1] = record(id)
  end
  return out
end

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
          f[#f + 1] = 'scheduled_at'; f[#f + 1] = fmt(due)
          if due > NOW then
            state = 'scheduled'
            sched[#sched + 1] = seq; sched[#sched + 1] = id
            delayed[#delayed + 1] = due; delayed[#delayed + 1] = id
          end
        end
        if state == 'pending' then
          local res, labels, aff, ck, cl, rl
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
            end
          end
          local node = nil
          if reserved and not (res or labels or aff or ck or rl or (tonumber(cl) or 0) ~= 0) then
            node = take_reserved(queue)
          end
          if node then -- placed at once, in a slot the leader reserved
            state = 'assigned'
            local token = redis.call('INCR', B .. 'token')
            f[#f + 1] = 'node_id'; f[#f + 1] = node
            f[#f + 1] = 'token'; f[#f + 1] = token
            defer('ZADD', B .. 'nassigned:' .. node, 0, rank(prio, seq) .. id)
            wake(B .. 'wake:node:' .. node)
          else
            reserved = false
            pmem[#pmem + 1] = 0
            pmem[#pmem + 1] = pmember(prio, seq, id, queue, a[2], res, labels, aff, ck, cl, rl)
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

-- The start of every call (see the header): the call's arguments, Redis' clock and fresh
-- per-call state.
local function begin(keys, args)
  KEYS, ARGV = keys, args
  B, RID = keys[1], args[1]
  TTL = tonumber(args[2]) or 0
  CEIL_TTL = math.ceil(TTL)
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
  NOWS = fmt(NOW)
  K_RUNNING, K_FINISHED, K_PENDING = B .. 'running', B .. 'finished', B .. 'pending'
  K_WAKE_SCHED, K_SUCCEEDED = B .. 'wake:sched', B .. 'state:succeeded'
  KEYS_OF, COUNTS, CONC, WAKE, BUF, BUFS = {}, {}, {}, {}, {}, {}
  MOVED, EMPTIED, WATCHED = {}, {}, {}
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
    redis.call('DEL', B .. 'done:' .. j.id)
    redis.call('HSET', k, 'attempts', 0, 'scheduled_at', NOWS)
    to_pending(j, { 'finished_at', 'started_at', 'node_id', 'cancel_requested' })
    n = n + 1
  end
end
flush()
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
-- ARGV[3] = node id, ARGV[4] = limit, ARGV[5] = lease ttl.
-- Returns {id, HGETALL job}... of the jobs started, highest priority then oldest first.
local m = memo_get()
if m then
  return records(m)
end
local out, ids = do_start(ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
flush()
memo_set(ids)
return out

-- name: complete
-- ARGV[3] = JSON list of [id, token, kind, result, error, traceback, retry_delay]
-- ("" = none). Returns 1/0 per outcome: accepted only if running with that token.
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
-- ttl: complete, then start_jobs, in one script. Returns {{1/0 per outcome}, {id, HGETALL
-- job}...}.
local m = memo_get()
if m then
  return { m[1], records(m[2]) }
end
local acc = do_complete(cjson.decode(ARGV[3]))
local out, ids = do_start(ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
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
    leave_node(j)
    if j.state == 'running' then
      redis.call('HSET', k, 'attempts', math.max(j.attempts - 1, 0))
    end
    if j.cancel then -- an operator asked to cancel it: do not run it again
      finish(j, 'cancelled', { 'error', 'cancelled' })
    else
      to_pending(j, { 'node_id', 'lease_expires_at', 'started_at' })
    end
    n = n + 1
  end
end
flush()
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

-- name: adopt_lease
-- ARGV[3] = name, ARGV[4] = holder, ARGV[5] = token minted outside the store (ZooKeeper),
-- ARGV[6] = ttl. A higher token takes the lease, the same one renews it for the same
-- holder; an older one changes nothing. Returns {holder, token, expires_at, acquired_at}
-- or nil when refused.
local k = B .. 'lease:' .. ARGV[3]
local holder, token = ARGV[4], tonumber(ARGV[5])
local v = redis.call('HMGET', k, 'holder', 'token', 'acquired_at')
local cur = tonumber(v[2] or '0')
local exp = fmt(NOW + tonumber(ARGV[6]))
if token > cur then
  redis.call('HSET', k, 'holder', holder, 'token', ARGV[5], 'expires_at', exp,
    'acquired_at', NOWS)
  return { holder, token, exp, NOWS }
end
if token == cur and v[1] == holder then
  redis.call('HSET', k, 'expires_at', exp)
  return { holder, token, exp, v[3] }
end
return false

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
local early = memo_or_fence()
if early then
  return early
end
local n = do_promote(tonumber(ARGV[6]))
memo_set(n)
return n

-- name: reap
-- ARGV[3..5] = lease, ARGV[6] = failure timeout, ARGV[7] = max expired results to purge.
-- Fenced. Returns {{dead node ids}, requeued, retried, dead jobs}.
local early = memo_or_fence()
if early then
  return early
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
  local st = redis.call('HGET', B .. 'node:' .. node, 'state')
  if st == 'dead' or st == 'stopped' then
    add(take_back_node(node, 'node ' .. node .. ' left'))
  end
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
WAKE = {}
flush()
local reply = { dead_nodes, requeued, retried, dead_jobs }
memo_set(reply)
return reply

-- name: pending_jobs
-- ARGV[3] = ZRANGEBYLEX start, ARGV[4] = limit.
-- Returns {id, queue, priority, seq, resources, labels, affinity}... ("" = none).
return pending_rows(ARGV[3], tonumber(ARGV[4]))

-- name: placement_snapshot
-- ARGV[3..5] = lease, ARGV[6] = promote limit, ARGV[7] = first page size at most,
-- ARGV[8] = at least, ARGV[9] = 1: read the page even with no room (census). Fenced.
-- promote_due, list_nodes and the first pending_jobs page in one script, the page sized
-- to the live nodes' free room (clamped to [at least, at most]; 0 rows with no room).
-- Returns {promoted, node rows as list_nodes, pending rows as pending_jobs, page size}.
local e = fence()
if e then
  return e
end
redis.call('DEL', B .. 'reserved') -- this cycle places from what it reads here
local promoted = 0
if #redis.call('ZRANGEBYSCORE', B .. 'delayed', '-inf', NOW, 'LIMIT', 0, 1) > 0 then
  promoted = do_promote(tonumber(ARGV[6]))
end
local nodes = node_rows()
local free, live = 0, 0
for _, row in ipairs(nodes) do
  local h = row[2]
  local f = {}
  for i = 1, #h, 2 do
    f[h[i]] = h[i + 1]
  end
  if f.state == 'live' then
    live = live + 1
    free = free + math.max(0, tonumber(f.slots) + tonumber(f.prefetch) - row[3] - row[4])
  end
end
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
-- job's hash is only written, never read. Tokens come from "token", one INCRBY a call.
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
  local token = redis.call('INCRBY', B .. 'token', n) - n
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
flush()
local reply = { n, #old >= limit and 1 or 0 }
memo_set(reply)
return reply

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
