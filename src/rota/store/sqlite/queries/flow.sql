-- Workflows (settling children), concurrency keys and periodic schedules.

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
