-- Audit and compliance (SPEC §4, §8): per-member data keys, snapshots, the audit reads' index.

-- keel_keys: the role `keel keys rotate` works as; it sees every tenant's data keys and nothing else.
DO $$
BEGIN
    BEGIN
        CREATE ROLE keel_keys NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
    END;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, 'keel_keys', 'MEMBER') THEN
        GRANT keel_keys TO CURRENT_USER;
    END IF;
END
$$;

-- One data key per member, sealed (AES-256-GCM) by the master key named by master_key_id.
-- Erasing a member deletes its row: what its events sealed with it can never be opened again.
CREATE TABLE member_keys (
    tenant_id      uuid        NOT NULL,
    member_id      uuid        NOT NULL,
    wrapped_key    bytea       NOT NULL,
    master_key_id  text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    rotated_at     timestamptz,
    PRIMARY KEY (tenant_id, member_id)
);
ALTER TABLE member_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE member_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY member_keys_tenant ON member_keys
    USING (tenant_id = keel_current_tenant()) WITH CHECK (tenant_id = keel_current_tenant());
CREATE POLICY member_keys_projector ON member_keys FOR SELECT TO keel_projector USING (true);
CREATE POLICY member_keys_rotation ON member_keys TO keel_keys USING (true) WITH CHECK (true);
REVOKE ALL ON member_keys FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON member_keys TO keel_writer;
GRANT SELECT ON member_keys TO keel_reader, keel_projector;
GRANT SELECT, UPDATE ON member_keys TO keel_keys;
GRANT SELECT ON _sqlx_migrations TO keel_keys;

-- The latest snapshot of a stream: a cache of its aggregate's state after `version`, with what an
-- append after it chains to. Deleting any or all of them changes nothing but load time.
CREATE TABLE snapshots (
    tenant_id       uuid        NOT NULL,
    stream_id       uuid        NOT NULL,
    stream_type     text        NOT NULL,
    -- The aggregate's state format; a snapshot of another format is ignored.
    state_version   integer     NOT NULL,
    version         bigint      NOT NULL,
    last_xid        xid8        NOT NULL,
    last_position   bigint      NOT NULL,
    last_hash       bytea       NOT NULL,
    state           jsonb       NOT NULL,
    taken_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, stream_id)
);
ALTER TABLE snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE snapshots FORCE ROW LEVEL SECURITY;
CREATE POLICY snapshots_tenant ON snapshots
    USING (tenant_id = keel_current_tenant()) WITH CHECK (tenant_id = keel_current_tenant());
REVOKE ALL ON snapshots FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON snapshots TO keel_writer;
GRANT SELECT ON snapshots TO keel_reader;

-- Audit reads page a tenant's log by position, by stream and by time.
CREATE INDEX events_tenant_position_idx ON events (tenant_id, position);
CREATE INDEX events_tenant_recorded_idx ON events (tenant_id, recorded_at, position);
