-- The attempt history (job_attempts): written by the statements of worker.sql and
-- scheduler.sql that move jobs (CTEs), read here.

-- name: job_attempts
SELECT job_id, token, attempt, node_id, started_at, ended_at, outcome, cut_short, error,
    traceback
FROM job_attempts
WHERE job_id = :id
ORDER BY token

-- name: attempts_ended_as
-- Which of these reports (job, token, outcome) had their attempt end with that outcome
-- already: complete asks again, in a fresh snapshot, for those its statement refused (a
-- concurrent copy of the same report that committed while it waited for the row lock is
-- invisible to the statement's own snapshot).
SELECT o.ord
FROM unnest(:ids::text[], :tokens::bigint[], :kinds::text[]) WITH ORDINALITY
    AS o (id, token, kind, ord)
JOIN job_attempts a ON a.job_id = o.id AND a.token = o.token AND a.outcome = o.kind
