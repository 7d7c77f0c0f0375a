-- Dead letters can be worked (issue 16, point 7): `keel projections dead-letters` lists them,
-- `retry` re-applies one through its projection and `skip` acknowledges one. Each parked row gets
-- a short id to name it by, an acknowledgement, and every action on it is recorded.

ALTER TABLE projection_dead_letters
    ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY,
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN acknowledged_by text;
ALTER TABLE projection_dead_letters ADD CONSTRAINT projection_dead_letters_id_key UNIQUE (id);
COMMENT ON COLUMN projection_dead_letters.id IS 'What `keel projections dead-letters retry|skip ID` names it by.';
COMMENT ON COLUMN projection_dead_letters.acknowledged_at IS 'Set by `skip`: no longer active (not in the gauge or the default list), kept for the record. Parked again, it is active again.';

-- What operators did with dead letters: one row per action, never changed or deleted. A retry
-- that applied the event removes the parked row; this row keeps what it was.
CREATE TABLE projection_dead_letter_actions (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dead_letter_id bigint      NOT NULL,
    projection     text        NOT NULL,
    position       bigint      NOT NULL,
    tenant_id      uuid        NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    action         text        NOT NULL CHECK (action IN ('retry', 'skip')),
    outcome        text        NOT NULL CHECK (outcome IN ('applied', 'failed', 'acknowledged')),
    error          text,
    actor          text        NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE projection_dead_letter_actions IS 'Retries and skips of dead letters: who (cli:<os user>), when, what, outcome.';
CREATE INDEX projection_dead_letter_actions_projection_idx ON projection_dead_letter_actions (projection, action, outcome);

-- Platform-level like the dead letters themselves: only the projector role (which serves every
-- tenant) reads and appends; the tenant policy keeps a tenant-scoped session to its own rows.
ALTER TABLE projection_dead_letter_actions ENABLE ROW LEVEL SECURITY;
ALTER TABLE projection_dead_letter_actions FORCE ROW LEVEL SECURITY;
CREATE POLICY projection_dead_letter_actions_tenant ON projection_dead_letter_actions
    USING (tenant_id = keel_current_tenant())
    WITH CHECK (tenant_id = keel_current_tenant());
CREATE POLICY projection_dead_letter_actions_projector ON projection_dead_letter_actions TO keel_projector
    USING (true) WITH CHECK (true);
REVOKE ALL ON projection_dead_letter_actions FROM PUBLIC;
GRANT SELECT, INSERT ON projection_dead_letter_actions TO keel_projector;
