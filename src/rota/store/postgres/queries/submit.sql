-- Producers and operators: submit (plain, and with parents or unique keys), read, count,
-- cancel and retry jobs.

-- ---- producers and operators -------------------------------------------------------------

-- name: submit
-- One statement for the whole batch: column arrays, unnested in order (so seq is FIFO
-- within the batch). A job is due at its eta, else now + delay: scheduled while that is in
-- the future, pending otherwise.
WITH new AS (
    SELECT *
    FROM unnest(
        :ids::text[], :tasks::text[], :queues::text[], :payloads::text[],
        :priorities::integer[], :max_attempts::integer[], :timeouts::double precision[],
        :resources::jsonb[], :labels::jsonb[], :affinity::jsonb[], :delays::double precision[],
        :etas::double precision[], :backoff_bases::double precision[],
        :backoff_maxes::double precision[], :allocs::text[]
    ) WITH ORDINALITY AS n (id, task, queue, payload, priority, max_attempts, timeout,
        resources, labels, affinity, delay, eta, backoff_base, backoff_max, alloc, ord)
), inserted AS (
    INSERT INTO jobs (id, task, queue, payload, priority, state, max_attempts, timeout,
        resources, labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, alloc)
    SELECT id, task, queue, payload, priority,
        CASE WHEN coalesce(eta, rota_now() + delay) > rota_now() THEN 'scheduled'
            ELSE 'pending' END,
        max_attempts, timeout, resources, labels, affinity, backoff_base, backoff_max,
        rota_now(), coalesce(eta, rota_now() + delay), alloc
    FROM new
    ORDER BY ord
)
SELECT pg_notify(:pending_channel, '')

-- name: submit_flow
-- ``submit`` for a batch where some job uses a flow feature (parents, a unique key, a
-- concurrency key, a rate limit, a workflow id). Run inside the transaction that checked
-- the parents (``lock_parents``) and the unique keys. A job with parents starts
-- 'waiting'; its parents come as a JSON array text (``:depends_on``, NULL for none);
-- ``:has_children`` marks the jobs that later jobs of the batch depend on; ``:settle_ids``
-- are children with a parent that is final already (resolve_dependencies looks at them).
WITH new AS (
    SELECT *
    FROM unnest(
        :ids::text[], :tasks::text[], :queues::text[], :payloads::text[],
        :priorities::integer[], :max_attempts::integer[], :timeouts::double precision[],
        :resources::jsonb[], :labels::jsonb[], :affinity::jsonb[], :delays::double precision[],
        :etas::double precision[], :backoff_bases::double precision[],
        :backoff_maxes::double precision[], :depends_on::text[], :pass_results::boolean[],
        :workflow_ids::text[], :unique_keys::text[], :concurrency_keys::text[],
        :concurrency_limits::integer[], :rate_limits::text[], :has_children::boolean[],
        :allocs::text[]
    ) WITH ORDINALITY AS n (id, task, queue, payload, priority, max_attempts, timeout,
        resources, labels, affinity, delay, eta, backoff_base, backoff_max, depends_on,
        pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit, rate_limit,
        has_children, alloc, ord)
), inserted AS (
    INSERT INTO jobs (id, task, queue, payload, priority, state, max_attempts, timeout,
        resources, labels, affinity, backoff_base, backoff_max, created_at, scheduled_at,
        depends_on, pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
        rate_limit, has_children, alloc)
    SELECT id, task, queue, payload, priority,
        CASE WHEN depends_on IS NOT NULL THEN 'waiting'
            WHEN coalesce(eta, rota_now() + delay) > rota_now() THEN 'scheduled'
            ELSE 'pending' END,
        max_attempts, timeout, resources, labels, affinity, backoff_base, backoff_max,
        rota_now(), coalesce(eta, rota_now() + delay),
        CASE WHEN depends_on IS NOT NULL THEN ARRAY(
            SELECT d.parent_id
            FROM jsonb_array_elements_text(depends_on::jsonb) WITH ORDINALITY AS d (parent_id, k)
            ORDER BY d.k
        ) END,
        pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit, rate_limit,
        has_children, alloc
    FROM new
    ORDER BY ord
), settle AS (
    INSERT INTO settle_children (job_id)
    SELECT DISTINCT unnest(:settle_ids::text[])
    ON CONFLICT DO NOTHING
)
SELECT pg_notify(:pending_channel, '')

-- name: lock_parents
-- The parents a batch names outside itself, locked (in id order) so that none becomes
-- final unseen while the children are written: either it is final now (the caller queues
-- the child in settle_children) or it is marked has_children first (then the statement
-- that ends it queues it in settle_parents). Missing ids are missing from the result.
WITH locked AS (
    SELECT id, state, has_children FROM jobs
    WHERE id = ANY(:ids::text[])
    ORDER BY id
    FOR UPDATE
), marked AS (
    UPDATE jobs j SET has_children = true
    FROM locked l
    WHERE j.id = l.id AND l.has_children IS NOT TRUE
)
SELECT id, state FROM locked

-- name: claim_unique_keys
-- Take each unique key for the batch's job, or lock the row of the key held already and
-- return its holder (job_id differs from the one offered). In key order: concurrent batches
-- never deadlock, and a concurrent submitter of the same key waits here for this one's
-- transaction (no serialization error at READ COMMITTED).
INSERT INTO unique_keys AS u (key, job_id, expires_at)
SELECT k.key, k.job_id, rota_now() + k.unique_for
FROM unnest(:keys::text[], :job_ids::text[], :unique_fors::double precision[])
    AS k (key, job_id, unique_for)
ORDER BY k.key
ON CONFLICT (key) DO UPDATE SET job_id = u.job_id
RETURNING u.key, u.job_id

-- name: take_unique_keys
-- Of the keys ``claim_unique_keys`` found held (and locked), take over those whose holder
-- is gone, final or past its unique_for. A statement of its own: its snapshot sees a
-- holder committed while the claim waited for the key's lock.
UPDATE unique_keys u
SET job_id = k.job_id, expires_at = rota_now() + k.unique_for
FROM unnest(:keys::text[], :job_ids::text[], :unique_fors::double precision[])
    AS k (key, job_id, unique_for)
WHERE u.key = k.key
    AND (u.expires_at <= rota_now() OR NOT EXISTS (
        SELECT FROM jobs j
        WHERE j.id = u.job_id
            AND j.state NOT IN ('succeeded', 'dead', 'cancelled', 'upstream_failed')
    ))
RETURNING u.key

-- name: get_jobs
-- Job rows always list their columns in the order of ``JobRecord``'s fields (never ``*``:
-- a prepared ``*`` would break when a migration adds a column).
SELECT id, task, queue, payload, priority, state, attempts, max_attempts, timeout, resources,
    labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, node_id, token,
    started_at, finished_at, lease_expires_at, result, error, traceback, cancel_requested, seq,
    depends_on, pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
    rate_limit, alloc, preempted_at, preemptions
FROM jobs
WHERE id = ANY(:ids::text[])

-- name: list_jobs
SELECT id, task, queue, payload, priority, state, attempts, max_attempts, timeout, resources,
    labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, node_id, token,
    started_at, finished_at, lease_expires_at, result, error, traceback, cancel_requested, seq,
    depends_on, pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
    rate_limit, alloc, preempted_at, preemptions
FROM jobs
WHERE (:state::text IS NULL OR state = :state::text)
    AND (:queue::text IS NULL OR queue = :queue::text)
    AND (:task::text IS NULL OR task = :task::text)
    AND (:node_id::text IS NULL OR node_id = :node_id::text)
ORDER BY seq DESC
LIMIT :limit

-- name: count_jobs
SELECT queue, state, count(*) FROM jobs GROUP BY queue, state

-- name: lock_job
SELECT state, node_id FROM jobs WHERE id = :id FOR UPDATE

-- name: cancel_now
-- (After lock_job.) A job with children is queued for resolve_dependencies.
WITH cancelled AS (
    UPDATE jobs
    SET state = 'cancelled', finished_at = rota_now(), lease_expires_at = NULL,
        error = 'cancelled'
    WHERE id = :id
    RETURNING id, has_children
)
INSERT INTO settle_parents (parent_id) SELECT id FROM cancelled WHERE has_children IS TRUE

-- name: request_cancel
-- (A preemption pending becomes a plain cancel: preempted_at is cleared.)
UPDATE jobs j SET cancel_requested = true,
    preempted_at = CASE WHEN coalesce(j.preempted_at >= j.started_at, false) THEN NULL ELSE j.preempted_at END
WHERE id = :id

-- name: retry_dead
-- A fresh set of attempts; the job keeps its seq (its place in the FIFO) and its last
-- error (the record of why it died).
WITH locked AS (
    SELECT id FROM jobs WHERE id = ANY(:ids::text[]) AND state = 'dead' ORDER BY id FOR UPDATE
), retried AS (
    UPDATE jobs j
    SET state = 'pending', attempts = 0, node_id = NULL, scheduled_at = rota_now(),
        started_at = NULL, finished_at = NULL, lease_expires_at = NULL,
        cancel_requested = false
    FROM locked WHERE j.id = locked.id
    RETURNING 1
), woken AS (
    SELECT pg_notify(:pending_channel, '') WHERE EXISTS (SELECT FROM retried)
)
SELECT (SELECT count(*) FROM retried), (SELECT count(*) FROM woken)
