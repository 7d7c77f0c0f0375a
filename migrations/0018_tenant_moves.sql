-- Moving a tenant between databases while it serves (docs/tenancy.md, "Moving a tenant").

-- In every database: a tenant that left it. Its events may no longer be appended here (the
-- write path is told to look again where the tenant lives); its rows stay until retired.
CREATE TABLE tenants_departed (
    tenant_id     uuid        PRIMARY KEY,
    to_database   text        NOT NULL,
    departed_at   timestamptz NOT NULL DEFAULT now(),
    retire_after  timestamptz NOT NULL,
    retired_at    timestamptz
);

-- In every database: a tenant arriving by a move, with the source's log position copied so far.
-- It commits with the rows it describes, so a move resumes exactly where it stopped.
CREATE TABLE tenant_arrivals (
    tenant_id        uuid        PRIMARY KEY,
    from_database    text        NOT NULL,
    source_xid       text        NOT NULL,
    source_position  bigint      NOT NULL,
    events           bigint      NOT NULL DEFAULT 0,
    -- The last event copied, as this database's log position (where old tokens are satisfied).
    last_xid         text,
    last_position    bigint,
    complete         boolean     NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- In the platform's database: moves under way, one per tenant.
CREATE TABLE tenant_moves (
    tenant_id      uuid        PRIMARY KEY,
    from_database  text        NOT NULL,
    to_database    text        NOT NULL,
    step           text        NOT NULL CHECK (step IN ('copying', 'switched', 'serving', 'done')),
    purge          boolean     NOT NULL DEFAULT false,
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    fence_ms       integer
);

-- While a moved tenant's read models catch up in its new database, its reads are served from the
-- one it left (they never go backwards); `arrived_*` is the new database's position of the last
-- copied event, where a consistency token from before the move is satisfied.
ALTER TABLE tenant_placements
    ADD COLUMN reads_from        text,
    ADD COLUMN arrived_xid       text,
    ADD COLUMN arrived_position  bigint;

-- The write fence: every appended event takes its tenant's fence lock shared and is refused for a
-- tenant that departed. A move holds the lock exclusively for its last copy, so the tenant's
-- writes wait (never fail) for those moments. Bulk loads of an arriving tenant set `keel.bulk`.
CREATE FUNCTION keel_fence_key(tenant uuid) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashtextextended('keel.fence:' || tenant::text, 0) $$;

CREATE FUNCTION keel_tenant_here() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(keel_fence_key(NEW.tenant_id));
    IF EXISTS (SELECT 1 FROM tenants_departed WHERE tenant_id = NEW.tenant_id) THEN
        RAISE EXCEPTION 'tenant % has moved to another database', NEW.tenant_id USING ERRCODE = 'KL020';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_tenant_here
    BEFORE INSERT ON events
    FOR EACH ROW WHEN (current_setting('keel.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION keel_tenant_here();

-- Retiring a departed tenant's rows is the one deletion the log allows: with `keel.retire` set to
-- a tenant that departed, a DELETE may remove that tenant's events and no other row.
CREATE OR REPLACE FUNCTION keel_events_are_immutable() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    retiring uuid := NULLIF(current_setting('keel.retire', true), '')::uuid;
BEGIN
    IF TG_OP = 'DELETE' AND retiring IS NOT NULL
       AND EXISTS (SELECT 1 FROM tenants_departed WHERE tenant_id = retiring) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION keel_retire_only_the_departed() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF OLD.tenant_id IS DISTINCT FROM NULLIF(current_setting('keel.retire', true), '')::uuid THEN
        RAISE EXCEPTION 'only the retiring tenant''s events may be deleted' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER events_retire_only_the_departed
    BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION keel_retire_only_the_departed();

GRANT SELECT ON tenants_departed TO keel_writer, keel_reader, keel_projector;
GRANT SELECT ON tenant_arrivals TO keel_reader, keel_projector;
GRANT SELECT ON imported_events TO keel_writer;

-- A command that appends no event but stores its idempotency key (an unchanged keyed command)
-- passes the same fence.
CREATE TRIGGER idempotency_keys_tenant_here
    BEFORE INSERT OR UPDATE ON idempotency_keys
    FOR EACH ROW WHEN (current_setting('keel.bulk', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION keel_tenant_here();
