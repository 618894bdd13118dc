-- The scheduler leader's lease and housekeeping: acquire/release/read a lease, promote
-- due jobs, reap silent nodes and expired leases, prune old final jobs and gone nodes.

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
-- Never below Redis' clock in microseconds, as job tokens (take_tokens): a failover that
-- lost the last acquisitions cannot hand their tokens out again.
token = math.max(token + 1, NOW_US)
redis.call('HSET', k, 'holder', holder, 'token', token, 'expires_at', exp, 'acquired_at', NOWS)
redis.call('HDEL', k, 'external')
return { holder, token, exp, NOWS }

-- name: raise_token_floor
-- ARGV[3] = the highest job token a client has seen, ARGV[4..] = lease name, token pairs
-- (the highest of each lease it has seen). Lifts "token" and each lease's token to at least
-- those (a lease's holder is kept: its token no longer matches, so it is fenced out until
-- acquired again). A client sends it after reconnecting (a failover may have lost tokens
-- it saw). Returns how many counters were below: 0 unless tokens went backwards.
local raised = 0
local floor = tonumber(ARGV[3])
if floor > tonumber(redis.call('GET', B .. 'token') or '0') then
  redis.call('SET', B .. 'token', floor)
  raised = raised + 1
end
for i = 4, #ARGV, 2 do
  local k = B .. 'lease:' .. ARGV[i]
  if tonumber(ARGV[i + 1]) > tonumber(redis.call('HGET', k, 'token') or '0') then
    redis.call('HSET', k, 'token', ARGV[i + 1])
    raised = raised + 1
  end
end
return raised

-- name: adopt_lease
-- ARGV[3] = name, ARGV[4] = holder, ARGV[5] = token minted outside the store (ZooKeeper),
-- ARGV[6] = ttl. A higher token takes the lease, the same one renews it for the same
-- holder; an older one changes nothing. Returns {holder, token, expires_at, acquired_at}
-- or nil when refused. A lease acquire_lease minted (clock-based tokens, above any zxid)
-- yields to an external token once it has expired: a switch to ZooKeeper.
local k = B .. 'lease:' .. ARGV[3]
local holder, token = ARGV[4], tonumber(ARGV[5])
local v = redis.call('HMGET', k, 'holder', 'token', 'acquired_at', 'external', 'expires_at')
local cur = tonumber(v[2] or '0')
local exp = fmt(NOW + tonumber(ARGV[6]))
local minted_free = v[2] and v[4] ~= '1' and tonumber(v[5] or '0') <= NOW
if token > cur or minted_free then
  redis.call('HSET', k, 'holder', holder, 'token', ARGV[5], 'expires_at', exp,
    'acquired_at', NOWS, 'external', '1')
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
