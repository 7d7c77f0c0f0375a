-- Webhook delivery (issue 17, points 3, 4 and 8; docs/integration.md "Delivery"). Three tables,
-- all tenant-scoped under RLS, written by the projector role:
--
-- * webhook_routes: which endpoints take which event types, as the fan-out consumer
--   (`outbound.webhooks`) has read them from the log. Kept by that consumer in log order, so an
--   endpoint takes exactly the events after its creation (and after each change of its types).
-- * webhook_queue: one row per (endpoint, event) still to deliver, written by the fan-out in the
--   transaction that moves its checkpoint, deleted by the endpoint's delivery worker after a 2xx.
--   An endpoint's order is the log's (transaction id, position).
-- * webhook_endpoint_state: an endpoint's health and lease (one delivery worker per endpoint in
--   the cluster), what it delivered last, and how many rows wait for it.
-- * webhook_deliveries: every attempt (the delivery log), kept KEEL_WEBHOOKS_DELIVERY_LOG_DAYS.

CREATE TABLE webhook_routes (
    tenant_id   uuid    NOT NULL,
    webhook_id  uuid    NOT NULL,
    event_types text[]  NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    PRIMARY KEY (tenant_id, webhook_id)
);
COMMENT ON TABLE webhook_routes IS 'Endpoints and their event types as of the fan-out''s checkpoint (outbound.webhooks).';

CREATE TABLE webhook_queue (
    tenant_id      uuid        NOT NULL,
    webhook_id     uuid        NOT NULL,
    transaction_id xid8        NOT NULL,
    position       bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    enqueued_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, webhook_id, transaction_id, position)
);
COMMENT ON TABLE webhook_queue IS 'Events an endpoint has still to receive, in log order; deleted after a 2xx.';

CREATE TABLE webhook_endpoint_state (
    tenant_id              uuid        NOT NULL,
    webhook_id             uuid        NOT NULL,
    state                  text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'failing', 'disabled', 'deleted')),
    consecutive_failures   integer     NOT NULL DEFAULT 0,
    next_attempt_at        timestamptz,
    last_error             text,
    pending                bigint      NOT NULL DEFAULT 0,
    -- Events not queued because the queue was full (KEEL_WEBHOOKS_QUEUE_MAX), since when.
    dropped                bigint      NOT NULL DEFAULT 0,
    dropped_since          timestamptz,
    delivered_xid          xid8,
    delivered_position     bigint,
    last_delivered_at      timestamptz,
    lease_holder           text,
    lease_expires_at       timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, webhook_id)
);
COMMENT ON TABLE webhook_endpoint_state IS 'An endpoint''s delivery health and lease (webhook delivery workers).';

CREATE TABLE webhook_deliveries (
    id           bigint      GENERATED ALWAYS AS IDENTITY,
    tenant_id    uuid        NOT NULL,
    webhook_id   uuid        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    position     bigint      NOT NULL,
    attempt      integer     NOT NULL,
    attempted_at timestamptz NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('delivered', 'failed')),
    status_code  integer,
    latency_ms   double precision NOT NULL,
    error        text,
    PRIMARY KEY (tenant_id, webhook_id, id)
);
COMMENT ON TABLE webhook_deliveries IS 'Every webhook delivery attempt, kept KEEL_WEBHOOKS_DELIVERY_LOG_DAYS days.';
CREATE INDEX webhook_deliveries_recent_idx ON webhook_deliveries (tenant_id, webhook_id, attempted_at DESC);
CREATE INDEX webhook_deliveries_age_idx ON webhook_deliveries (attempted_at);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['webhook_routes', 'webhook_queue', 'webhook_endpoint_state', 'webhook_deliveries'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I USING (tenant_id = keel_current_tenant()) WITH CHECK (tenant_id = keel_current_tenant())', t || '_tenant', t);
        EXECUTE format('CREATE POLICY %I ON %I TO keel_projector USING (true) WITH CHECK (true)', t || '_projector', t);
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO keel_projector', t);
    END LOOP;
END $$;
-- The query side reads an endpoint's health and its recent deliveries (never the queue).
GRANT SELECT ON webhook_endpoint_state, webhook_deliveries TO keel_reader;

-- The delivery worker reads an endpoint's URL and its sealed secrets (opened with the endpoint's
-- data key, which the projector already reads in member_keys); the writer role still owns them.
CREATE POLICY webhook_endpoints_projector ON webhook_endpoints FOR SELECT TO keel_projector USING (true);
GRANT SELECT ON webhook_endpoints TO keel_projector;

-- The state column of webhook_endpoints was never written: an endpoint's health is the delivery
-- worker's, in webhook_endpoint_state.
ALTER TABLE webhook_endpoints DROP COLUMN state;
