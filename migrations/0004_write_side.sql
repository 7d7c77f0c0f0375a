-- The rest of the write side: member reservations, usage quota counters and record ids,
-- idempotency keys. All tenant-scoped with RLS like every other tenant table.

-- A removed member frees their user id and email for a new invitation.
ALTER TABLE memberships DROP CONSTRAINT memberships_user_key;
ALTER TABLE memberships ADD COLUMN email_key text;
COMMENT ON COLUMN memberships.email_key IS 'SHA-256 (hex) of the lower-cased email: uniqueness without the address itself.';
CREATE UNIQUE INDEX memberships_user_key ON memberships (tenant_id, user_id) WHERE status = 'active';
CREATE UNIQUE INDEX memberships_email_key ON memberships (tenant_id, email_key) WHERE status = 'active';

ALTER TABLE tenants ADD COLUMN suspended_reason text;

-- Units recorded per calendar month (UTC), all metrics together, against the plan's quota.
CREATE TABLE usage_counters (
    tenant_id  uuid   NOT NULL,
    month      date   NOT NULL,
    units      bigint NOT NULL DEFAULT 0 CHECK (units >= 0),
    PRIMARY KEY (tenant_id, month)
);

-- Every usage record id ever recorded: a record is counted once however often it is sent.
CREATE TABLE usage_records (
    tenant_id  uuid NOT NULL,
    record_id  text NOT NULL,
    batch_id   uuid NOT NULL,
    CONSTRAINT usage_records_pkey PRIMARY KEY (tenant_id, record_id)
);

-- The first response to each Idempotency-Key, kept 24 hours.
CREATE TABLE idempotency_keys (
    tenant_id     uuid        NOT NULL,
    key           text        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    request_hash  bytea       NOT NULL,
    status        integer,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['usage_counters', 'usage_records', 'idempotency_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY %I ON %I USING (tenant_id = keel_current_tenant()) WITH CHECK (tenant_id = keel_current_tenant())',
            t || '_tenant', t);
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON usage_counters, usage_records, idempotency_keys TO keel_writer;
-- Inline tables are rebuilt from the log per tenant by the writer.
GRANT DELETE ON tenants, memberships TO keel_writer;
GRANT SELECT ON usage_counters TO keel_reader;
