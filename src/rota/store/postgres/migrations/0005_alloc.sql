-- 0005: allocation (issue 17). ``alloc`` is the job's AllocSpec as JSON text (tenant,
-- preemptible, aging, gang; NULL when all are defaults): one nullable column, so fields can
-- be added later without a migration. ``preempted_at`` (store clock) and ``preemptions``
-- record preemptions, which do not count as attempts. A column with a constant default is
-- a catalog-only change (PostgreSQL 11+). IF NOT EXISTS: re-applying it is harmless.
ALTER TABLE jobs
    ADD COLUMN IF NOT EXISTS alloc        text,
    ADD COLUMN IF NOT EXISTS preempted_at double precision,
    ADD COLUMN IF NOT EXISTS preemptions  integer NOT NULL DEFAULT 0;
