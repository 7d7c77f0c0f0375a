-- Webhook endpoints (issue 17, point 1): an inline table, written in the append's transaction
-- from the `webhook` streams' events, read by the command path (the per-tenant limit) and by
-- GraphQL's `webhooks`. The secrets are stored as they are in the log: sealed (`enc:v1:...`) with
-- the endpoint's own data key in `member_keys` (see docs/decisions.md, "Webhook secrets").

CREATE TABLE webhook_endpoints (
    tenant_id               uuid        NOT NULL,
    webhook_id              uuid        NOT NULL,
    url                     text        NOT NULL,
    event_types             text[]      NOT NULL,
    description             text,
    secret                  text        NOT NULL,
    previous_secret         text,
    previous_valid_until    timestamptz,
    state                   text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'failing', 'disabled')),
    deleted                 boolean     NOT NULL DEFAULT false,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, webhook_id)
);
COMMENT ON TABLE webhook_endpoints IS 'A tenant''s webhook endpoints, from its webhook streams (inline).';
COMMENT ON COLUMN webhook_endpoints.secret IS 'The signing secret, sealed; only the writer role may read it.';
CREATE INDEX webhook_endpoints_live_idx ON webhook_endpoints (tenant_id, created_at) WHERE NOT deleted;

ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_endpoints_tenant ON webhook_endpoints
    USING (tenant_id = keel_current_tenant())
    WITH CHECK (tenant_id = keel_current_tenant());

REVOKE ALL ON webhook_endpoints FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_endpoints TO keel_writer;
-- The query side reads every column but the secrets.
GRANT SELECT (tenant_id, webhook_id, url, event_types, description, previous_valid_until, state, deleted,
              created_at, updated_at) ON webhook_endpoints TO keel_reader;
