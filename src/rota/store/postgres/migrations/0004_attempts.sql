-- 0004: the attempt history. One row per attempt of a job, keyed by (job_id, token): the
-- statements that move a job (start_jobs, complete, release_jobs, reap_jobs) write it in
-- the same statement, prune_jobs deletes it with the job, and start_jobs keeps the last
-- attempt_history attempts of each job. IF NOT EXISTS: re-applying it is harmless.
CREATE TABLE IF NOT EXISTS job_attempts (
    job_id     text             NOT NULL,
    token      bigint           NOT NULL,
    attempt    integer          NOT NULL,
    node_id    text,
    started_at double precision NOT NULL,
    ended_at   double precision,
    outcome    text,
    cut_short  text,
    error      text,
    traceback  text,
    claim      text,  -- the start_jobs call that opened it (its retry finds what it started)
    CONSTRAINT job_attempts_pkey PRIMARY KEY (job_id, token)
);
