-- The SQL statements of the SQLite store, named (``-- name: NAME``) in the files of this
-- folder (connection.py loads them all); this file: the schema and the clock. Times are
-- unix seconds read from SQLite's own
-- clock (the ``now`` query) once per transaction and passed in as :now.
-- Layout:
--   jobs    one row per job; seq (rowid) gives FIFO order; JSON text in payload,
--           resources, labels, affinity, result. Partial indexes serve placement
--           (pending by priority, seq), promotion (scheduled/retrying by due time) and
--           node load (assigned/running by node). Every index whose key or WHERE has
--           ``state`` is rewritten on each state change, under the one write lock, so
--           there are only the ones hot queries need (plus queue/state counts for
--           ``rota status``); hot queries name theirs with INDEXED BY, as without
--           ANALYZE statistics the planner may prefer a worse one. A partial index
--           ``WHERE state IN (a, b)`` serves ``state = a`` only when the query also says
--           ``state IN (a, b)``, hence the redundant terms below.
--           Flow columns (workflows, unique keys, limits): depends_on (JSON array
--           of parent ids, NULL for none), pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
--           rate_limit; has_children: 0 no children, 1 children to settle once the job is
--           final, 2 its children were queued (jobs_parents_done holds the 1s that are
--           final: finished_at is set exactly when a job turns final). Databases made
--           before these columns get them from ``jobs_columns`` (ALTER TABLE) on open.
--   job_deps    (parent, child) edges of workflows, by parent.
--   job_settle  children to look at again: resolve_dependencies moves the children of
--           finished parents here (so a parent with many children settles over several
--           calls), then settles them in FIFO order.
--   job_unique  unique_key -> the job that holds it (expires_at = created_at + unique_for);
--           the holder is checked lazily at submit (gone, final or expired: the key is
--           taken over).
--   job_attempts  the attempt history: one row per attempt (job_id, token), its node,
--           start, end, outcome (the kind reported, or lost / released), how it was cut
--           short, error and traceback; the last attempt_history attempts of each job
--           (queries/attempts.sql). Databases made before it get it from CREATE TABLE IF
--           NOT EXISTS on open, like every table here.
--   schedules   periodic jobs: name, spec (JSON text the store does not read), last_tick.
--   nodes   one row per worker node incarnation; spec is the registered NodeSpec as JSON.
--   leases  named leases (the scheduler's) with a fencing token.
--   stats   small JSON documents published by the scheduler.

-- name: schema
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout REAL,
    resources TEXT NOT NULL,
    labels TEXT NOT NULL,
    affinity TEXT NOT NULL,
    backoff_base REAL NOT NULL,
    backoff_max REAL NOT NULL,
    created_at REAL NOT NULL,
    scheduled_at REAL,
    node_id TEXT,
    token INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    finished_at REAL,
    lease_expires_at REAL,
    result TEXT,
    error TEXT,
    traceback TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    depends_on TEXT,
    pass_results INTEGER NOT NULL DEFAULT 0,
    workflow_id TEXT,
    unique_key TEXT,
    concurrency_key TEXT,
    concurrency_limit INTEGER NOT NULL DEFAULT 0,
    rate_limit TEXT,
    has_children INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (priority DESC, seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (scheduled_at) WHERE state IN ('scheduled', 'retrying');
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (node_id, state) WHERE state IN ('assigned', 'running');
CREATE INDEX IF NOT EXISTS jobs_queue_state ON jobs (queue, state);
DROP INDEX IF EXISTS jobs_state_seq;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    registered_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    gone_at REAL
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    acquired_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stats (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS job_deps (
    parent TEXT NOT NULL,
    child TEXT NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_settle (
    child TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS job_unique (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS job_attempts (
    job_id TEXT NOT NULL,
    token INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    node_id TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT,
    cut_short TEXT,
    error TEXT,
    traceback TEXT,
    PRIMARY KEY (job_id, token)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    last_tick REAL
);
-- Claim grants (grant_claims): node id -> the queues (JSON array) whose plain pending jobs
-- it may claim itself; current while the lease (lease_name, token) is held, unexpired.
CREATE TABLE IF NOT EXISTS claim_grants (
    node_id TEXT PRIMARY KEY,
    queues TEXT NOT NULL,
    lease_name TEXT NOT NULL,
    token INTEGER NOT NULL
);

-- name: jobs_columns
-- Columns added after the first release: each is added when a store opens a database
-- that lacks it.
ALTER TABLE jobs ADD COLUMN depends_on TEXT;
ALTER TABLE jobs ADD COLUMN pass_results INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN workflow_id TEXT;
ALTER TABLE jobs ADD COLUMN unique_key TEXT;
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE jobs ADD COLUMN concurrency_limit INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN rate_limit TEXT;
ALTER TABLE jobs ADD COLUMN has_children INTEGER NOT NULL DEFAULT 0;

-- name: schema_after_columns
-- Indexes and triggers on the added columns (after ``jobs_columns``).
-- Both are partial indexes that hold only jobs using these features; other jobs' updates
-- test the WHERE and write nothing (jobs_parents_done is not even tested by assign and
-- start, which change neither has_children nor finished_at). No triggers: a trigger costs
-- every row update a sub-program call.
CREATE INDEX IF NOT EXISTS jobs_concurrency ON jobs (concurrency_key)
WHERE concurrency_key IS NOT NULL AND state IN ('assigned', 'running');
CREATE INDEX IF NOT EXISTS jobs_parents_done ON jobs (seq)
WHERE has_children = 1 AND finished_at IS NOT NULL;

-- name: now
SELECT (julianday('now') - 2440587.5) * 86400.0;
