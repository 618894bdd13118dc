-- Producers and operators: insert jobs (plain, or with parents and unique keys), read,
-- count, cancel and retry them.

-- name: insert_job
INSERT INTO jobs (id, task, queue, payload, priority, state, max_attempts, timeout, resources,
                  labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, alloc)
VALUES (:id, :task, :queue, :payload, :priority, :state, :max_attempts, :timeout, :resources,
        :labels, :affinity, :backoff_base, :backoff_max, :now, :scheduled_at, :alloc);

-- name: insert_flow_job
-- A job using one of the flow options (the plain insert leaves their columns at default).
INSERT INTO jobs (id, task, queue, payload, priority, state, max_attempts, timeout, resources,
                  labels, affinity, backoff_base, backoff_max, created_at, scheduled_at,
                  depends_on, pass_results, workflow_id, unique_key, concurrency_key,
                  concurrency_limit, rate_limit, alloc)
VALUES (:id, :task, :queue, :payload, :priority, :state, :max_attempts, :timeout, :resources,
        :labels, :affinity, :backoff_base, :backoff_max, :now, :scheduled_at,
        :depends_on, :pass_results, :workflow_id, :unique_key, :concurrency_key,
        :concurrency_limit, :rate_limit, :alloc);

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

-- name: get_jobs
SELECT id, task, queue, payload, priority, state, attempts, max_attempts, timeout, resources,
       labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, node_id, token,
       started_at, finished_at, lease_expires_at, result, error, traceback, cancel_requested, seq,
       depends_on, pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
       rate_limit, alloc, preempted_at, preemptions
FROM jobs WHERE id IN (SELECT value FROM json_each(?));

-- name: list_jobs
SELECT id, task, queue, payload, priority, state, attempts, max_attempts, timeout, resources,
       labels, affinity, backoff_base, backoff_max, created_at, scheduled_at, node_id, token,
       started_at, finished_at, lease_expires_at, result, error, traceback, cancel_requested, seq,
       depends_on, pass_results, workflow_id, unique_key, concurrency_key, concurrency_limit,
       rate_limit, alloc, preempted_at, preemptions
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
-- (A preemption pending becomes a plain cancel: preempted_at is cleared.)
UPDATE jobs SET cancel_requested = 1,
                preempted_at = CASE WHEN coalesce(preempted_at >= started_at, 0) THEN NULL ELSE preempted_at END
WHERE id = :id AND state = 'running';

-- name: retry_dead
UPDATE jobs SET state = 'pending', attempts = 0, node_id = NULL, finished_at = NULL,
                started_at = NULL, scheduled_at = :now, cancel_requested = 0,
                has_children = min(has_children, 1)
WHERE id = :id AND state = 'dead';
