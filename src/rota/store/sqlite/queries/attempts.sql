-- The attempt history (job_attempts): one row per attempt, keyed by (job_id, token), written
-- by the same write transaction that moves the job (start, complete, reap, release) and
-- pruned with it. A job keeps its last :keep attempts (tokens grow by one per assignment,
-- so the rows older than token - keep are the ones to drop).

-- name: open_attempt
INSERT OR REPLACE INTO job_attempts (job_id, token, attempt, node_id, started_at)
VALUES (:id, :token, :attempt, :node_id, :now);

-- name: trim_attempts
DELETE FROM job_attempts WHERE job_id = :id AND token <= :token - :keep;

-- name: close_attempt
UPDATE job_attempts
SET ended_at = :now, outcome = :outcome, cut_short = :cut_short, error = :error,
    traceback = :traceback
WHERE job_id = :id AND token = :token AND ended_at IS NULL;

-- name: attempt_ended_as
-- Whether the attempt (job, token) already ended with this outcome: a retried report.
SELECT EXISTS (SELECT 1 FROM job_attempts
               WHERE job_id = :id AND token = :token AND outcome = :outcome);

-- name: close_lost_attempts
-- Before reap's job updates: the attempts of the running jobs it takes back (node dead or
-- stopped: node_lost; else the lease expired on a live node: lease_expired).
UPDATE job_attempts
SET ended_at = :now, outcome = 'lost',
    cut_short = CASE WHEN lost.gone THEN 'node_lost' ELSE 'lease_expired' END,
    error = CASE WHEN lost.gone THEN 'lease lost: node stopped heartbeating'
                 ELSE 'lease lost: lease expired' END
FROM (SELECT id, token, node_id IN (SELECT id FROM nodes WHERE state IN ('dead', 'stopped'))
                        AS gone
      FROM jobs INDEXED BY jobs_active
      WHERE state IN ('assigned', 'running') AND state = 'running'
        AND (lease_expires_at < :now
             OR node_id IN (SELECT id FROM nodes WHERE state IN ('dead', 'stopped')))) AS lost
WHERE job_attempts.job_id = lost.id AND job_attempts.token = lost.token
  AND job_attempts.ended_at IS NULL;

-- name: close_released_attempt
UPDATE job_attempts
SET ended_at = :now, outcome = 'released', cut_short = 'shutdown'
WHERE job_id = :id AND token = :token AND ended_at IS NULL
  AND EXISTS (SELECT 1 FROM jobs WHERE id = :id AND token = :token AND node_id = :node_id
                                   AND state = 'running');

-- name: job_attempts
SELECT job_id, token, attempt, node_id, started_at, ended_at, outcome, cut_short, error,
       traceback
FROM job_attempts WHERE job_id = ? ORDER BY token;

-- name: prune_attempts
-- Before prune_jobs, with the same conditions: the history of the jobs it deletes.
DELETE FROM job_attempts WHERE job_id IN (
    SELECT id FROM jobs INDEXED BY jobs_finished
    WHERE finished_at IS NOT NULL AND finished_at < :cutoff
      AND (has_children = 0 OR (has_children = 2 AND NOT EXISTS (SELECT 1 FROM job_settle)))
      AND state IN ('succeeded', 'dead', 'cancelled', 'upstream_failed'));
