-- The service roles, the tenant context and the append-only event log (SPEC §4, §5).

-- Roles are cluster-wide: another Keel database on this server may have made them already, or
-- may be making them right now. Each is created if missing; a concurrent creation is not an error.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['keel_writer', 'keel_reader', 'keel_projector'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
        -- The migrating role switches to the service roles with SET ROLE; a superuser may already.
        IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
           AND NOT pg_has_role(current_user, r, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', r, current_user);
        END IF;
    END LOOP;
END
$$;

-- The tenant of the current transaction, set with set_config('keel.tenant_id', $1, true).
-- Unset (or reset at the end of a transaction) it is NULL, and `tenant_id = NULL` matches nothing.
CREATE FUNCTION keel_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(current_setting('keel.tenant_id', true), '')::uuid $$;

CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    tenant_id       uuid        NOT NULL,
    stream_type     text        NOT NULL,
    stream_id       uuid        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version >= 1),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version >= 1),
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea,
    hash            bytea       NOT NULL CHECK (octet_length(hash) = 32),
    -- Optimistic concurrency: two appends of the same version to one stream cannot both commit.
    CONSTRAINT events_stream_version_key UNIQUE (tenant_id, stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_chain CHECK ((stream_version = 1) = (prev_hash IS NULL))
);

-- Gap-safe readers scan in commit-safe order: (transaction id, position).
CREATE INDEX events_xid_position_idx ON events (transaction_id, position);
CREATE INDEX events_tenant_type_idx ON events (tenant_id, event_type, position);

COMMENT ON TABLE events IS 'Append-only event log. Rows are never updated or deleted.';
COMMENT ON COLUMN events.transaction_id IS 'xid8 of the appending transaction; readers never read past pg_snapshot_xmin(pg_current_snapshot()).';
COMMENT ON COLUMN events.hash IS 'SHA-256(prev_hash or 32 zero bytes || canonical bytes of the event); see store::hash.';

-- Immutability for everyone, superusers included: statement-level, so even a statement that
-- matches no row is refused.
CREATE FUNCTION keel_events_are_immutable() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_immutable
    BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION keel_events_are_immutable();

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY events_tenant ON events
    USING (tenant_id = keel_current_tenant())
    WITH CHECK (tenant_id = keel_current_tenant());
-- Projection workers read every tenant's events (and nothing else of the log).
CREATE POLICY events_projector_read ON events FOR SELECT TO keel_projector USING (true);

REVOKE ALL ON events FROM PUBLIC;
GRANT SELECT, INSERT ON events TO keel_writer;
GRANT SELECT ON events TO keel_reader, keel_projector;
GRANT USAGE ON SEQUENCE events_position_seq TO keel_writer;

-- /readyz compares applied migrations with the binary's.
GRANT SELECT ON _sqlx_migrations TO keel_reader, keel_writer, keel_projector;
