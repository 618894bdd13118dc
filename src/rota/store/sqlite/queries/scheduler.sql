-- The scheduler: leases, promotion, reaping, pending pages, assignment, statistics,
-- pruning.

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

-- name: put_stats_once
INSERT OR IGNORE INTO stats (name, data, updated_at) VALUES (:name, :data, :now);

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

-- name: clear_grants
DELETE FROM claim_grants;

-- name: grant_claim
INSERT INTO claim_grants (node_id, queues, lease_name, token)
VALUES (:node_id, :queues, :lease_name, :token);
