-- The scheduler: leases and fencing, promotion, reaping, pending pages, assignment,
-- statistics, the check behind wait_for_pending, and pruning.

-- ---- scheduler ---------------------------------------------------------------------------

-- name: acquire_lease
-- Renew (same token) if the holder has it, take it with token + 1 if it is free or
-- expired; nothing is returned if someone else holds it.
INSERT INTO leases AS l (name, holder, token, acquired_at, expires_at)
VALUES (:name, :holder, 1, rota_now(), rota_now() + :ttl)
ON CONFLICT (name) DO UPDATE SET
    token = CASE WHEN l.holder = excluded.holder AND l.expires_at > rota_now()
        THEN l.token ELSE l.token + 1 END,
    acquired_at = CASE WHEN l.holder = excluded.holder AND l.expires_at > rota_now()
        THEN l.acquired_at ELSE excluded.acquired_at END,
    holder = excluded.holder,
    expires_at = excluded.expires_at
WHERE (l.holder = excluded.holder AND l.expires_at > rota_now()) OR l.expires_at <= rota_now()
RETURNING name, holder, token, expires_at, acquired_at

-- name: adopt_lease
-- A token minted outside the store (ZooKeeper): a higher one takes the lease, the same
-- one renews it for the same holder, an older one changes nothing (no row returned).
INSERT INTO leases AS l (name, holder, token, acquired_at, expires_at)
VALUES (:name, :holder, :token, rota_now(), rota_now() + :ttl)
ON CONFLICT (name) DO UPDATE SET
    acquired_at = CASE WHEN l.token = excluded.token THEN l.acquired_at
        ELSE excluded.acquired_at END,
    holder = excluded.holder,
    token = excluded.token,
    expires_at = excluded.expires_at
WHERE excluded.token > l.token OR (excluded.token = l.token AND excluded.holder = l.holder)
RETURNING name, holder, token, expires_at, acquired_at

-- name: release_lease
-- Expire it but keep the row: the next holder's token is still higher.
UPDATE leases SET expires_at = rota_now()
WHERE name = :name AND holder = :holder AND token = :token AND expires_at > rota_now()

-- name: get_lease
SELECT name, holder, token, expires_at, acquired_at
FROM leases
WHERE name = :name AND expires_at > rota_now()

-- name: fence
-- The caller's lease, if it is still the current, unexpired one; FOR SHARE keeps it so
-- until the end of the transaction.
SELECT token FROM leases
WHERE name = :lease_name AND holder = :holder AND token = :token AND expires_at > rota_now()
FOR SHARE

-- name: promote_due
WITH fence AS (
    SELECT token FROM leases
    WHERE name = :lease_name AND holder = :holder AND token = :token
        AND expires_at > rota_now()
    FOR SHARE
), due AS (
    SELECT id FROM jobs
    WHERE state IN ('scheduled', 'retrying') AND scheduled_at <= rota_now()
        AND EXISTS (SELECT FROM fence)
    ORDER BY scheduled_at, seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), promoted AS (
    UPDATE jobs j SET state = 'pending' FROM due WHERE j.id = due.id RETURNING 1
)
SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM promoted)

-- name: reap_nodes
-- Declare dead the nodes silent for longer than the failure timeout.
UPDATE nodes SET state = 'dead', gone_at = rota_now()
WHERE state IN ('live', 'draining') AND heartbeat_at < rota_now() - :failure_timeout
RETURNING id

-- name: reap_jobs
-- Take back the jobs of nodes that are not live or draining (dead, stopped, unknown) and
-- the running jobs whose lease expired: assigned ones go back to pending untouched, running
-- ones have had their attempt counted and go again (pending) or are dead.
WITH lost AS (
    SELECT j.id, j.token, j.state AS old_state,
        (n.state IS NULL OR n.state NOT IN ('live', 'draining')) AS node_gone,
        CASE WHEN j.state = 'running' AND j.cancel_requested THEN 'cancelled'
            WHEN j.state = 'assigned' OR j.attempts < j.max_attempts THEN 'pending'
            ELSE 'dead' END AS state,
        CASE WHEN j.lease_expires_at < rota_now() THEN 'lease expired'
            ELSE 'node stopped heartbeating' END AS reason
    FROM jobs j
    LEFT JOIN nodes n ON n.id = j.node_id
    WHERE j.state IN ('assigned', 'running')
        AND (n.state IS NULL OR n.state NOT IN ('live', 'draining')
            OR (j.state = 'running' AND j.lease_expires_at < rota_now()))
    FOR UPDATE OF j SKIP LOCKED
), taken AS (
    UPDATE jobs j
    SET state = lost.state,
        node_id = CASE WHEN lost.state = 'pending' THEN NULL ELSE j.node_id END,
        finished_at = CASE WHEN lost.state IN ('dead', 'cancelled') THEN rota_now() END,
        lease_expires_at = NULL,
        error = CASE
            WHEN lost.state = 'cancelled' THEN 'cancelled'
            WHEN lost.old_state = 'assigned' THEN j.error
            WHEN lost.state = 'dead' THEN 'lease lost on the last attempt: ' || lost.reason
            ELSE 'lease lost: ' || lost.reason
        END
    FROM lost
    WHERE j.id = lost.id
    RETURNING j.id, lost.old_state, j.state, j.has_children
), closed AS (
    -- the attempts of the running jobs taken back end 'lost'
    UPDATE job_attempts a
    SET ended_at = rota_now(), outcome = 'lost',
        cut_short = CASE WHEN lost.node_gone THEN 'node_lost' ELSE 'lease_expired' END,
        error = CASE WHEN lost.node_gone THEN 'lease lost: node stopped heartbeating'
            ELSE 'lease lost: lease expired' END
    FROM lost
    WHERE lost.old_state = 'running' AND a.job_id = lost.id AND a.token = lost.token
        AND a.ended_at IS NULL
), settled AS (
    INSERT INTO settle_parents (parent_id)
    SELECT id FROM taken WHERE has_children IS TRUE AND state IN ('dead', 'cancelled')
), woken AS (
    SELECT pg_notify(:done_channel, '') WHERE EXISTS (SELECT FROM taken WHERE state = 'dead')
)
SELECT
    (SELECT count(*) FROM taken WHERE old_state = 'assigned'),
    (SELECT count(*) FROM taken WHERE old_state = 'running' AND state = 'pending'),
    (SELECT count(*) FROM taken WHERE state = 'dead'),
    (SELECT count(*) FROM woken)

-- name: pending_jobs
-- Served by jobs_pending_idx: an Index Scan whose condition is the cursor, whatever the
-- number of finished rows (see tests/test_postgres_store.py::test_pending_query_uses_index).
SELECT id, queue, priority, seq, resources, labels, affinity, task, concurrency_key,
    concurrency_limit, rate_limit
FROM jobs
WHERE state = 'pending' AND (-(priority::bigint), seq) > (:neg_priority::bigint, :seq::bigint)
ORDER BY -(priority::bigint), seq
LIMIT :limit

-- name: assign
-- Fenced batch placement (job ids are distinct): jobs still pending (SKIP LOCKED: a job
-- being claimed elsewhere is skipped) on nodes still live, each with a new token; each node
-- with new work is woken.
WITH fence AS (
    SELECT token FROM leases
    WHERE name = :lease_name AND holder = :holder AND token = :token
        AND expires_at > rota_now()
    FOR SHARE
), wanted AS (
    SELECT * FROM unnest(:job_ids::text[], :node_ids::text[]) AS w (job_id, node_id)
), picked AS (
    SELECT j.id, w.node_id
    FROM jobs j
    JOIN wanted w ON w.job_id = j.id
    JOIN nodes n ON n.id = w.node_id
    WHERE j.state = 'pending' AND n.state = 'live' AND EXISTS (SELECT FROM fence)
    FOR UPDATE OF j SKIP LOCKED
), placed AS (
    UPDATE jobs j SET state = 'assigned', node_id = p.node_id, token = j.token + 1
    FROM picked p
    WHERE j.id = p.id
    RETURNING j.node_id
), woken AS (
    SELECT node_id, count(*) AS placed, pg_notify(:node_prefix || left(md5(node_id), 16), '')
    FROM placed
    GROUP BY node_id
)
SELECT (SELECT count(*) FROM fence), (SELECT coalesce(sum(placed), 0) FROM woken)

-- name: put_stats
INSERT INTO stats (name, data, updated_at) VALUES (:name, :data::jsonb, rota_now())
ON CONFLICT (name) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at

-- name: put_stats_once
-- True when this statement inserted the row, or the row holds equal data already.
WITH ins AS (
    INSERT INTO stats (name, data, updated_at) VALUES (:name, :data::jsonb, rota_now())
    ON CONFLICT (name) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT FROM ins)
    OR EXISTS (SELECT FROM stats WHERE name = :name AND data = :data::jsonb)

-- name: any_pending
SELECT EXISTS (SELECT FROM jobs WHERE state = 'pending')

-- name: get_stats
SELECT data FROM stats WHERE name = :name

-- name: prune_jobs
-- One batch of final jobs past retention (the caller repeats until a short batch), with the
-- unique keys they still hold. A parent is kept while a child of its still waits (its
-- state decides the child's): count(*), not EXISTS, so that the planner costs the whole
-- probe and takes jobs_children_idx (with EXISTS it bets on a Seq Scan finding a row
-- early); only jobs with has_children run it.
WITH doomed AS (
    SELECT id FROM jobs j
    WHERE state IN ('succeeded', 'dead', 'cancelled', 'upstream_failed')
        AND finished_at < rota_now() - :older_than
        AND NOT (j.has_children IS TRUE AND (
            SELECT count(*) FROM jobs c WHERE c.state = 'waiting' AND c.depends_on @> ARRAY[j.id]
        ) > 0)
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM jobs j USING doomed WHERE j.id = doomed.id RETURNING j.id, j.unique_key
), history AS (
    DELETE FROM job_attempts a USING deleted d WHERE a.job_id = d.id
), released AS (
    DELETE FROM unique_keys u USING deleted d WHERE u.key = d.unique_key AND u.job_id = d.id
)
SELECT count(*) FROM deleted

-- name: prune_nodes
DELETE FROM nodes n
WHERE n.state IN ('dead', 'stopped') AND n.gone_at < rota_now() - :older_than
    AND NOT EXISTS (
        SELECT FROM jobs j WHERE j.node_id = n.id AND j.state IN ('assigned', 'running')
    )

-- name: grant_claims
-- Fenced: replace the claim grants with one row per node (:queues[i] is node :node_ids[i]'s
-- queues as a JSON array), under this lease's name and token (see claim_grants).
WITH fence AS (
    SELECT token FROM leases
    WHERE name = :lease_name AND holder = :holder AND token = :token
        AND expires_at > rota_now()
    FOR SHARE
), wanted AS (
    SELECT w.node_id, ARRAY(SELECT jsonb_array_elements_text(w.queues::jsonb)) AS queues
    FROM unnest(:node_ids::text[], :queues::text[]) AS w (node_id, queues)
    WHERE EXISTS (SELECT FROM fence)
), dropped AS (
    DELETE FROM claim_grants g
    WHERE EXISTS (SELECT FROM fence) AND g.node_id <> ALL (:node_ids::text[])
), written AS (
    INSERT INTO claim_grants (node_id, queues, lease_name, token)
    SELECT node_id, queues, :lease_name, :token FROM wanted
    ON CONFLICT (node_id) DO UPDATE SET queues = excluded.queues,
        lease_name = excluded.lease_name, token = excluded.token
)
SELECT count(*) FROM fence
