--[[ rota's Redis store: every state change is one Lua script.

The files of this folder are one Redis function library (FUNCTION LOAD, Redis 7+), joined
by library.py in the order of LIBRARY_FILES: first the code of each file before its first
"-- name: X" marker line (helpers and the per-call state: this file, then jobs.lua, ...),
then each named script as the function "<library>_<name>", which starts with
begin(keys, args) (the common arguments, TIME, fresh per-call state) and is called with
FCALL. The library's name carries a hash of the joined text, so rota versions never clash.
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
                                alloc (AllocSpec JSON text; written by submit),
                                preempted_at preemptions, children ("1": some job depends on
                                this one; submit sets it on the parent). A missing field
                                has its default: priority/attempts/token/concurrency_limit
                                0, max_attempts 1, backoff_base 1, backoff_max 300,
                                scheduled_at = created_at, others None/{}/().
                                Written by every job script; EXPIRE result TTL once final.
  B.."attempts:"..id    list    the job's attempt history, oldest first: one JSON object
                                per attempt {token, attempt, node_id, started_at, and once
                                it ended ended_at, outcome, cut_short, error, traceback}
                                (start_jobs pushes and LTRIMs it to the last
                                attempt_history; complete, reap and release_jobs set the
                                ending with LSET). EXPIRE with the job hash once final,
                                PERSIST by retry_dead, deleted by purge.
  B.."jobs"             zset    seq -> id: every stored job (submit adds and checks it for
                                duplicate ids with ZMSCORE, purge removes)
  B.."state:"..st       zset    seq -> id: jobs in state st, for st = scheduled, retrying,
                                waiting and the final states (every transition moves it).
                                Pending jobs are listed from "pending" (script
                                pending_newest reads each priority band from its top);
                                assigned and running ones from "nassigned:*" and
                                "running", which the fleet's capacity bounds (script
                                active_ids).
  B.."token"            string  last fencing token handed out (take_tokens, by assign and
                                submit: a job's token is new and higher at each
                                assignment, and never below Redis' TIME in microseconds,
                                so tokens stay above those a failover lost; raise_token_floor
                                lifts it to the highest a client has seen)
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
                                concurrency_key, concurrency_limit, rate_limit], and for
                                a job with an alloc spec also alloc, timeout and the time
                                it became pending): placement
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
  B.."grant"            hash    "token" -> the scheduler lease token it was granted under,
                                node id -> "\0q1\0q2\0": the queues whose plain pending
                                jobs the node may claim itself (grant_claims writes it,
                                fenced). Current only while "lease:scheduler" still has
                                that token and has not expired. start_jobs / complete_and_start / the
                                worker's wait_and_start then fill the node's free slots
                                from the head of "pending" (priority order), stopping at
                                the first job that is not plain or not of those queues
                                (do_claim): pending -> running in one step, no scheduler
                                cycle in between
  B.."lease:"..name     hash    holder token expires_at acquired_at external (token survives
                                release and expiry so the next holder gets a higher one;
                                acquire_lease makes it at least TIME in microseconds;
                                external = "1": adopt_lease set it, see there)
  B.."stats:"..name     string  JSON document (put_stats)
  B.."stats-claims"     zset    store time -> claim name (put_stats_once of a "claim:" name; prune)
  B.."req:"..rid        string  memoized reply of a request, TTL 120 s
]]

-- Shared state and plumbing of every script: the per-call state, key names, deferred
-- index writes (flush), memoized replies and fencing; begin() starts every call.

-- Per-call state: set by begin() at the start of every script (a library's locals outlive
-- a call, so nothing here may carry over from one call to the next).
local KEYS, ARGV -- the call's keys and arguments
local B, RID, TTL, CEIL_TTL -- key base, request id, result TTL (see the header)
local NOW, NOWS -- Redis' TIME, as a number and as stored ("%.6f")
local NOW_US -- Redis' TIME in whole microseconds (exact in a Lua number until 2255)
local K_RUNNING, K_FINISHED, K_PENDING, K_WAKE_SCHED, K_SUCCEEDED
local KEYS_OF -- family -> name -> key, built on first use (key_of)
local COUNTS -- state -> queue -> change to "counts", sent by flush()
local CONC -- changes to "concurrency" (assigned + running jobs per key), sent by flush()
local WAKE -- wake-up lists to push, by flush()
local BUF, BUFS -- deferred index writes: command -> key -> buffer; buffers in first-use order
local MOVED -- state index moves, per job (first state -> last state)
local EMPTIED -- nodes that released resources: drop their "nused" hash once empty
local WATCHED -- ids of jobs that became final: flush() signals those someone waits for
local ONLY_PLAIN -- do_complete saw only plain successes (see complete_and_start)

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
-- A job with an allocation spec (al, JSON text) also carries it, its timeout (to) and
-- when it became pending (enq: scheduled_at, else created_at; text as stored).
local function pmember(priority, seq, id, queue, task, res, labels, aff, ck, cl, rl, al, to, enq)
  local x = ''
  if res or labels or aff or ck or rl or al or (tonumber(cl) or 0) ~= 0 then
    x = '[' .. (res or 'null') .. ',' .. (labels or 'null') .. ',' .. (aff or 'null') .. ','
      .. (ck and cjson.encode(ck) or 'null') .. ',' .. tostring(tonumber(cl) or 0) .. ','
      .. (rl and cjson.encode(rl) or 'null')
    if al then
      x = x .. ',' .. al .. ',' .. (to or 'null') .. ',' .. (enq or 'null')
    end
    x = x .. ']'
  end
  return rank(priority, seq) .. id .. '\0' .. queue .. '\0' .. x .. '\0' .. task
end

local PFIELDS = { 'priority', 'seq', 'queue', 'task', 'resources', 'labels', 'affinity',
  'concurrency_key', 'concurrency_limit', 'rate_limit', 'alloc', 'timeout', 'scheduled_at',
  'created_at' }
-- The member of job `id` built from its hash (nil if it is gone).
local function pmember_of(id)
  local v = redis.call('HMGET', jkey(id), unpack(PFIELDS))
  if not v[2] then
    return nil
  end
  return pmember(v[1], v[2], id, v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11],
    v[12], v[13] or v[14])
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

-- Fencing tokens for n jobs: first + 1 .. first + n, where first is the last token handed
-- out or Redis' clock in microseconds, whichever is higher. A replica promoted after a
-- failover may have lost the last tokens its primary handed out, but not the time that
-- passed: its clock is past them (docs/architecture.md, "Fencing tokens and failover").
local function take_tokens(n)
  local first = math.max(tonumber(redis.call('GET', B .. 'token') or '0'), NOW_US)
  redis.call('SET', B .. 'token', first + n)
  return first
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

-- The start of every call (see the header): the call's arguments, Redis' clock and fresh
-- per-call state.
local function begin(keys, args)
  KEYS, ARGV = keys, args
  B, RID = keys[1], args[1]
  TTL = tonumber(args[2]) or 0
  CEIL_TTL = math.ceil(TTL)
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
  NOW_US = tonumber(t[1]) * 1000000 + tonumber(t[2])
  NOWS = fmt(NOW)
  K_RUNNING, K_FINISHED, K_PENDING = B .. 'running', B .. 'finished', B .. 'pending'
  K_WAKE_SCHED, K_SUCCEEDED = B .. 'wake:sched', B .. 'state:succeeded'
  KEYS_OF, COUNTS, CONC, WAKE, BUF, BUFS = {}, {}, {}, {}, {}, {}
  MOVED, EMPTIED, WATCHED = {}, {}, {}
end
