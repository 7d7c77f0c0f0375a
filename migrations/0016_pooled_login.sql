-- The login for connections through a transaction pooler (docs/scaling.md, "Through PgBouncer").
-- It may only SET ROLE to the three service roles and holds no privilege of its own (NOINHERIT),
-- so a statement that ran outside a transaction setting its role would be refused rather than
-- run with more rights. It cannot log in until an operator says so:
--   ALTER ROLE keel_pooled LOGIN PASSWORD '...';
-- Roles are cluster-wide: another Keel database may have made it, or be making it right now.
DO $$
DECLARE
    r text;
BEGIN
    BEGIN
        CREATE ROLE keel_pooled NOLOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
    END;
    FOREACH r IN ARRAY ARRAY['keel_writer', 'keel_reader', 'keel_projector'] LOOP
        IF NOT pg_has_role('keel_pooled', r, 'MEMBER') THEN
            BEGIN
                EXECUTE format('GRANT %I TO keel_pooled', r);
            EXCEPTION WHEN unique_violation OR internal_error THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;
