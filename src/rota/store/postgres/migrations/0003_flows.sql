-- 0003: workflows (depends_on, the waiting and upstream_failed states), unique jobs,
-- concurrency keys, rate limits and periodic schedules. Every step can run again
-- (IF [NOT] EXISTS), so re-applying it after a lost rota_migrations record is harmless.

-- New columns go at the end of jobs. All nullable without a default, NULL meaning the
-- default (no parents, false, 0): adding them is a catalog-only change, and the row of a job
-- that uses none of them is no wider than before (a few bits of the null bitmap).
-- has_children is set on a job once a child names it as a parent.
ALTER TABLE jobs
    ADD COLUMN IF NOT EXISTS depends_on        text[],
    ADD COLUMN IF NOT EXISTS pass_results      boolean,
    ADD COLUMN IF NOT EXISTS workflow_id       text,
    ADD COLUMN IF NOT EXISTS unique_key        text,
    ADD COLUMN IF NOT EXISTS concurrency_key   text,
    ADD COLUMN IF NOT EXISTS concurrency_limit integer,
    ADD COLUMN IF NOT EXISTS rate_limit        text,
    ADD COLUMN IF NOT EXISTS has_children      boolean;

ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN ('waiting', 'scheduled',
    'pending', 'assigned', 'running', 'retrying', 'succeeded', 'dead', 'cancelled',
    'upstream_failed'));

DROP INDEX IF EXISTS jobs_finished_idx;
CREATE INDEX jobs_finished_idx ON jobs (finished_at)
    WHERE state IN ('succeeded', 'dead', 'cancelled', 'upstream_failed');
CREATE INDEX IF NOT EXISTS jobs_children_idx ON jobs USING gin (depends_on)
    WHERE state = 'waiting';
CREATE INDEX IF NOT EXISTS jobs_concurrency_idx ON jobs (concurrency_key)
    WHERE concurrency_key IS NOT NULL AND state IN ('assigned', 'running');

CREATE TABLE IF NOT EXISTS settle_parents (
    seq       bigserial NOT NULL,
    parent_id text      NOT NULL,
    CONSTRAINT settle_parents_pkey PRIMARY KEY (seq)
);

CREATE TABLE IF NOT EXISTS settle_children (
    job_id text NOT NULL,
    CONSTRAINT settle_children_pkey PRIMARY KEY (job_id)
);

CREATE TABLE IF NOT EXISTS unique_keys (
    key        text             NOT NULL,
    job_id     text             NOT NULL,
    expires_at double precision,
    CONSTRAINT unique_keys_pkey PRIMARY KEY (key)
);

CREATE TABLE IF NOT EXISTS schedules (
    name      text             NOT NULL,
    spec      text             NOT NULL,
    last_tick double precision,
    CONSTRAINT schedules_pkey PRIMARY KEY (name)
);
