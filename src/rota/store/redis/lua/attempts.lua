-- The attempt history of each job ("attempts:<id>", see the header): opened by start,
-- closed by complete, reap (take_back) and release, in the same script; the job's last
-- attempt_history attempts are kept, and the list expires and is purged with the job.

local ATTEMPTS_KEPT = 20 -- when the caller does not say (rota.store.contract.ATTEMPT_HISTORY)

local function akey(id)
  return B .. 'attempts:' .. id
end

-- A fencing token as exact decimal text: tokens are Redis' clock in microseconds (about
-- 1.7e15), past what tostring() and cjson print exactly (14 significant digits).
local function token_text(token)
  return string.format('%d', tonumber(token) or 0)
end

-- Open an attempt of job `id` at NOW; keep the last `keep` of the job's attempts.
local function open_attempt(id, token, attempt, node, keep)
  local k = akey(id)
  keep = keep or ATTEMPTS_KEPT
  local n = redis.call('RPUSH', k, cjson.encode({ token = token_text(token),
    attempt = tonumber(attempt), node_id = node, started_at = NOWS }))
  if n > keep then
    redis.call('LTRIM', k, -keep, -1)
  end
end

-- The position (from the end, -1 the newest) and entry of the job's attempt with `token`.
local function find_attempt(id, token)
  local k = akey(id)
  token = token_text(token)
  for i = -1, -redis.call('LLEN', k), -1 do
    local a = cjson.decode(redis.call('LINDEX', k, i))
    if token_text(a.token) == token then
      return i, a
    end
  end
  return nil, nil
end

-- End the open attempt (job, token): outcome, how it was cut short, error, traceback
-- ("" or nil = none).
local function close_attempt(id, token, outcome, cut, err, tb)
  local i, a = find_attempt(id, token)
  if not i or a.ended_at then
    return
  end
  a.ended_at, a.outcome = NOWS, outcome
  if cut and cut ~= '' then
    a.cut_short = cut
  end
  if err and err ~= '' then
    a.error = err
  end
  if tb and tb ~= '' then
    a.traceback = tb
  end
  redis.call('LSET', akey(id), i, cjson.encode(a))
end

-- Whether the attempt (job, token) already ended with `outcome` (a retried report).
local function attempt_ended_as(id, token, outcome)
  local i, a = find_attempt(id, token)
  return i ~= nil and a.outcome == outcome
end

-- name: job_attempts
-- ARGV[3] = job id. The job's attempts, oldest first, as JSON texts.
return redis.call('LRANGE', B .. 'attempts:' .. ARGV[3], 0, -1)
