-- Worker nodes: register, heartbeat, node state, list nodes, claim (start_jobs),
-- complete, release.

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

-- name: granted_queues
-- The node's queues (JSON array) under a current claim grant: its row's lease still has
-- that token and has not expired. No row: no grant, placement decides.
SELECT g.queues FROM claim_grants g
JOIN leases l ON l.name = g.lease_name AND l.token = g.token
WHERE g.node_id = :node_id AND l.expires_at > :now;

-- name: pending_head
-- The head of the pending jobs in placement order: seq, queue, and whether it is plain
-- (no resources, labels, affinity, concurrency or rate limit, parents).
SELECT seq, queue,
       resources = '{}' AND labels = '{}' AND affinity = '{}' AND concurrency_key IS NULL
       AND concurrency_limit = 0 AND rate_limit IS NULL AND depends_on IS NULL
FROM jobs INDEXED BY jobs_pending
WHERE state = 'pending'
ORDER BY priority DESC, seq LIMIT :limit;

-- name: claim_jobs
-- Pending -> running on the claiming node (:seqs, a JSON array), a new token each.
UPDATE jobs SET state = 'running', node_id = :node_id, token = token + 1,
                attempts = attempts + 1, started_at = :now, lease_expires_at = :expires
WHERE seq IN (SELECT value FROM json_each(:seqs)) AND state = 'pending'
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
