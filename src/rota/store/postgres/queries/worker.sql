-- Worker nodes: register, heartbeat, node state, claim (start_jobs), complete (list_nodes is
-- in nodes.sql), release, and the check behind wait_for_assignments.

-- ---- worker nodes ------------------------------------------------------------------------

-- name: register_node
WITH node AS (
    INSERT INTO nodes (id, name, slots, prefetch, resources, labels, queues, host, pid,
        state, registered_at, heartbeat_at, gone_at)
    VALUES (:id, :name, :slots, :prefetch, :resources::jsonb, :labels::jsonb,
        :queues::text[], :host, :pid, 'live', rota_now(), rota_now(), NULL)
    ON CONFLICT (id) DO UPDATE SET
        name = excluded.name, slots = excluded.slots, prefetch = excluded.prefetch,
        resources = excluded.resources, labels = excluded.labels, queues = excluded.queues,
        host = excluded.host, pid = excluded.pid, state = 'live',
        registered_at = excluded.registered_at, heartbeat_at = excluded.heartbeat_at,
        gone_at = NULL
)
SELECT pg_notify(:pending_channel, '')

-- name: heartbeat
-- Alive unless declared dead (or unknown); extend the leases the node still holds; report
-- the running jobs it lost and its running jobs an operator asked to cancel.
-- Committed without waiting for the WAL flush (``quiet``: SET LOCAL synchronous_commit =
-- off, as set_config in the statement's own transaction, so still one round trip). A
-- heartbeat lost to a server crash is harmless: it only moves heartbeat_at and the leases'
-- expiry forward, and the node's next beat (a second later) does that again; a later
-- synchronous commit flushes it with its own. What a beat reads back is never lost.
WITH quiet AS (
    SELECT set_config('synchronous_commit', 'off', true)
), node AS (
    UPDATE nodes SET heartbeat_at = rota_now()
    WHERE id = :node_id AND state <> 'dead'
    RETURNING id
), held AS (
    SELECT * FROM unnest(:ids::text[], :tokens::bigint[]) WITH ORDINALITY AS h (id, token, ord)
), locked AS (
    SELECT j.id FROM jobs j
    JOIN held h ON h.id = j.id AND h.token = j.token
    WHERE j.node_id = :node_id AND j.state = 'running' AND EXISTS (SELECT FROM node)
    ORDER BY j.id
    FOR UPDATE OF j
), extended AS (
    UPDATE jobs j SET lease_expires_at = rota_now() + :ttl
    FROM locked WHERE j.id = locked.id
    RETURNING j.id
)
SELECT
    EXISTS (SELECT FROM node),
    ARRAY(SELECT h.id FROM held h WHERE h.id NOT IN (SELECT id FROM extended) ORDER BY h.ord),
    ARRAY(
        SELECT id FROM jobs
        WHERE node_id = :node_id AND state = 'running' AND cancel_requested
            AND EXISTS (SELECT FROM node)
        ORDER BY seq
    )
FROM quiet

-- name: heartbeat_idle
-- The heartbeat of a node that reports no running job: nothing to extend, lose or cancel
-- (it runs nothing to stop), so one UPDATE of the node's row (heartbeat_at is in no index:
-- a HOT update), committed asynchronously as heartbeat. A row back: alive.
WITH quiet AS (
    SELECT set_config('synchronous_commit', 'off', true)
)
UPDATE nodes SET heartbeat_at = rota_now()
WHERE id = :node_id AND state <> 'dead' AND EXISTS (SELECT FROM quiet)
RETURNING true

-- name: set_node_state
WITH changed AS (
    UPDATE nodes
    SET state = :state,
        gone_at = CASE WHEN :state IN ('dead', 'stopped') THEN rota_now() ELSE gone_at END
    WHERE id = :id
    RETURNING 1
)
SELECT pg_notify(:pending_channel, '') FROM changed

-- name: complete_and_start
-- A worker's report and claim, in one statement (one round trip, one transaction): the
-- store's complete (empty :ids: none), then its start_jobs (:limit 0: none). Each row is
-- (the ids of the accepted outcomes, then a started job's columns, NULL if none started).
--
-- complete: accept each outcome only if its job is running with the same token; a failure
-- goes to retrying (due after its delay) while attempts are left, else dead. Jobs with
-- children that ended are queued for resolve_dependencies (has_children as of the row
-- lock: a child submitted meanwhile marked it first, or saw it final). The attempt of each
-- accepted outcome is closed (ended); an outcome whose attempt had already ended with the
-- same kind (a report retried after its reply was lost) is accepted again without a change
-- (again).
--
-- start: claim a batch of the node's assigned jobs (only while the node is live or
-- draining); SKIP LOCKED so concurrent callers for the same node never start one job twice.
-- Then, while the node is live and holds a current claim grant (claim_grants: its row's
-- lease still has that token, unexpired), fill the rest of :limit from the head of the
-- pending jobs in placement order (priority, then FIFO: jobs_pending_idx), stopping at the
-- first job that is not plain (resources, labels, affinity, concurrency or rate limit,
-- parents, an alloc spec) or not of a granted queue, so a claim never overtakes a job that needs
-- placement (pending -> running in one step, a new token as assign gives). Each start
-- opens an attempt in job_attempts and drops the job's attempts older than the last :keep
-- (tokens grow by one per placement). Completed rows are running, started ones assigned or
-- pending: the two halves never touch the same job.
--
-- Wake-ups: the done channel when an outcome was accepted; the scheduler (pending channel)
-- too unless :quiet, where only an outcome that is not a plain success wakes it, or a first
-- pending job left behind that this node may not claim itself (complete_and_start: the
-- node claims what comes next, its room refilled; the scheduler's idle cycle sees the rest).
WITH outcome AS (
    SELECT *
    FROM unnest(:ids::text[], :tokens::bigint[], :kinds::text[], :results::text[],
        :errors::text[], :tracebacks::text[], :delays::double precision[],
        :cut_shorts::text[])
        AS o (id, token, kind, result, error, traceback, delay, cut_short)
), decided AS (
    SELECT j.id, o.result, o.error, o.traceback, o.delay,
        -- stopped for a preemption (see Store.preempt): back to pending
        (o.kind IN ('cancelled', 'failed') AND j.cancel_requested AND coalesce(j.preempted_at >= j.started_at, false)) AS preempted,
        CASE
            WHEN o.kind IN ('cancelled', 'failed') AND j.cancel_requested AND coalesce(j.preempted_at >= j.started_at, false)
            THEN 'pending'
            ELSE CASE o.kind
            WHEN 'succeeded' THEN 'succeeded'
            WHEN 'cancelled' THEN 'cancelled'
            WHEN 'failed' THEN CASE WHEN j.cancel_requested THEN 'cancelled'
                WHEN j.attempts < j.max_attempts THEN 'retrying' ELSE 'dead' END
            ELSE 'dead'
        END END AS state
    FROM jobs j
    JOIN outcome o ON o.id = j.id AND o.token = j.token
    WHERE j.state = 'running'
    ORDER BY j.id  -- rows are locked in id order: concurrent batches never deadlock
    FOR UPDATE OF j
), done AS (
    UPDATE jobs j
    SET state = d.state,
        result = CASE WHEN d.state = 'succeeded' THEN d.result ELSE j.result END,
        error = CASE WHEN d.state = 'succeeded' THEN NULL WHEN d.preempted THEN j.error
            ELSE d.error END,
        traceback = CASE WHEN d.state = 'succeeded' OR d.preempted THEN NULL
            ELSE d.traceback END,
        lease_expires_at = NULL,
        scheduled_at = CASE WHEN d.state = 'retrying' THEN rota_now() + d.delay
            ELSE j.scheduled_at END,
        finished_at = CASE WHEN d.state IN ('retrying', 'pending') THEN NULL
            ELSE rota_now() END,
        -- a preempted job goes back to pending, its attempt not counted
        attempts = CASE WHEN d.preempted THEN greatest(j.attempts - 1, 0) ELSE j.attempts END,
        preemptions = j.preemptions + CASE WHEN d.preempted THEN 1 ELSE 0 END,
        cancel_requested = CASE WHEN d.preempted THEN false ELSE j.cancel_requested END,
        node_id = CASE WHEN d.preempted THEN NULL ELSE j.node_id END,
        started_at = CASE WHEN d.preempted THEN NULL ELSE j.started_at END
    FROM decided d
    WHERE j.id = d.id
    RETURNING j.id, j.state, j.has_children, j.concurrency_key, d.preempted
), ended AS (
    UPDATE job_attempts a
    SET ended_at = rota_now(), outcome = o.kind,
        cut_short = CASE WHEN d.preempted THEN 'preempted' ELSE o.cut_short END,
        error = o.error, traceback = o.traceback
    FROM done d JOIN outcome o ON o.id = d.id
    WHERE a.job_id = d.id AND a.token = o.token AND a.ended_at IS NULL
), again AS (
    SELECT a.job_id AS id FROM job_attempts a
    JOIN outcome o ON o.id = a.job_id AND o.token = a.token AND o.kind = a.outcome
), settled AS (
    INSERT INTO settle_parents (parent_id)
    SELECT id FROM done WHERE has_children IS TRUE AND state NOT IN ('retrying', 'pending')
), live AS (
    SELECT state FROM nodes WHERE id = :node_id AND state IN ('live', 'draining')
), picked AS (
    SELECT id FROM jobs
    WHERE node_id = :node_id AND state = 'assigned' AND EXISTS (SELECT FROM live)
    ORDER BY priority DESC, seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), granted AS (
    SELECT g.queues FROM claim_grants g
    JOIN leases l ON l.name = g.lease_name AND l.token = g.token AND l.expires_at > rota_now()
    WHERE g.node_id = :node_id AND EXISTS (SELECT FROM live WHERE state = 'live')
), head AS (
    SELECT j.id, j.priority, j.seq,
        j.resources = '{}'::jsonb AND j.labels = '{}'::jsonb AND j.affinity = '{}'::jsonb
            AND j.concurrency_key IS NULL AND coalesce(j.concurrency_limit, 0) = 0
            AND j.rate_limit IS NULL AND j.depends_on IS NULL AND j.alloc IS NULL
            AND j.queue = ANY (CAST((SELECT queues FROM granted) AS text[])) AS plain
    FROM jobs j
    WHERE j.state = 'pending' AND EXISTS (SELECT FROM granted)
    ORDER BY (-(j.priority::bigint)), j.seq
    LIMIT greatest(:limit - (SELECT count(*) FROM picked), 0)
    FOR UPDATE OF j SKIP LOCKED
), claimable AS (
    SELECT id FROM (
        SELECT id, bool_and(plain) OVER (ORDER BY (-(priority::bigint)), seq) AS ok FROM head
    ) h
    WHERE ok
), started AS (
    UPDATE jobs j
    SET state = 'running', attempts = j.attempts + 1, started_at = rota_now(),
        lease_expires_at = rota_now() + :ttl
    FROM picked
    WHERE j.id = picked.id
    RETURNING j.id, j.task, j.queue, j.payload, j.priority, j.state, j.attempts,
        j.max_attempts, j.timeout, j.resources, j.labels, j.affinity, j.backoff_base,
        j.backoff_max, j.created_at, j.scheduled_at, j.node_id, j.token, j.started_at,
        j.finished_at, j.lease_expires_at, j.result, j.error, j.traceback, j.cancel_requested,
        j.seq, j.depends_on, j.pass_results, j.workflow_id, j.unique_key, j.concurrency_key,
        j.concurrency_limit, j.rate_limit, j.alloc, j.preempted_at, j.preemptions
), claimed AS (
    UPDATE jobs j
    SET state = 'running', node_id = :node_id, token = j.token + 1, attempts = j.attempts + 1,
        started_at = rota_now(), lease_expires_at = rota_now() + :ttl
    FROM claimable
    WHERE j.id = claimable.id
    RETURNING j.id, j.task, j.queue, j.payload, j.priority, j.state, j.attempts,
        j.max_attempts, j.timeout, j.resources, j.labels, j.affinity, j.backoff_base,
        j.backoff_max, j.created_at, j.scheduled_at, j.node_id, j.token, j.started_at,
        j.finished_at, j.lease_expires_at, j.result, j.error, j.traceback, j.cancel_requested,
        j.seq, j.depends_on, j.pass_results, j.workflow_id, j.unique_key, j.concurrency_key,
        j.concurrency_limit, j.rate_limit, j.alloc, j.preempted_at, j.preemptions
), all_started AS (
    SELECT * FROM started UNION ALL SELECT * FROM claimed
), opened AS (
    INSERT INTO job_attempts AS a (job_id, token, attempt, node_id, started_at, claim)
    SELECT id, token, attempts, node_id, started_at, :claim FROM all_started
    ON CONFLICT (job_id, token) DO UPDATE SET attempt = excluded.attempt,
        node_id = excluded.node_id, started_at = excluded.started_at, ended_at = NULL,
        outcome = NULL, cut_short = NULL, error = NULL, traceback = NULL,
        claim = excluded.claim
), trimmed AS (
    DELETE FROM job_attempts a USING all_started s
    WHERE a.job_id = s.id AND a.token <= s.token - :keep
), woken AS (
    SELECT pg_notify(:done_channel, ''),
        CASE WHEN NOT :quiet
            OR EXISTS (
                SELECT FROM done
                WHERE state <> 'succeeded' OR has_children IS TRUE
                    OR concurrency_key IS NOT NULL
            )
            OR NOT coalesce((
                SELECT coalesce(j.resources = '{}'::jsonb AND j.labels = '{}'::jsonb AND j.affinity = '{}'::jsonb
            AND j.concurrency_key IS NULL AND coalesce(j.concurrency_limit, 0) = 0
            AND j.rate_limit IS NULL AND j.depends_on IS NULL AND j.alloc IS NULL
            AND j.queue = ANY (CAST((SELECT queues FROM granted) AS text[])), false)
                FROM jobs j
                WHERE j.state = 'pending' AND j.id NOT IN (SELECT id FROM claimable)
                ORDER BY (-(j.priority::bigint)), j.seq
                LIMIT 1
            ), true)
        THEN pg_notify(:pending_channel, '') END
    WHERE EXISTS (SELECT FROM done)
)
SELECT ARRAY(SELECT id FROM done UNION ALL SELECT id FROM again) AS accepted, s.*
FROM (SELECT count(*) FROM woken) w
LEFT JOIN all_started s ON true

-- name: claimed_jobs
-- The jobs a start_jobs call (:claim) started and that still run: what a retry of that call
-- returns when the first try committed but its reply was lost.
SELECT j.id, j.task, j.queue, j.payload, j.priority, j.state, j.attempts, j.max_attempts,
    j.timeout, j.resources, j.labels, j.affinity, j.backoff_base, j.backoff_max, j.created_at,
    j.scheduled_at, j.node_id, j.token, j.started_at, j.finished_at, j.lease_expires_at,
    j.result, j.error, j.traceback, j.cancel_requested, j.seq, j.depends_on, j.pass_results,
    j.workflow_id, j.unique_key, j.concurrency_key, j.concurrency_limit, j.rate_limit,
    j.alloc, j.preempted_at, j.preemptions
FROM job_attempts a
JOIN jobs j ON j.id = a.job_id AND j.token = a.token AND j.state = 'running'
WHERE a.node_id = :node_id AND a.claim = :claim AND a.ended_at IS NULL

-- name: release_jobs
-- Hand the node's jobs back to pending; a running job's attempt is not counted (its
-- history row ends 'released', cut short by 'shutdown').
WITH held AS (
    SELECT * FROM unnest(:ids::text[], :tokens::bigint[]) AS h (id, token)
), locked AS (
    SELECT j.id, j.token, j.state AS old_state FROM jobs j
    JOIN held h ON h.id = j.id AND h.token = j.token
    WHERE j.node_id = :node_id AND j.state IN ('assigned', 'running')
    ORDER BY j.id
    FOR UPDATE OF j
), released AS (
    UPDATE jobs j
    -- (a job whose preemption is pending goes back to pending too, and counts it)
    SET state = CASE WHEN j.cancel_requested AND NOT coalesce(j.preempted_at >= j.started_at, false) THEN 'cancelled'
            ELSE 'pending' END,
        finished_at = CASE WHEN j.cancel_requested AND NOT coalesce(j.preempted_at >= j.started_at, false) THEN rota_now() END,
        node_id = CASE WHEN j.cancel_requested AND NOT coalesce(j.preempted_at >= j.started_at, false) THEN j.node_id END,
        preemptions = j.preemptions
            + CASE WHEN j.cancel_requested AND coalesce(j.preempted_at >= j.started_at, false) THEN 1 ELSE 0 END,
        cancel_requested = j.cancel_requested AND NOT coalesce(j.preempted_at >= j.started_at, false),
        started_at = NULL, lease_expires_at = NULL,
        attempts = CASE WHEN j.state = 'running' THEN greatest(j.attempts - 1, 0)
            ELSE j.attempts END
    FROM locked WHERE j.id = locked.id
    RETURNING j.id, j.state, j.has_children
), closed AS (
    UPDATE job_attempts a
    SET ended_at = rota_now(), outcome = 'released', cut_short = 'shutdown'
    FROM locked l
    WHERE l.old_state = 'running' AND a.job_id = l.id AND a.token = l.token
        AND a.ended_at IS NULL
), settled AS (
    INSERT INTO settle_parents (parent_id)
    SELECT id FROM released WHERE has_children IS TRUE AND state = 'cancelled'
), woken AS (
    SELECT pg_notify(:pending_channel, '') WHERE EXISTS (SELECT FROM released)
)
SELECT (SELECT count(*) FROM released), (SELECT count(*) FROM woken)

-- name: has_assigned
SELECT EXISTS (SELECT FROM jobs WHERE node_id = :node_id AND state = 'assigned')
