-- Every statement the PostgreSQL store runs, by name (``-- name: NAME``), each one atomic.
--
-- Parameters are written ``:name`` and bound by the server (psycopg turns them into
-- placeholders when this file is loaded); no value is ever formatted into SQL text. Tables
-- are unqualified: the store puts its schema first on the search_path. Times come from
-- ``rota_now()`` (the server's clock, in unix seconds), never from the client.
--
-- Wake-ups are NOTIFYs sent in the same transaction as the change (so they are delivered
-- on commit only): the channel names are passed in as parameters (they are namespaced by
-- the schema, see ``postgres.py``); a node's channel is ``:node_prefix`` followed by the
-- first 16 hex digits of md5(node id).

-- ---- migrations --------------------------------------------------------------------------

-- name: schema_exists
SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = :schema)

-- name: migration_lock
-- Serialise concurrent migrations of one schema (released at commit).
SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS rota_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: applied_migrations
SELECT version FROM rota_migrations ORDER BY version

-- name: record_migration
INSERT INTO rota_migrations (version, name) VALUES (:version, :name)

-- ---- connections -------------------------------------------------------------------------

-- name: set_search_path
SELECT set_config('search_path', :search_path, :is_local)

-- name: session_settings
-- Every statement of the store is short: JIT compilation (tens of ms) never pays off, and
-- a statement with a subplan (prune_jobs) can be estimated above jit_above_cost.
SELECT set_config('jit', 'off', false)

-- name: get_search_path
SELECT current_setting('search_path')

-- name: notify
SELECT pg_notify(:channel, :payload)

-- name: now
SELECT rota_now()

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
        :backoff_maxes::double precision[]
    ) WITH ORDINALITY AS n (id, task, queue, payload, priority, max_attempts, timeout,
        resources, labels, affinity, delay, eta, backoff_base, backoff_max, ord)
), inserted AS (
    INSERT INTO jobs (id, task, queue, payload, priority, state, max_attempts, timeout,
        resources, labels, affinity, backoff_base, backoff_max, created_at, scheduled_at)
    SELECT id, task, queue, payload, priority,
        CASE WHEN coalesce(eta, rota_now() + delay) > rota_now() THEN 'scheduled'
            ELSE 'pending' END,
        max_attempts, timeout, resources, labels, affinity, backoff_base, backoff_max,
        rota_now(), coalesce(eta, rota_now() + delay)
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
        :concurrency_limits::integer[], :rate_limits::text[], :has_children::boolean[]
    ) WITH ORDINALITY AS n (id, task, queue, payload, priority, max_attempts, timeout,
        resources, labels, affinity, delay, eta, backoff_base, backoff_max, depends_on,
        pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit, rate_limit,
        has_children, ord)
), inserted AS (
    INSERT INTO jobs (id, task, queue, payload, priority, state, max_attempts, timeout,
        resources, labels, affinity, backoff_base, backoff_max, created_at, scheduled_at,
        depends_on, pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
        rate_limit, has_children)
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
        has_children
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
    rate_limit
FROM jobs
WHERE id = ANY(:ids::text[])

-- name: list_jobs
SELECT id, task, queue, payload, priority, state, attempts, max_attempts, timeout, resources,
    labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, node_id, token,
    started_at, finished_at, lease_expires_at, result, error, traceback, cancel_requested, seq,
    depends_on, pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
    rate_limit
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
UPDATE jobs SET cancel_requested = true WHERE id = :id

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
WITH node AS (
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

-- name: set_node_state
WITH changed AS (
    UPDATE nodes
    SET state = :state,
        gone_at = CASE WHEN :state IN ('dead', 'stopped') THEN rota_now() ELSE gone_at END
    WHERE id = :id
    RETURNING 1
)
SELECT pg_notify(:pending_channel, '') FROM changed

-- name: list_nodes
SELECT n.id, n.name, n.slots, n.prefetch, n.resources, n.labels, n.queues, n.host, n.pid,
    n.state, n.registered_at, n.heartbeat_at,
    coalesce(load.assigned, 0) AS assigned, coalesce(load.running, 0) AS running,
    coalesce(used.used, '{}'::jsonb) AS used
FROM nodes n
LEFT JOIN (
    SELECT node_id, count(*) FILTER (WHERE state = 'assigned') AS assigned,
        count(*) FILTER (WHERE state = 'running') AS running
    FROM jobs
    WHERE state IN ('assigned', 'running')
    GROUP BY node_id
) load ON load.node_id = n.id
LEFT JOIN (
    SELECT node_id, jsonb_object_agg(name, total) AS used
    FROM (
        SELECT j.node_id, r.key AS name, sum(r.value::double precision) AS total
        FROM jobs j, jsonb_each(j.resources) r
        WHERE j.state IN ('assigned', 'running')
        GROUP BY j.node_id, r.key
    ) per_resource
    GROUP BY node_id
) used ON used.node_id = n.id
WHERE :states::text[] IS NULL OR n.state = ANY(:states::text[])
ORDER BY n.registered_at, n.id

-- name: start_jobs
-- Claim a batch of the node's assigned jobs (only while the node is live or draining);
-- SKIP LOCKED so concurrent callers for the same node never start one job twice.
WITH picked AS (
    SELECT id FROM jobs
    WHERE node_id = :node_id AND state = 'assigned'
        AND EXISTS (
            SELECT FROM nodes WHERE id = :node_id AND state IN ('live', 'draining')
        )
    ORDER BY priority DESC, seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j
SET state = 'running', attempts = j.attempts + 1, started_at = rota_now(),
    lease_expires_at = rota_now() + :ttl
FROM picked
WHERE j.id = picked.id
RETURNING j.id, j.task, j.queue, j.payload, j.priority, j.state, j.attempts, j.max_attempts,
    j.timeout, j.resources, j.labels, j.affinity, j.backoff_base, j.backoff_max, j.created_at,
    j.scheduled_at, j.node_id, j.token, j.started_at, j.finished_at, j.lease_expires_at,
    j.result, j.error, j.traceback, j.cancel_requested, j.seq, j.depends_on, j.pass_results,
    j.workflow_id, j.unique_key, j.concurrency_key, j.concurrency_limit, j.rate_limit

-- name: complete
-- Accept each outcome only if its job is running with the same token; a failure goes to
-- retrying (due after its delay) while attempts are left, else dead. Jobs with children
-- that ended are queued for resolve_dependencies (has_children as of the row lock: a child
-- submitted meanwhile marked it first, or saw it final).
WITH outcome AS (
    SELECT *
    FROM unnest(:ids::text[], :tokens::bigint[], :kinds::text[], :results::text[],
        :errors::text[], :tracebacks::text[], :delays::double precision[])
        AS o (id, token, kind, result, error, traceback, delay)
), decided AS (
    SELECT j.id, o.result, o.error, o.traceback, o.delay,
        CASE o.kind
            WHEN 'succeeded' THEN 'succeeded'
            WHEN 'cancelled' THEN 'cancelled'
            WHEN 'failed' THEN CASE WHEN j.cancel_requested THEN 'cancelled'
                WHEN j.attempts < j.max_attempts THEN 'retrying' ELSE 'dead' END
            ELSE 'dead'
        END AS state
    FROM jobs j
    JOIN outcome o ON o.id = j.id AND o.token = j.token
    WHERE j.state = 'running'
    ORDER BY j.id  -- rows are locked in id order: concurrent batches never deadlock
    FOR UPDATE OF j
), done AS (
    UPDATE jobs j
    SET state = d.state,
        result = CASE WHEN d.state = 'succeeded' THEN d.result ELSE j.result END,
        error = CASE WHEN d.state = 'succeeded' THEN NULL ELSE d.error END,
        traceback = CASE WHEN d.state = 'succeeded' THEN NULL ELSE d.traceback END,
        lease_expires_at = NULL,
        scheduled_at = CASE WHEN d.state = 'retrying' THEN rota_now() + d.delay
            ELSE j.scheduled_at END,
        finished_at = CASE WHEN d.state = 'retrying' THEN NULL ELSE rota_now() END
    FROM decided d
    WHERE j.id = d.id
    RETURNING j.id, j.state, j.has_children
), settled AS (
    INSERT INTO settle_parents (parent_id)
    SELECT id FROM done WHERE has_children IS TRUE AND state <> 'retrying'
), woken AS (
    SELECT pg_notify(:pending_channel, ''), pg_notify(:done_channel, '')
    WHERE EXISTS (SELECT FROM done)
)
SELECT id FROM done
UNION ALL
SELECT NULL FROM woken

-- name: release_jobs
-- Hand the node's jobs back to pending; a running job's attempt is not counted.
WITH held AS (
    SELECT * FROM unnest(:ids::text[], :tokens::bigint[]) AS h (id, token)
), locked AS (
    SELECT j.id FROM jobs j
    JOIN held h ON h.id = j.id AND h.token = j.token
    WHERE j.node_id = :node_id AND j.state IN ('assigned', 'running')
    ORDER BY j.id
    FOR UPDATE OF j
), released AS (
    UPDATE jobs j
    SET state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'pending' END,
        finished_at = CASE WHEN j.cancel_requested THEN rota_now() END,
        node_id = CASE WHEN j.cancel_requested THEN j.node_id END,
        started_at = NULL, lease_expires_at = NULL,
        attempts = CASE WHEN j.state = 'running' THEN greatest(j.attempts - 1, 0)
            ELSE j.attempts END
    FROM locked WHERE j.id = locked.id
    RETURNING j.id, j.state, j.has_children
), settled AS (
    INSERT INTO settle_parents (parent_id)
    SELECT id FROM released WHERE has_children IS TRUE AND state = 'cancelled'
), woken AS (
    SELECT pg_notify(:pending_channel, '') WHERE EXISTS (SELECT FROM released)
)
SELECT (SELECT count(*) FROM released), (SELECT count(*) FROM woken)

-- ---- scheduler ---------------------------------------------------------------------------

-- name: acquire_lease
-- Renew (same token) if the holder has it, take it with token + 1 if it is free or
-- expired; nothing is returned if someone else holds it.
INSERT INTO leases AS l (name, holder, token, acquired_at, expires_at)
VALUES (:name, :holder, 1, rota_now(), rota_now() + :ttl)
ON CONFLICT (name) DO UPDATE SET
    token = CASE WHEN l.holder = excluded.holder AND l.expires_at > rota_now()
        THEN l.token ELSE l.token + 1 END,
    acquired_at = CASE WHEN l.holder = excluded.holder AND l.expires_at > rota_now()
        THEN l.acquired_at ELSE excluded.acquired_at END,
    holder = excluded.holder,
    expires_at = excluded.expires_at
WHERE (l.holder = excluded.holder AND l.expires_at > rota_now()) OR l.expires_at <= rota_now()
RETURNING name, holder, token, expires_at, acquired_at

-- name: adopt_lease
-- A token minted outside the store (ZooKeeper): a higher one takes the lease, the same
-- one renews it for the same holder, an older one changes nothing (no row returned).
INSERT INTO leases AS l (name, holder, token, acquired_at, expires_at)
VALUES (:name, :holder, :token, rota_now(), rota_now() + :ttl)
ON CONFLICT (name) DO UPDATE SET
    acquired_at = CASE WHEN l.token = excluded.token THEN l.acquired_at
        ELSE excluded.acquired_at END,
    holder = excluded.holder,
    token = excluded.token,
    expires_at = excluded.expires_at
WHERE excluded.token > l.token OR (excluded.token = l.token AND excluded.holder = l.holder)
RETURNING name, holder, token, expires_at, acquired_at

-- name: release_lease
-- Expire it but keep the row: the next holder's token is still higher.
UPDATE leases SET expires_at = rota_now()
WHERE name = :name AND holder = :holder AND token = :token AND expires_at > rota_now()

-- name: get_lease
SELECT name, holder, token, expires_at, acquired_at
FROM leases
WHERE name = :name AND expires_at > rota_now()

-- name: fence
-- The caller's lease, if it is still the current, unexpired one; FOR SHARE keeps it so
-- until the end of the transaction.
SELECT token FROM leases
WHERE name = :lease_name AND holder = :holder AND token = :token AND expires_at > rota_now()
FOR SHARE

-- name: promote_due
WITH fence AS (
    SELECT token FROM leases
    WHERE name = :lease_name AND holder = :holder AND token = :token
        AND expires_at > rota_now()
    FOR SHARE
), due AS (
    SELECT id FROM jobs
    WHERE state IN ('scheduled', 'retrying') AND scheduled_at <= rota_now()
        AND EXISTS (SELECT FROM fence)
    ORDER BY scheduled_at, seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), promoted AS (
    UPDATE jobs j SET state = 'pending' FROM due WHERE j.id = due.id RETURNING 1
)
SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM promoted)

-- name: reap_nodes
-- Declare dead the nodes silent for longer than the failure timeout.
UPDATE nodes SET state = 'dead', gone_at = rota_now()
WHERE state IN ('live', 'draining') AND heartbeat_at < rota_now() - :failure_timeout
RETURNING id

-- name: reap_jobs
-- Take back the jobs of nodes that are not live or draining (dead, stopped, unknown) and
-- the running jobs whose lease expired: assigned ones go back to pending untouched, running
-- ones have had their attempt counted and go again (pending) or are dead.
WITH lost AS (
    SELECT j.id, j.state AS old_state,
        CASE WHEN j.state = 'running' AND j.cancel_requested THEN 'cancelled'
            WHEN j.state = 'assigned' OR j.attempts < j.max_attempts THEN 'pending'
            ELSE 'dead' END AS state,
        CASE WHEN j.lease_expires_at < rota_now() THEN 'lease expired'
            ELSE 'node stopped heartbeating' END AS reason
    FROM jobs j
    LEFT JOIN nodes n ON n.id = j.node_id
    WHERE j.state IN ('assigned', 'running')
        AND (n.state IS NULL OR n.state NOT IN ('live', 'draining')
            OR (j.state = 'running' AND j.lease_expires_at < rota_now()))
    FOR UPDATE OF j SKIP LOCKED
), taken AS (
    UPDATE jobs j
    SET state = lost.state,
        node_id = CASE WHEN lost.state = 'pending' THEN NULL ELSE j.node_id END,
        finished_at = CASE WHEN lost.state IN ('dead', 'cancelled') THEN rota_now() END,
        lease_expires_at = NULL,
        error = CASE
            WHEN lost.state = 'cancelled' THEN 'cancelled'
            WHEN lost.old_state = 'assigned' THEN j.error
            WHEN lost.state = 'dead' THEN 'lease lost on the last attempt: ' || lost.reason
            ELSE 'lease lost: ' || lost.reason
        END
    FROM lost
    WHERE j.id = lost.id
    RETURNING j.id, lost.old_state, j.state, j.has_children
), settled AS (
    INSERT INTO settle_parents (parent_id)
    SELECT id FROM taken WHERE has_children IS TRUE AND state IN ('dead', 'cancelled')
), woken AS (
    SELECT pg_notify(:done_channel, '') WHERE EXISTS (SELECT FROM taken WHERE state = 'dead')
)
SELECT
    (SELECT count(*) FROM taken WHERE old_state = 'assigned'),
    (SELECT count(*) FROM taken WHERE old_state = 'running' AND state = 'pending'),
    (SELECT count(*) FROM taken WHERE state = 'dead'),
    (SELECT count(*) FROM woken)

-- name: pending_jobs
-- Served by jobs_pending_idx: an Index Scan whose condition is the cursor, whatever the
-- number of finished rows (see tests/test_postgres_store.py::test_pending_query_uses_index).
SELECT id, queue, priority, seq, resources, labels, affinity, task, concurrency_key,
    concurrency_limit, rate_limit
FROM jobs
WHERE state = 'pending' AND (-(priority::bigint), seq) > (:neg_priority::bigint, :seq::bigint)
ORDER BY -(priority::bigint), seq
LIMIT :limit

-- name: assign
-- Fenced batch placement (job ids are distinct): jobs still pending (SKIP LOCKED: a job
-- being claimed elsewhere is skipped) on nodes still live, each with a new token; each node
-- with new work is woken.
WITH fence AS (
    SELECT token FROM leases
    WHERE name = :lease_name AND holder = :holder AND token = :token
        AND expires_at > rota_now()
    FOR SHARE
), wanted AS (
    SELECT * FROM unnest(:job_ids::text[], :node_ids::text[]) AS w (job_id, node_id)
), picked AS (
    SELECT j.id, w.node_id
    FROM jobs j
    JOIN wanted w ON w.job_id = j.id
    JOIN nodes n ON n.id = w.node_id
    WHERE j.state = 'pending' AND n.state = 'live' AND EXISTS (SELECT FROM fence)
    FOR UPDATE OF j SKIP LOCKED
), placed AS (
    UPDATE jobs j SET state = 'assigned', node_id = p.node_id, token = j.token + 1
    FROM picked p
    WHERE j.id = p.id
    RETURNING j.node_id
), woken AS (
    SELECT node_id, count(*) AS placed, pg_notify(:node_prefix || left(md5(node_id), 16), '')
    FROM placed
    GROUP BY node_id
)
SELECT (SELECT count(*) FROM fence), (SELECT coalesce(sum(placed), 0) FROM woken)

-- ---- workflows, periodic jobs and flow control ----------------------------------------

-- name: resolve_dependencies
-- Fenced. Take up to :limit parents that became final (settle_parents, appended by the
-- statements that end jobs with has_children) and up to :limit queued children
-- (settle_children); their waiting children are the candidates (found through
-- jobs_children_idx). The first :limit candidates are decided now, the others queued in
-- settle_children for the next call: to pending once every parent succeeded, to
-- upstream_failed (final, error naming the first failed parent) once one is dead,
-- cancelled, upstream_failed or gone; others stay waiting until their next parent ends.
-- Rows are looked up by ``id = ANY(ARRAY(...))`` (index scans whatever the planner guesses
-- of the CTEs' sizes), so a call costs nothing like the number of waiting jobs
-- (tests/test_postgres_store.py checks the plan).
WITH fence AS (
    SELECT token FROM leases
    WHERE name = :lease_name AND holder = :holder AND token = :token
        AND expires_at > rota_now()
    FOR SHARE
), events AS (
    SELECT seq, parent_id FROM settle_parents
    WHERE EXISTS (SELECT FROM fence)
    ORDER BY seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), events_taken AS (
    DELETE FROM settle_parents WHERE seq = ANY(ARRAY(SELECT seq FROM events))
), queued AS (
    SELECT job_id FROM settle_children
    WHERE EXISTS (SELECT FROM fence)
    ORDER BY job_id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), candidates AS (
    SELECT job_id FROM queued
    UNION
    SELECT j.id FROM jobs j
    WHERE j.state = 'waiting' AND j.depends_on && ARRAY(SELECT parent_id FROM events)
        AND EXISTS (SELECT FROM events)
), picked AS (
    SELECT job_id FROM candidates ORDER BY job_id LIMIT :limit
), later AS (
    INSERT INTO settle_children (job_id)
    SELECT job_id FROM candidates WHERE job_id NOT IN (SELECT job_id FROM picked)
    ON CONFLICT DO NOTHING
), dequeued AS (
    DELETE FROM settle_children WHERE job_id = ANY(ARRAY(SELECT job_id FROM picked))
), children AS (
    SELECT id, depends_on FROM jobs
    WHERE id = ANY(ARRAY(SELECT job_id FROM picked)) AND state = 'waiting'
    ORDER BY id
    FOR UPDATE
), parents AS (
    SELECT id, state FROM jobs
    WHERE id = ANY(ARRAY(SELECT DISTINCT unnest(depends_on) FROM children))
), verdict AS (
    SELECT c.id,
        (array_agg(d.parent_id || ' is ' || coalesce(p.state, 'gone') ORDER BY d.k)
            FILTER (WHERE p.state IS NULL
                OR p.state IN ('dead', 'cancelled', 'upstream_failed')))[1] AS failed,
        bool_and(p.state IS NOT DISTINCT FROM 'succeeded') AS ready
    FROM children c
    CROSS JOIN LATERAL unnest(c.depends_on) WITH ORDINALITY AS d (parent_id, k)
    LEFT JOIN parents p ON p.id = d.parent_id
    GROUP BY c.id
), moved AS (
    UPDATE jobs j
    SET state = CASE WHEN v.failed IS NULL THEN 'pending' ELSE 'upstream_failed' END,
        finished_at = CASE WHEN v.failed IS NULL THEN NULL ELSE rota_now() END,
        error = CASE WHEN v.failed IS NULL THEN NULL
            ELSE 'upstream failed: parent ' || v.failed END
    FROM verdict v
    WHERE j.id = ANY(ARRAY(SELECT id FROM verdict WHERE failed IS NOT NULL OR ready))
        AND j.id = v.id
    RETURNING j.id, j.state, j.has_children
), settled AS (
    INSERT INTO settle_parents (parent_id)
    SELECT id FROM moved WHERE has_children IS TRUE AND state = 'upstream_failed'
), woken AS (
    SELECT pg_notify(:pending_channel, '')
    WHERE EXISTS (SELECT FROM moved WHERE state = 'pending')
    UNION ALL
    SELECT pg_notify(:done_channel, '')
    WHERE EXISTS (SELECT FROM moved WHERE state = 'upstream_failed')
)
SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM moved), (SELECT count(*) FROM woken)

-- name: concurrency_usage
-- Served by jobs_concurrency_idx (keyed assigned/running jobs only).
SELECT concurrency_key, count(*)
FROM jobs
WHERE concurrency_key = ANY(:keys::text[]) AND state IN ('assigned', 'running')
GROUP BY concurrency_key

-- name: put_schedules
-- Names are distinct (the caller keeps the last of each); a stored last_tick is kept.
INSERT INTO schedules (name, spec)
SELECT s.name, s.spec FROM unnest(:names::text[], :specs::text[]) AS s (name, spec)
ORDER BY s.name
ON CONFLICT (name) DO UPDATE SET spec = excluded.spec

-- name: delete_schedules
WITH deleted AS (
    DELETE FROM schedules WHERE name = ANY(:names::text[]) RETURNING 1
)
SELECT count(*) FROM deleted

-- name: list_schedules
SELECT name, spec, last_tick FROM schedules ORDER BY name COLLATE "C"

-- name: tick_schedule
-- Fenced: the first step of fire_schedule (its job, if any, is submitted in the same
-- transaction). A concurrent tick of the same schedule waits for the row and then sees
-- last_tick moved: each tick is handled once.
WITH fence AS (
    SELECT token FROM leases
    WHERE name = :lease_name AND holder = :holder AND token = :token
        AND expires_at > rota_now()
    FOR SHARE
), ticked AS (
    UPDATE schedules SET last_tick = :tick
    WHERE name = :name AND (last_tick IS NULL OR last_tick < :tick)
        AND EXISTS (SELECT FROM fence)
    RETURNING 1
)
SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM ticked)

-- name: put_stats
INSERT INTO stats (name, data, updated_at) VALUES (:name, :data::jsonb, rota_now())
ON CONFLICT (name) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at

-- name: any_pending
SELECT EXISTS (SELECT FROM jobs WHERE state = 'pending')

-- name: has_assigned
SELECT EXISTS (SELECT FROM jobs WHERE node_id = :node_id AND state = 'assigned')

-- name: get_stats
SELECT data FROM stats WHERE name = :name

-- name: prune_jobs
-- One batch of final jobs past retention (the caller repeats until a short batch), with the
-- unique keys they still hold. A parent is kept while a child of its still waits (its
-- state decides the child's): count(*), not EXISTS, so that the planner costs the whole
-- probe and takes jobs_children_idx (with EXISTS it bets on a Seq Scan finding a row
-- early); only jobs with has_children run it.
WITH doomed AS (
    SELECT id FROM jobs j
    WHERE state IN ('succeeded', 'dead', 'cancelled', 'upstream_failed')
        AND finished_at < rota_now() - :older_than
        AND NOT (j.has_children IS TRUE AND (
            SELECT count(*) FROM jobs c WHERE c.state = 'waiting' AND c.depends_on @> ARRAY[j.id]
        ) > 0)
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM jobs j USING doomed WHERE j.id = doomed.id RETURNING j.id, j.unique_key
), released AS (
    DELETE FROM unique_keys u USING deleted d WHERE u.key = d.unique_key AND u.job_id = d.id
)
SELECT count(*) FROM deleted

-- name: prune_nodes
DELETE FROM nodes n
WHERE n.state IN ('dead', 'stopped') AND n.gone_at < rota_now() - :older_than
    AND NOT EXISTS (
        SELECT FROM jobs j WHERE j.node_id = n.id AND j.state IN ('assigned', 'running')
    )
