-- 0001: the initial schema.

-- The store's clock: the start of the current statement, in unix seconds. STABLE (one value
-- per statement, usable in index conditions) and inlined by the planner.
CREATE FUNCTION rota_now() RETURNS double precision
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT extract(epoch FROM statement_timestamp())::double precision $$;

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
    CONSTRAINT jobs_pkey PRIMARY KEY (id),
    CONSTRAINT jobs_state_check CHECK (state IN ('scheduled', 'pending', 'assigned', 'running',
        'retrying', 'succeeded', 'dead', 'cancelled'))
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
    WHERE state IN ('succeeded', 'dead', 'cancelled');

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
