-- 0002: rota_now() reads the clock with date_part (double precision) rather than extract
-- (numeric since PostgreSQL 14): the same value without a numeric conversion per call,
-- which a bulk submit makes four times per row.

CREATE OR REPLACE FUNCTION rota_now() RETURNS double precision
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT date_part('epoch', statement_timestamp()) $$;
