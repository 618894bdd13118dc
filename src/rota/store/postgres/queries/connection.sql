-- The statements the PostgreSQL store runs are named (``-- name: NAME``) in the files of this
-- folder (queries.py loads them all), each one atomic. This file: migrations and sessions.
--
-- Parameters are written ``:name`` and bound by the server (psycopg turns them into
-- placeholders when this file is loaded); no value is ever formatted into SQL text. Tables
-- are unqualified: the store puts its schema first on the search_path. Times come from
-- ``rota_now()`` (the server's clock, in unix seconds), never from the client.
--
-- Wake-ups are NOTIFYs sent in the same transaction as the change (so they are delivered
-- on commit only): the channel names are passed in as parameters (they are namespaced by
-- the schema, see ``connection.py``); a node's channel is ``:node_prefix`` followed by the
-- first 16 hex digits of md5(node id).

-- ---- migrations --------------------------------------------------------------------------

-- name: schema_exists
SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = :schema)

-- name: migration_lock
-- Serialise concurrent migrations of one schema (released at commit).
SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS rota_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: applied_migrations
SELECT version FROM rota_migrations ORDER BY version

-- name: record_migration
INSERT INTO rota_migrations (version, name) VALUES (:version, :name)

-- ---- connections -------------------------------------------------------------------------

-- name: set_search_path
SELECT set_config('search_path', :search_path, :is_local)

-- name: session_settings
-- Every statement of the store is short: JIT compilation (tens of ms) never pays off, and
-- a statement with a subplan (prune_jobs) can be estimated above jit_above_cost.
SELECT set_config('jit', 'off', false)

-- name: get_search_path
SELECT current_setting('search_path')

-- name: notify
SELECT pg_notify(:channel, :payload)

-- name: now
SELECT rota_now()
