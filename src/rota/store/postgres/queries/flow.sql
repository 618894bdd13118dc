-- Workflows, concurrency keys and periodic schedules.

-- ---- workflows, periodic jobs and flow control ----------------------------------------

-- name: resolve_dependencies
-- Fenced. Take up to :limit parents that became final (settle_parents, appended by the
-- statements that end jobs with has_children) and up to :limit queued children
-- (settle_children); their waiting children are the candidates (found through
-- jobs_children_idx). The first :limit candidates are decided now, the others queued in
-- settle_children for the next call: to pending once every parent succeeded, to
-- upstream_failed (final, error naming the first failed parent) once one is dead,
-- cancelled, upstream_failed or gone; others stay waiting until their next parent ends.
-- Rows are looked up by ``id = ANY(ARRAY(...))`` (index scans whatever the planner guesses
-- of the CTEs' sizes), so a call costs nothing like the number of waiting jobs
-- (tests/test_postgres_store.py checks the plan).
WITH fence AS (
    SELECT token FROM leases
    WHERE name = :lease_name AND holder = :holder AND token = :token
        AND expires_at > rota_now()
    FOR SHARE
), events AS (
    SELECT seq, parent_id FROM settle_parents
    WHERE EXISTS (SELECT FROM fence)
    ORDER BY seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), events_taken AS (
    DELETE FROM settle_parents WHERE seq = ANY(ARRAY(SELECT seq FROM events))
), queued AS (
    SELECT job_id FROM settle_children
    WHERE EXISTS (SELECT FROM fence)
    ORDER BY job_id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), candidates AS (
    SELECT job_id FROM queued
    UNION
    SELECT j.id FROM jobs j
    WHERE j.state = 'waiting' AND j.depends_on && ARRAY(SELECT parent_id FROM events)
        AND EXISTS (SELECT FROM events)
), picked AS (
    SELECT job_id FROM candidates ORDER BY job_id LIMIT :limit
), later AS (
    INSERT INTO settle_children (job_id)
    SELECT job_id FROM candidates WHERE job_id NOT IN (SELECT job_id FROM picked)
    ON CONFLICT DO NOTHING
), dequeued AS (
    DELETE FROM settle_children WHERE job_id = ANY(ARRAY(SELECT job_id FROM picked))
), children AS (
    SELECT id, depends_on FROM jobs
    WHERE id = ANY(ARRAY(SELECT job_id FROM picked)) AND state = 'waiting'
    ORDER BY id
    FOR UPDATE
), parents AS (
    SELECT id, state FROM jobs
    WHERE id = ANY(ARRAY(SELECT DISTINCT unnest(depends_on) FROM children))
), verdict AS (
    SELECT c.id,
        (array_agg(d.parent_id || ' is ' || coalesce(p.state, 'gone') ORDER BY d.k)
            FILTER (WHERE p.state IS NULL
                OR p.state IN ('dead', 'cancelled', 'upstream_failed')))[1] AS failed,
        bool_and(p.state IS NOT DISTINCT FROM 'succeeded') AS ready
    FROM children c
    CROSS JOIN LATERAL unnest(c.depends_on) WITH ORDINALITY AS d (parent_id, k)
    LEFT JOIN parents p ON p.id = d.parent_id
    GROUP BY c.id
), moved AS (
    UPDATE jobs j
    SET state = CASE WHEN v.failed IS NULL THEN 'pending' ELSE 'upstream_failed' END,
        finished_at = CASE WHEN v.failed IS NULL THEN NULL ELSE rota_now() END,
        error = CASE WHEN v.failed IS NULL THEN NULL
            ELSE 'upstream failed: parent ' || v.failed END
    FROM verdict v
    WHERE j.id = ANY(ARRAY(SELECT id FROM verdict WHERE failed IS NOT NULL OR ready))
        AND j.id = v.id
    RETURNING j.id, j.state, j.has_children
), settled AS (
    INSERT INTO settle_parents (parent_id)
    SELECT id FROM moved WHERE has_children IS TRUE AND state = 'upstream_failed'
), woken AS (
    SELECT pg_notify(:pending_channel, '')
    WHERE EXISTS (SELECT FROM moved WHERE state = 'pending')
    UNION ALL
    SELECT pg_notify(:done_channel, '')
    WHERE EXISTS (SELECT FROM moved WHERE state = 'upstream_failed')
)
SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM moved), (SELECT count(*) FROM woken)

-- name: concurrency_usage
-- Served by jobs_concurrency_idx (keyed assigned/running jobs only).
SELECT concurrency_key, count(*)
FROM jobs
WHERE concurrency_key = ANY(:keys::text[]) AND state IN ('assigned', 'running')
GROUP BY concurrency_key

-- name: put_schedules
-- Names are distinct (the caller keeps the last of each); a stored last_tick is kept.
INSERT INTO schedules (name, spec)
SELECT s.name, s.spec FROM unnest(:names::text[], :specs::text[]) AS s (name, spec)
ORDER BY s.name
ON CONFLICT (name) DO UPDATE SET spec = excluded.spec

-- name: delete_schedules
WITH deleted AS (
    DELETE FROM schedules WHERE name = ANY(:names::text[]) RETURNING 1
)
SELECT count(*) FROM deleted

-- name: list_schedules
SELECT name, spec, last_tick FROM schedules ORDER BY name COLLATE "C"

-- name: tick_schedule
-- Fenced: the first step of fire_schedule (its job, if any, is submitted in the same
-- transaction). A concurrent tick of the same schedule waits for the row and then sees
-- last_tick moved: each tick is handled once.
WITH fence AS (
    SELECT token FROM leases
    WHERE name = :lease_name AND holder = :holder AND token = :token
        AND expires_at > rota_now()
    FOR SHARE
), ticked AS (
    UPDATE schedules SET last_tick = :tick
    WHERE name = :name AND (last_tick IS NULL OR last_tick < :tick)
        AND EXISTS (SELECT FROM fence)
    RETURNING 1
)
SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM ticked)
