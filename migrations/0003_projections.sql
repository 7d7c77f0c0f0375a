-- Asynchronous projections: checkpoints and the first read table.

-- (last_xid, last_position) is the last event applied, in the gap-safe read order.
CREATE TABLE projection_checkpoints (
    name           text PRIMARY KEY,
    last_xid       xid8        NOT NULL DEFAULT '0',
    last_position  bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rm_projects (
    tenant_id          uuid        NOT NULL,
    project_id         uuid        NOT NULL,
    name               text        NOT NULL,
    description        text,
    status             text        NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    version            bigint      NOT NULL,
    tasks_todo         integer     NOT NULL DEFAULT 0,
    tasks_in_progress  integer     NOT NULL DEFAULT 0,
    tasks_done         integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, project_id)
);
-- The default list order: oldest first, keyset-paginated on (created_at, project_id).
CREATE INDEX rm_projects_created_idx ON rm_projects (tenant_id, created_at, project_id);

ALTER TABLE rm_projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE rm_projects FORCE ROW LEVEL SECURITY;
CREATE POLICY rm_projects_tenant ON rm_projects
    USING (tenant_id = keel_current_tenant())
    WITH CHECK (tenant_id = keel_current_tenant());
CREATE POLICY rm_projects_projector ON rm_projects TO keel_projector USING (true) WITH CHECK (true);

REVOKE ALL ON projection_checkpoints, rm_projects FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON projection_checkpoints TO keel_projector;
GRANT SELECT ON projection_checkpoints TO keel_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON rm_projects TO keel_projector;
GRANT SELECT ON rm_projects TO keel_reader;
