-- rota's PostgreSQL schema: exactly what applying every file in migrations/ in
-- order to an empty schema gives (tests/test_postgres_store.py checks it). Tables are
-- created in the schema named by the store URL (``?schema=``, default ``rota``), which is
-- first on the connections' search_path. The bookkeeping table ``rota_migrations`` is
-- created by ``PostgresStore.migrate()`` itself and is not part of this file.
--
-- Times are double precision unix seconds by the server's clock (``rota_now()``), never
-- the client's.

-- The store's clock: the start of the current statement, in unix seconds. STABLE (one value
-- per statement, usable in index conditions) and inlined by the planner.
CREATE FUNCTION rota_now() RETURNS double precision
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT date_part('epoch', statement_timestamp()) $$;

CREATE TABLE jobs (
    seq              bigserial        NOT NULL,  -- FIFO order among equal priorities
    id               text             NOT NULL,
    task             text             NOT NULL,
    queue            text             NOT NULL,
    payload          text             NOT NULL,  -- JSON {"args": [...], "kwargs": {...}}
    priority         integer          NOT NULL DEFAULT 0,
    state            text             NOT NULL,
    attempts         integer          NOT NULL DEFAULT 0,
    max_attempts     integer          NOT NULL DEFAULT 1,
    timeout          double precision,
    resources        jsonb            NOT NULL DEFAULT '{}',
    labels           jsonb            NOT NULL DEFAULT '{}',
    affinity         jsonb            NOT NULL DEFAULT '{}',
    backoff_base     double precision NOT NULL DEFAULT 1,
    backoff_max      double precision NOT NULL DEFAULT 300,
    created_at       double precision NOT NULL,
    scheduled_at     double precision,           -- when a scheduled/retrying job is due
    node_id          text,
    token            bigint           NOT NULL DEFAULT 0,  -- fencing token, +1 per placement
    started_at       double precision,
    finished_at      double precision,
    lease_expires_at double precision,
    result           text,                       -- JSON text
    error            text,
    traceback        text,
    cancel_requested boolean          NOT NULL DEFAULT false,
    -- Flow columns (migration 0003). NULL means the default (no parents, false, 0), so that a job
    -- using none of them has a row no wider than before.
    depends_on       text[],                     -- parents that must succeed first
    pass_results     boolean,
    workflow_id      text,
    unique_key       text,                       -- see unique_keys
    concurrency_key  text,
    concurrency_limit integer,
    rate_limit       text,                       -- "<count>/<seconds>", read by the scheduler
    has_children     boolean,                    -- true once some job depends on it
    CONSTRAINT jobs_pkey PRIMARY KEY (id),
    CONSTRAINT jobs_state_check CHECK (state IN ('waiting', 'scheduled', 'pending', 'assigned',
        'running', 'retrying', 'succeeded', 'dead', 'cancelled', 'upstream_failed'))
);

CREATE UNIQUE INDEX jobs_seq_idx ON jobs (seq);
-- Placement order (priority desc, then FIFO) over pending jobs only: stays small and cheap
-- however many finished rows the table holds. The key is (-priority, seq) so that the
-- cursor ``(-priority, seq) > (...)`` is an index condition (bigint: no overflow at -2^31).
CREATE INDEX jobs_pending_idx ON jobs ((-(priority::bigint)), seq) WHERE state = 'pending';
-- Due scheduled/retrying jobs (promote_due).
CREATE INDEX jobs_waiting_idx ON jobs (scheduled_at) WHERE state IN ('scheduled', 'retrying');
-- Jobs held by nodes (start_jobs, heartbeat, reap, node load).
CREATE INDEX jobs_active_idx ON jobs (node_id) WHERE state IN ('assigned', 'running');
-- Running jobs by lease expiry (reap).
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state = 'running';
-- Final jobs by age (prune).
CREATE INDEX jobs_finished_idx ON jobs (finished_at)
    WHERE state IN ('succeeded', 'dead', 'cancelled', 'upstream_failed');
-- Waiting children by parent (``depends_on && parents``): only waiting jobs are in it, so
-- jobs without parents never touch it.
CREATE INDEX jobs_children_idx ON jobs USING gin (depends_on) WHERE state = 'waiting';
-- Assigned/running jobs by concurrency key (concurrency_usage); only keyed jobs are in it.
CREATE INDEX jobs_concurrency_idx ON jobs (concurrency_key)
    WHERE concurrency_key IS NOT NULL AND state IN ('assigned', 'running');

-- Workflow settling, in two steps (see resolve_dependencies in queries/flow.sql):
-- settle_parents: jobs with children that became final, appended by each statement that
-- ends jobs (complete, cancel_now, release_jobs, reap_jobs, resolve_dependencies) for the
-- rows it ended with has_children (a CTE, not a trigger: a trigger's WHEN is parsed again
-- by every statement that changes a state, assign and start_jobs included);
-- settle_children: waiting jobs to look at again (children of those parents not looked at
-- yet, and children submitted when a parent was final already).
CREATE TABLE settle_parents (
    seq       bigserial NOT NULL,
    parent_id text      NOT NULL,
    CONSTRAINT settle_parents_pkey PRIMARY KEY (seq)
);

CREATE TABLE settle_children (
    job_id text NOT NULL,
    CONSTRAINT settle_children_pkey PRIMARY KEY (job_id)
);

-- unique_key -> the job holding it (expires_at: its created_at + unique_for). Checked lazily
-- at submit: a holder that is gone, final or expired is replaced.
CREATE TABLE unique_keys (
    key        text             NOT NULL,
    job_id     text             NOT NULL,
    expires_at double precision,
    CONSTRAINT unique_keys_pkey PRIMARY KEY (key)
);

-- Periodic jobs: spec is JSON text the store does not read; last_tick the last tick handled.
CREATE TABLE schedules (
    name      text             NOT NULL,
    spec      text             NOT NULL,
    last_tick double precision,
    CONSTRAINT schedules_pkey PRIMARY KEY (name)
);

CREATE TABLE nodes (
    id            text             NOT NULL,
    name          text             NOT NULL,
    slots         integer          NOT NULL,
    prefetch      integer          NOT NULL,
    resources     jsonb            NOT NULL DEFAULT '{}',
    labels        jsonb            NOT NULL DEFAULT '{}',
    queues        text[]           NOT NULL,
    host          text             NOT NULL DEFAULT '',
    pid           integer          NOT NULL DEFAULT 0,
    state         text             NOT NULL,
    registered_at double precision NOT NULL,
    heartbeat_at  double precision NOT NULL,
    gone_at       double precision,  -- when it became dead or stopped (prune)
    CONSTRAINT nodes_pkey PRIMARY KEY (id),
    CONSTRAINT nodes_state_check CHECK (state IN ('live', 'draining', 'dead', 'stopped'))
);

-- Named leases (the scheduler's leadership). A row is never deleted, so the token only
-- ever grows: each new holder gets token + 1.
CREATE TABLE leases (
    name        text             NOT NULL,
    holder      text             NOT NULL,
    token       bigint           NOT NULL,
    acquired_at double precision NOT NULL,
    expires_at  double precision NOT NULL,
    CONSTRAINT leases_pkey PRIMARY KEY (name)
);

-- Small JSON documents (the scheduler's statistics).
CREATE TABLE stats (
    name       text             NOT NULL,
    data       jsonb            NOT NULL,
    updated_at double precision NOT NULL,
    CONSTRAINT stats_pkey PRIMARY KEY (name)
);

-- The attempt history (migration 0004): one row per attempt of a job, by (job_id, token);
-- outcome is the kind the worker reported, or 'lost' (reap) / 'released' (shutdown), and
-- cut_short says how it was stopped. Written by the statements that move the job, deleted
-- with it; a job keeps its last attempt_history attempts (URL parameter, default 20).
CREATE TABLE job_attempts (
    job_id     text             NOT NULL,
    token      bigint           NOT NULL,
    attempt    integer          NOT NULL,
    node_id    text,
    started_at double precision NOT NULL,
    ended_at   double precision,
    outcome    text,
    cut_short  text,
    error      text,
    traceback  text,
    claim      text,  -- the start_jobs call that opened it (its retry finds what it started)
    CONSTRAINT job_attempts_pkey PRIMARY KEY (job_id, token)
);

-- Claim grants (migration 0006): node id -> the queues whose plain pending jobs (no
-- resources, labels, affinity, limits or parents) it may claim itself, from the head of
-- the pending jobs in placement order; current only while the lease (lease_name, token) it
-- was granted under is held and unexpired (grant_claims writes, start_jobs reads).
CREATE TABLE claim_grants (
    node_id    text   NOT NULL,
    queues     text[] NOT NULL,
    lease_name text   NOT NULL,
    token      bigint NOT NULL,
    CONSTRAINT claim_grants_pkey PRIMARY KEY (node_id)
);
