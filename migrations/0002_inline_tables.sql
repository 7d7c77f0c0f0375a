-- Inline projections: written in the append transaction, read by authorization and invariants.

-- Control-plane state of each tenant; the unique slug is the platform-wide reservation.
CREATE TABLE tenants (
    tenant_id        uuid PRIMARY KEY,
    name             text        NOT NULL,
    slug             text        NOT NULL,
    plan             text        NOT NULL,
    status           text        NOT NULL,
    active_projects  integer     NOT NULL DEFAULT 0 CHECK (active_projects >= 0),
    seats_used       integer     NOT NULL DEFAULT 0 CHECK (seats_used >= 0),
    created_at       timestamptz NOT NULL,
    CONSTRAINT tenants_slug_key UNIQUE (slug)
);

CREATE TABLE memberships (
    tenant_id  uuid        NOT NULL,
    member_id  uuid        NOT NULL,
    user_id    text        NOT NULL,
    role       text        NOT NULL,
    status     text        NOT NULL,
    joined_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, member_id),
    CONSTRAINT memberships_user_key UNIQUE (tenant_id, user_id)
);

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenants_tenant ON tenants
    USING (tenant_id = keel_current_tenant())
    WITH CHECK (tenant_id = keel_current_tenant());

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY memberships_tenant ON memberships
    USING (tenant_id = keel_current_tenant())
    WITH CHECK (tenant_id = keel_current_tenant());

REVOKE ALL ON tenants, memberships FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON tenants, memberships TO keel_writer;
GRANT SELECT ON tenants, memberships TO keel_reader;
