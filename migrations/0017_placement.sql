-- Bridge tenancy (docs/tenancy.md): the databases a platform places tenants in, and where each
-- tenant lives. `keel_databases` and `tenant_placements` are the control plane's directory and
-- are read in the platform's own database (the pool) only; a dedicated database has them empty.

CREATE TABLE keel_databases (
    name        text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,39}$' AND name <> 'pool'),
    -- The URL sealed with the master key (AES-256-GCM, bound to the name): a secret like the
    -- webhook secrets, never stored or printed in the clear.
    url_sealed  bytea       NOT NULL,
    key_id      text        NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now()
);

-- A tenant with no row here lives in the pool. `epoch` counts the tenant's moves: a consistency
-- token names the epoch it was issued in, so a token from before a move still means something.
CREATE TABLE tenant_placements (
    tenant_id   uuid        PRIMARY KEY,
    database    text        NOT NULL CHECK (database = 'pool' OR database ~ '^[a-z][a-z0-9_-]{0,39}$'),
    epoch       integer     NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    placed_at   timestamptz NOT NULL DEFAULT now()
);

-- Events that came into this database by import or move, not by a command: events out
-- (webhooks, NATS) do not send them again, since the database they came from did.
CREATE TABLE imported_events (
    tenant_id       uuid        NOT NULL,
    first_position  bigint      NOT NULL,
    last_position   bigint      NOT NULL CHECK (last_position >= first_position),
    source          text        NOT NULL,
    imported_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, first_position)
);

GRANT SELECT ON keel_databases, tenant_placements TO keel_writer, keel_reader, keel_projector;
GRANT INSERT ON tenant_placements TO keel_writer;
GRANT SELECT ON imported_events TO keel_reader, keel_projector;
