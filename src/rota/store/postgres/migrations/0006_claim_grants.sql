-- 0006: claim grants (FastPaths.grant_claims). One row per live node the scheduler leader
-- lets claim plain pending jobs of the listed queues itself, in placement order; a row is
-- current only while the lease it was written under (lease_name, token) still has that
-- token and has not expired. grant_claims replaces every row, fenced; start_jobs and
-- complete_and_start read the claiming node's row.
CREATE TABLE IF NOT EXISTS claim_grants (
    node_id    text   NOT NULL,
    queues     text[] NOT NULL,
    lease_name text   NOT NULL,
    token      bigint NOT NULL,
    CONSTRAINT claim_grants_pkey PRIMARY KEY (node_id)
);
