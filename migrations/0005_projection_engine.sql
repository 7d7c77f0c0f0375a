-- The projection engine: state and leases on each checkpoint, and dead letters.

ALTER TABLE projection_checkpoints
    ADD COLUMN state text NOT NULL DEFAULT 'idle',
    ADD COLUMN lease_holder text,
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN last_error text;
COMMENT ON COLUMN projection_checkpoints.state IS 'running, catching_up, stopped or rebuilding; idle before the first run.';
COMMENT ON COLUMN projection_checkpoints.lease_holder IS 'The worker allowed to apply this projection until lease_expires_at.';

-- Events a projection could not apply after its retries, with the error.
CREATE TABLE projection_dead_letters (
    projection   text        NOT NULL,
    position     bigint      NOT NULL,
    xid          xid8        NOT NULL,
    tenant_id    uuid        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    error        text        NOT NULL,
    attempts     integer     NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, event_id)
);
ALTER TABLE projection_dead_letters ENABLE ROW LEVEL SECURITY;
ALTER TABLE projection_dead_letters FORCE ROW LEVEL SECURITY;
CREATE POLICY projection_dead_letters_tenant ON projection_dead_letters
    USING (tenant_id = keel_current_tenant())
    WITH CHECK (tenant_id = keel_current_tenant());
CREATE POLICY projection_dead_letters_projector ON projection_dead_letters TO keel_projector
    USING (true) WITH CHECK (true);
REVOKE ALL ON projection_dead_letters FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_dead_letters TO keel_projector;

-- Rebuilds replay into tables of the same names in this schema, then move them into public.
CREATE SCHEMA keel_rebuild;
GRANT USAGE ON SCHEMA keel_rebuild TO keel_projector;
