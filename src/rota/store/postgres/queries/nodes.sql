-- The nodes as the scheduler's snapshot reads them (list_nodes): their loads with no spec
-- columns, and the specs of the nodes the store client has not kept yet (kept by
-- registered_at: register_node stamps it anew, so a changed spec is read again).

-- name: node_loads
-- The load of each node: one pass over the active jobs (jobs_active_idx) for the counts;
-- the resources in use sum only the active jobs that ask for some (jsonb_each costs a few
-- microseconds a row: at 1,000 nodes, 20 ms of the scheduler's cycle for jobs without).
SELECT n.id, n.registered_at, n.state, n.heartbeat_at,
    coalesce(load.assigned, 0) AS assigned, coalesce(load.running, 0) AS running,
    coalesce(used.used, '{}'::jsonb) AS used
FROM nodes n
LEFT JOIN (
    SELECT node_id, count(*) FILTER (WHERE state = 'assigned') AS assigned,
        count(*) FILTER (WHERE state = 'running') AS running
    FROM jobs
    WHERE state IN ('assigned', 'running')
    GROUP BY node_id
) load ON load.node_id = n.id
LEFT JOIN (
    SELECT node_id, jsonb_object_agg(name, total) AS used
    FROM (
        SELECT j.node_id, r.key AS name, sum(r.value::double precision) AS total
        FROM jobs j, jsonb_each(j.resources) r
        WHERE j.state IN ('assigned', 'running') AND j.resources <> '{}'::jsonb
        GROUP BY j.node_id, r.key
    ) per_resource
    GROUP BY node_id
) used ON used.node_id = n.id
WHERE :states::text[] IS NULL OR n.state = ANY(:states::text[])
ORDER BY n.registered_at, n.id

-- name: node_specs
SELECT id, registered_at, name, slots, prefetch, resources, labels, queues, host, pid
FROM nodes
WHERE id = ANY(:ids::text[])
