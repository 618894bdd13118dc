-- Every SQL statement of the SQLite store. Times are unix seconds read from SQLite's own
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
--           Flow columns (issue 5): depends_on (JSON array of parent ids, NULL for none),
--           pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
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
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    last_tick REAL
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

-- name: insert_job
INSERT INTO jobs (id, task, queue, payload, priority, state, max_attempts, timeout, resources,
                  labels, affinity, backoff_base, backoff_max, created_at, scheduled_at)
VALUES (:id, :task, :queue, :payload, :priority, :state, :max_attempts, :timeout, :resources,
        :labels, :affinity, :backoff_base, :backoff_max, :now, :scheduled_at);

-- name: insert_flow_job
-- A job using one of the flow options (the plain insert leaves their columns at default).
INSERT INTO jobs (id, task, queue, payload, priority, state, max_attempts, timeout, resources,
                  labels, affinity, backoff_base, backoff_max, created_at, scheduled_at,
                  depends_on, pass_results, workflow_id, unique_key, concurrency_key,
                  concurrency_limit, rate_limit)
VALUES (:id, :task, :queue, :payload, :priority, :state, :max_attempts, :timeout, :resources,
        :labels, :affinity, :backoff_base, :backoff_max, :now, :scheduled_at,
        :depends_on, :pass_results, :workflow_id, :unique_key, :concurrency_key,
        :concurrency_limit, :rate_limit);

-- name: job_exists
SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?);

-- name: unique_holder
-- The job holding a unique key, with its state (NULL: pruned) and the key's expiry.
SELECT u.job_id, j.state, u.expires_at
FROM job_unique AS u LEFT JOIN jobs AS j ON j.id = u.job_id
WHERE u.key = ?;

-- name: take_unique
INSERT INTO job_unique (key, job_id, expires_at) VALUES (:key, :job_id, :expires_at)
ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id, expires_at = excluded.expires_at;

-- name: insert_edge
INSERT OR IGNORE INTO job_deps (parent, child) VALUES (?, ?);

-- name: mark_parent
-- A parent that is final already (even one whose children were queued before) enters
-- jobs_parents_done at once, so its new child is settled too.
UPDATE jobs SET has_children = 1 WHERE id = ? AND has_children != 1;

-- name: any_to_settle
SELECT EXISTS (SELECT 1 FROM job_settle)
    OR EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_parents_done
               WHERE has_children = 1 AND finished_at IS NOT NULL);

-- name: parents_done
SELECT id FROM jobs INDEXED BY jobs_parents_done
WHERE has_children = 1 AND finished_at IS NOT NULL
ORDER BY seq LIMIT :limit;

-- name: queue_children
INSERT OR IGNORE INTO job_settle (child)
SELECT child FROM job_deps WHERE parent IN (SELECT value FROM json_each(?));

-- name: parents_queued
UPDATE jobs SET has_children = 2
WHERE id IN (SELECT value FROM json_each(?)) AND has_children = 1;

-- name: settle_batch
-- The next :limit queued children with, for the waiting ones, each parent and its state
-- (parent NULL: pruned), parents in depends_on order.
SELECT s.r, s.child, c.state, d.value, p.state
FROM (SELECT rowid AS r, child FROM job_settle ORDER BY rowid LIMIT :limit) AS s
LEFT JOIN jobs AS c ON c.id = s.child
LEFT JOIN json_each(CASE WHEN c.state = 'waiting' THEN c.depends_on END) AS d
LEFT JOIN jobs AS p ON p.id = d.value
ORDER BY s.r, d.key;

-- name: unqueue_settle
DELETE FROM job_settle WHERE rowid IN (SELECT value FROM json_each(?));

-- name: parents_succeeded
UPDATE jobs SET state = 'pending'
WHERE id IN (SELECT value FROM json_each(?)) AND state = 'waiting';

-- name: upstream_failed
UPDATE jobs SET state = 'upstream_failed', finished_at = :now, error = :error
WHERE id = :id AND state = 'waiting';

-- name: concurrency_usage
SELECT concurrency_key, count(*) FROM jobs INDEXED BY jobs_concurrency
WHERE concurrency_key IN (SELECT value FROM json_each(?)) AND concurrency_key IS NOT NULL
  AND state IN ('assigned', 'running')
GROUP BY concurrency_key;

-- name: put_schedule
INSERT INTO schedules (name, spec) VALUES (:name, :spec)
ON CONFLICT (name) DO UPDATE SET spec = excluded.spec;

-- name: delete_schedule
DELETE FROM schedules WHERE name = ?;

-- name: list_schedules
SELECT name, spec, last_tick FROM schedules ORDER BY name;

-- name: fire_schedule
UPDATE schedules SET last_tick = :tick
WHERE name = :name AND (last_tick IS NULL OR last_tick < :tick);

-- name: get_jobs
SELECT id, task, queue, payload, priority, state, attempts, max_attempts, timeout, resources,
       labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, node_id, token,
       started_at, finished_at, lease_expires_at, result, error, traceback, cancel_requested, seq,
       depends_on, pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
       rate_limit
FROM jobs WHERE id IN (SELECT value FROM json_each(?));

-- name: list_jobs
SELECT id, task, queue, payload, priority, state, attempts, max_attempts, timeout, resources,
       labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, node_id, token,
       started_at, finished_at, lease_expires_at, result, error, traceback, cancel_requested, seq,
       depends_on, pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
       rate_limit
FROM jobs
WHERE (:state IS NULL OR state = :state)
  AND (:queue IS NULL OR queue = :queue)
  AND (:task IS NULL OR task = :task)
  AND (:node_id IS NULL OR node_id = :node_id)
ORDER BY seq DESC
LIMIT :limit;

-- name: count_jobs
SELECT queue, state, count(*) FROM jobs GROUP BY queue, state;

-- name: job_state
SELECT state FROM jobs WHERE id = ?;

-- name: cancel_waiting
UPDATE jobs SET state = 'cancelled', finished_at = :now, lease_expires_at = NULL,
                error = 'cancelled'
WHERE id = :id AND state IN ('waiting', 'scheduled', 'retrying', 'pending', 'assigned');

-- name: cancel_running
UPDATE jobs SET cancel_requested = 1 WHERE id = :id AND state = 'running';

-- name: retry_dead
UPDATE jobs SET state = 'pending', attempts = 0, node_id = NULL, finished_at = NULL,
                started_at = NULL, scheduled_at = :now, cancel_requested = 0,
                has_children = min(has_children, 1)
WHERE id = :id AND state = 'dead';

-- name: register_node
INSERT OR REPLACE INTO nodes (id, name, spec, state, registered_at, heartbeat_at, gone_at)
VALUES (:id, :name, :spec, 'live', :now, :now, NULL);

-- name: node_state
SELECT state FROM nodes WHERE id = ?;

-- name: touch_node
UPDATE nodes SET heartbeat_at = :now WHERE id = :id;

-- name: extend_lease
UPDATE jobs SET lease_expires_at = :expires
WHERE id = :id AND token = :token AND node_id = :node_id AND state = 'running';

-- name: cancel_requested
SELECT id FROM jobs INDEXED BY jobs_active
WHERE node_id = ? AND state IN ('assigned', 'running') AND state = 'running'
  AND cancel_requested = 1;

-- name: set_node_state
UPDATE nodes SET state = :state,
                 gone_at = CASE WHEN :state IN ('dead', 'stopped') THEN :now ELSE gone_at END
WHERE id = :id;

-- name: list_nodes
SELECT id, spec, state, registered_at, heartbeat_at FROM nodes ORDER BY registered_at, id;

-- name: node_counts
SELECT node_id, state, count(*) FROM jobs INDEXED BY jobs_active
WHERE state IN ('assigned', 'running') GROUP BY node_id, state;

-- name: node_usage
SELECT jobs.node_id, r.key, sum(r.value)
FROM jobs INDEXED BY jobs_active, json_each(jobs.resources) AS r
WHERE jobs.state IN ('assigned', 'running') AND jobs.resources != '{}'
GROUP BY jobs.node_id, r.key;

-- name: start_jobs
UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = :now,
                lease_expires_at = :expires
WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_active
              WHERE node_id = :node_id AND state IN ('assigned', 'running')
                AND state = 'assigned'
              ORDER BY priority DESC, seq LIMIT :limit)
RETURNING id, task, queue, payload, priority, state, attempts, max_attempts, timeout, resources,
          labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, node_id, token,
          started_at, finished_at, lease_expires_at, result, error, traceback,
          cancel_requested, seq, depends_on, pass_results, workflow_id, unique_key,
          concurrency_key, concurrency_limit, rate_limit;

-- name: has_assigned
SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_active
               WHERE node_id = ? AND state IN ('assigned', 'running') AND state = 'assigned');

-- name: any_due
SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_waiting
               WHERE state IN ('scheduled', 'retrying') AND scheduled_at <= :now);

-- name: complete_succeeded
UPDATE jobs SET state = 'succeeded', result = :result, finished_at = :now,
                lease_expires_at = NULL, error = NULL, traceback = NULL
WHERE id = :id AND token = :token AND state = 'running';

-- name: complete_failed
-- A job whose cancellation was requested never runs again: it ends cancelled.
UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled'
                             WHEN attempts < max_attempts THEN 'retrying' ELSE 'dead' END,
                scheduled_at = CASE WHEN NOT cancel_requested AND attempts < max_attempts
                                    THEN :now + :delay ELSE scheduled_at END,
                finished_at = CASE WHEN NOT cancel_requested AND attempts < max_attempts
                                   THEN NULL ELSE :now END,
                lease_expires_at = NULL, error = :error, traceback = :traceback
WHERE id = :id AND token = :token AND state = 'running';

-- name: complete_final
UPDATE jobs SET state = :state, finished_at = :now, lease_expires_at = NULL,
                error = :error, traceback = :traceback
WHERE id = :id AND token = :token AND state = 'running';

-- name: release_job
UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END,
                finished_at = CASE WHEN cancel_requested THEN :now END,
                node_id = CASE WHEN cancel_requested THEN node_id END,
                lease_expires_at = NULL, started_at = NULL,
                attempts = attempts - (state = 'running')
WHERE id = :id AND token = :token AND node_id = :node_id AND state IN ('assigned', 'running');

-- name: get_lease
SELECT name, holder, token, expires_at, acquired_at FROM leases WHERE name = ?;

-- name: insert_lease
INSERT INTO leases (name, holder, token, expires_at, acquired_at)
VALUES (:name, :holder, 1, :expires, :now);

-- name: renew_lease
UPDATE leases SET expires_at = :expires WHERE name = :name AND holder = :holder AND token = :token;

-- name: take_lease
UPDATE leases SET holder = :holder, token = token + 1, expires_at = :expires, acquired_at = :now
WHERE name = :name AND token = :token;

-- name: adopt_lease
-- A token minted outside the store (ZooKeeper): a higher one takes the lease, the same
-- one renews it for the same holder, an older one changes nothing.
INSERT INTO leases (name, holder, token, expires_at, acquired_at)
VALUES (:name, :holder, :token, :expires, :now)
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder,
    expires_at = excluded.expires_at,
    acquired_at = CASE WHEN leases.token = excluded.token THEN leases.acquired_at
                       ELSE excluded.acquired_at END,
    token = excluded.token
WHERE excluded.token > leases.token
   OR (excluded.token = leases.token AND excluded.holder = leases.holder);

-- name: release_lease
UPDATE leases SET expires_at = :now WHERE name = :name AND holder = :holder AND token = :token;

-- name: promote_due
UPDATE jobs SET state = 'pending'
WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_waiting
              WHERE state IN ('scheduled', 'retrying') AND scheduled_at <= :now
              ORDER BY scheduled_at LIMIT :limit);

-- name: any_to_reap
-- Whether reap has anything to do (read-only: an idle scheduler takes no write lock).
SELECT EXISTS (SELECT 1 FROM nodes WHERE state IN ('live', 'draining') AND heartbeat_at < :cutoff)
    OR EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_active
               WHERE state IN ('assigned', 'running')
                 AND ((state = 'running' AND lease_expires_at < :now)
                      OR node_id IN (SELECT id FROM nodes WHERE state IN ('dead', 'stopped'))));

-- name: silent_nodes
SELECT id FROM nodes WHERE state IN ('live', 'draining') AND heartbeat_at < :cutoff;

-- name: requeue_lost_assigned
UPDATE jobs INDEXED BY jobs_active SET state = 'pending', node_id = NULL
WHERE state IN ('assigned', 'running') AND state = 'assigned'
  AND node_id IN (SELECT id FROM nodes WHERE state IN ('dead', 'stopped'));

-- name: cancel_lost_running
UPDATE jobs INDEXED BY jobs_active
SET state = 'cancelled', finished_at = :now, lease_expires_at = NULL, error = 'cancelled'
WHERE state IN ('assigned', 'running') AND state = 'running' AND cancel_requested
  AND (lease_expires_at < :now
       OR node_id IN (SELECT id FROM nodes WHERE state IN ('dead', 'stopped')));

-- name: retry_lost_running
UPDATE jobs INDEXED BY jobs_active
SET state = 'pending', node_id = NULL, lease_expires_at = NULL,
    error = 'lease lost: ' || CASE WHEN lease_expires_at < :now
                              THEN 'lease expired' ELSE 'node stopped heartbeating' END
WHERE state IN ('assigned', 'running') AND state = 'running' AND attempts < max_attempts
  AND (lease_expires_at < :now
       OR node_id IN (SELECT id FROM nodes WHERE state IN ('dead', 'stopped')));

-- name: kill_lost_running
UPDATE jobs INDEXED BY jobs_active
SET state = 'dead', finished_at = :now, lease_expires_at = NULL,
    error = 'lease lost on the last attempt: ' || CASE WHEN lease_expires_at < :now
            THEN 'lease expired' ELSE 'node stopped heartbeating' END
WHERE state IN ('assigned', 'running') AND state = 'running' AND attempts >= max_attempts
  AND (lease_expires_at < :now
       OR node_id IN (SELECT id FROM nodes WHERE state IN ('dead', 'stopped')));

-- name: pending_first
SELECT id, queue, priority, seq, resources, labels, affinity, task, concurrency_key,
       concurrency_limit, rate_limit
FROM jobs INDEXED BY jobs_pending
WHERE state = 'pending'
ORDER BY priority DESC, seq LIMIT :limit;

-- name: pending_after
SELECT id, queue, priority, seq, resources, labels, affinity, task, concurrency_key,
       concurrency_limit, rate_limit
FROM jobs INDEXED BY jobs_pending
WHERE state = 'pending' AND (priority < :priority OR (priority = :priority AND seq > :seq))
ORDER BY priority DESC, seq LIMIT :limit;

-- name: live_node_ids
SELECT id FROM nodes WHERE state = 'live';

-- name: assign_jobs
-- :batch is a JSON array of [job id, node id] pairs. One statement for the whole batch
-- (the jobs looked up by id: sqlite_autoindex_jobs_1 is the index of UNIQUE (id)).
UPDATE jobs INDEXED BY sqlite_autoindex_jobs_1
SET state = 'assigned', node_id = a.node_id, token = token + 1
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS node_id
      FROM json_each(:batch)) AS a
WHERE jobs.id = a.id AND jobs.state = 'pending';

-- name: put_stats
INSERT OR REPLACE INTO stats (name, data, updated_at) VALUES (:name, :data, :now);

-- name: get_stats
SELECT data FROM stats WHERE name = ?;

-- name: prune_edges
-- Before prune_jobs: the edges and unique keys of the jobs it deletes. A parent is kept
-- until its children are settled (has_children = 2 and none queued in job_settle), so a
-- waiting child never misses a parent that failed.
DELETE FROM job_deps WHERE parent IN (
    SELECT id FROM jobs INDEXED BY jobs_finished
    WHERE finished_at IS NOT NULL AND finished_at < :cutoff
      AND has_children = 2 AND NOT EXISTS (SELECT 1 FROM job_settle)
      AND state IN ('succeeded', 'dead', 'cancelled', 'upstream_failed'));

-- name: prune_unique
DELETE FROM job_unique WHERE (key, job_id) IN (
    SELECT unique_key, id FROM jobs INDEXED BY jobs_finished
    WHERE finished_at IS NOT NULL AND finished_at < :cutoff AND unique_key IS NOT NULL
      AND (has_children = 0 OR (has_children = 2 AND NOT EXISTS (SELECT 1 FROM job_settle)))
      AND state IN ('succeeded', 'dead', 'cancelled', 'upstream_failed'));

-- name: prune_jobs
DELETE FROM jobs INDEXED BY jobs_finished
WHERE finished_at IS NOT NULL AND finished_at < :cutoff
  AND (has_children = 0 OR (has_children = 2 AND NOT EXISTS (SELECT 1 FROM job_settle)))
  AND state IN ('succeeded', 'dead', 'cancelled', 'upstream_failed');

-- name: prune_nodes
DELETE FROM nodes WHERE state IN ('dead', 'stopped') AND gone_at < :cutoff;
