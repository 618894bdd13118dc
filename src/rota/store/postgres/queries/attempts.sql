-- The attempt history (job_attempts): written by the statements of worker.sql and
-- scheduler.sql that move jobs (CTEs), read here.

-- name: job_attempts
SELECT job_id, token, attempt, node_id, started_at, ended_at, outcome, cut_short, error,
    traceback
FROM job_attempts
WHERE job_id = :id
ORDER BY token
