-- Every command in two calls besides its transaction's frame (docs/performance.md "The write
-- path"): one reads everything the decision needs, one appends everything the decision wrote.
--
-- * keel_inline applies the inline tables' changes for a batch of events, as operations made by
--   store::inline::ops (the one place that says what each event changes); keel_append and the
--   inline rebuild both call it.
-- * keel_append also applies those operations, moves the counters after them, and stores the
--   command's idempotency key with its answer.
-- * keel_command_read also locks the tenant row (in a transaction), claims or looks up the
--   idempotency key, counts active owners and webhook endpoints, locks and reads the usage
--   months, and finds the usage record ids already recorded.

-- The inline tables' changes (store::inline::ops), then the tenant's counters moved by
-- (p_seats, p_projects): after the operations, so an erasure's zeroing comes first and a
-- provisioning's row exists. A counter move on a tenant with no row is SQLSTATE KL002.
CREATE FUNCTION keel_inline(p_tenant uuid, p_ops jsonb, p_seats integer, p_projects integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    o jsonb;
BEGIN
    FOR o IN SELECT value FROM jsonb_array_elements(coalesce(p_ops, '[]'::jsonb)) LOOP
        CASE o ->> 'op'
        WHEN 'tenant_insert' THEN
            INSERT INTO tenants (tenant_id, name, slug, plan, status, created_at)
            VALUES (p_tenant, o ->> 'name', o ->> 'slug', o ->> 'plan', 'active', (o ->> 'at')::timestamptz);
        WHEN 'tenant_plan' THEN
            UPDATE tenants SET plan = o ->> 'plan' WHERE tenant_id = p_tenant;
        WHEN 'tenant_suspend' THEN
            UPDATE tenants SET status = 'suspended', suspended_reason = o ->> 'reason' WHERE tenant_id = p_tenant;
        WHEN 'tenant_reactivate' THEN
            UPDATE tenants SET status = 'active', suspended_reason = NULL WHERE tenant_id = p_tenant;
        WHEN 'tenant_erase' THEN
            UPDATE tenants SET status = 'erased', seats_used = 0, active_projects = 0 WHERE tenant_id = p_tenant;
            UPDATE memberships SET status = 'erased', email_key = NULL WHERE tenant_id = p_tenant;
            DELETE FROM member_keys WHERE tenant_id = p_tenant;
            -- An erased tenant sends nothing more (its endpoints' keys are gone too).
            UPDATE webhook_endpoints SET deleted = true WHERE tenant_id = p_tenant;
        WHEN 'member_insert' THEN
            INSERT INTO memberships (tenant_id, member_id, user_id, role, status, joined_at, email_key)
            VALUES (p_tenant, (o ->> 'member_id')::uuid, o ->> 'user_id', o ->> 'role', 'active',
                    (o ->> 'at')::timestamptz, o ->> 'email_key');
        WHEN 'member_role' THEN
            UPDATE memberships SET role = o ->> 'role' WHERE tenant_id = p_tenant AND member_id = (o ->> 'member_id')::uuid;
        WHEN 'member_remove' THEN
            UPDATE memberships SET status = 'removed' WHERE tenant_id = p_tenant AND member_id = (o ->> 'member_id')::uuid;
        WHEN 'member_erase' THEN
            UPDATE memberships SET status = 'erased', email_key = NULL
             WHERE tenant_id = p_tenant AND member_id = (o ->> 'member_id')::uuid;
            DELETE FROM member_keys WHERE tenant_id = p_tenant AND member_id = (o ->> 'member_id')::uuid;
        WHEN 'usage' THEN
            -- A record id seen before violates usage_records_pkey: the command is retried against
            -- fresh state, where that record is skipped.
            INSERT INTO usage_records (tenant_id, record_id, batch_id)
            SELECT p_tenant, r, (o ->> 'batch_id')::uuid FROM jsonb_array_elements_text(o -> 'ids') AS r;
            INSERT INTO usage_counters (tenant_id, month, units)
            SELECT p_tenant, (m ->> 'month')::date, (m ->> 'units')::bigint FROM jsonb_array_elements(o -> 'months') AS m
                ON CONFLICT (tenant_id, month) DO UPDATE SET units = usage_counters.units + EXCLUDED.units;
        WHEN 'webhook_insert' THEN
            INSERT INTO webhook_endpoints (tenant_id, webhook_id, url, event_types, description, secret, created_at,
                                           updated_at)
            VALUES (p_tenant, (o ->> 'webhook_id')::uuid, o ->> 'url',
                    ARRAY(SELECT jsonb_array_elements_text(o -> 'event_types')), o ->> 'description', o ->> 'secret',
                    (o ->> 'at')::timestamptz, (o ->> 'at')::timestamptz);
        WHEN 'webhook_update' THEN
            UPDATE webhook_endpoints
               SET url = coalesce(o ->> 'url', url),
                   event_types = CASE WHEN o ? 'event_types'
                                      THEN ARRAY(SELECT jsonb_array_elements_text(o -> 'event_types'))
                                      ELSE event_types END,
                   description = CASE WHEN o ? 'description' THEN o ->> 'description' ELSE description END,
                   updated_at = (o ->> 'at')::timestamptz
             WHERE tenant_id = p_tenant AND webhook_id = (o ->> 'webhook_id')::uuid;
        WHEN 'webhook_delete' THEN
            UPDATE webhook_endpoints SET deleted = true, updated_at = (o ->> 'at')::timestamptz
             WHERE tenant_id = p_tenant AND webhook_id = (o ->> 'webhook_id')::uuid;
        WHEN 'webhook_rotate' THEN
            UPDATE webhook_endpoints
               SET previous_secret = secret, previous_valid_until = (o ->> 'previous_valid_until')::timestamptz,
                   secret = o ->> 'secret', updated_at = (o ->> 'at')::timestamptz
             WHERE tenant_id = p_tenant AND webhook_id = (o ->> 'webhook_id')::uuid;
        ELSE
            RAISE EXCEPTION 'unknown inline operation %', o ->> 'op';
        END CASE;
    END LOOP;
    IF p_seats <> 0 OR p_projects <> 0 THEN
        UPDATE tenants t SET seats_used = t.seats_used + p_seats, active_projects = t.active_projects + p_projects
         WHERE t.tenant_id = p_tenant;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tenant % has no control-plane row', p_tenant USING ERRCODE = 'KL002';
        END IF;
    END IF;
END
$$;

DROP FUNCTION keel_append(uuid, jsonb, timestamptz, text[], uuid[], bigint[], uuid[], text[], integer[], jsonb[], bytea[],
                          bytea[], integer, integer, text, text, text, uuid[], bigint[], uuid[], uuid, text, integer, jsonb);

-- An append in one call, guarded by what the command read when it read in an earlier
-- transaction (p_status and what follows it; all NULL inside a transaction that holds its locks
-- already): the tenant row's status and plan (share-locked until the commit, or locked for update when
-- the counters move, so a suspension or erasure waits for it and one that committed first is
-- seen), the caller's role, the other streams it read (still at their versions) and the members
-- it named (still active), and the usage months it added to (still within p_month_limit). A guard that no longer holds raises SQLSTATE KL001 and nothing is
-- written: the command is decided again on fresh state. The stream versions themselves are
-- guarded by the unique (tenant, stream, version), as for every append. Events arrive hashed
-- (store::hash, the one implementation `keel audit verify` also runs) and sealed, with the data
-- keys made for new members or endpoints. Then, in the
-- same transaction: the inline tables (keel_inline), the snapshot when one is due, and the
-- idempotency key with the answer (its `position` set to the last event's): a key that another
-- request completed meanwhile is KL001 too, and the retry answers that request's response.
CREATE FUNCTION keel_append(
    p_tenant uuid,
    p_metadata jsonb,
    p_recorded_at timestamptz,
    p_stream_types text[],
    p_stream_ids uuid[],
    p_versions bigint[],
    p_event_ids uuid[],
    p_event_types text[],
    p_schema_versions integer[],
    p_payloads jsonb[],
    p_prev_hashes bytea[],
    p_hashes bytea[],
    p_seats integer,
    p_projects integer,
    p_inline jsonb,
    p_status text,
    p_user text,
    p_role text,
    p_deps uuid[],
    p_dep_versions bigint[],
    p_members uuid[],
    p_snap_stream uuid,
    p_snap_type text,
    p_snap_state_version integer,
    p_snap_state jsonb,
    p_key text,
    p_request_hash bytea,
    p_key_status integer,
    p_key_response jsonb,
    p_key_retention_hours integer,
    p_key_owners uuid[],
    p_wrapped_keys bytea[],
    p_master_key_id text,
    p_plan text,
    p_month_limit bigint
) RETURNS TABLE ("position" bigint, xid text)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
DECLARE
    v_status text;
    v_plan text;
    v_position bigint;
    v_xid text;
    v_snap_version bigint;
    v_snap_hash bytea;
    v_snap_position bigint;
    v_response jsonb := p_key_response;
BEGIN
    PERFORM set_config('keel.tenant_id', p_tenant::text, true);
    IF p_status IS NOT NULL THEN
        -- Locked for update when the counters move below: share-then-update would deadlock.
        IF p_seats <> 0 OR p_projects <> 0 THEN
            SELECT t.status, t.plan INTO v_status, v_plan FROM tenants t WHERE t.tenant_id = p_tenant FOR UPDATE;
        ELSE
            SELECT t.status, t.plan INTO v_status, v_plan FROM tenants t WHERE t.tenant_id = p_tenant FOR SHARE;
        END IF;
        IF v_status IS DISTINCT FROM p_status OR (p_plan IS NOT NULL AND v_plan IS DISTINCT FROM p_plan) THEN
            RAISE EXCEPTION 'the tenant changed since the command read it' USING ERRCODE = 'KL001';
        END IF;
    END IF;
    -- Each check runs a statement only when there is something to check: an IF on parameters
    -- alone is evaluated without one. Each runs after the tenant row's lock is held, so it sees
    -- what committed before (a member removal holds that row's update lock).
    IF p_user IS NOT NULL THEN
        IF NOT EXISTS (
            SELECT 1 FROM memberships m
             WHERE m.tenant_id = p_tenant AND m.user_id = p_user AND m.status = 'active' AND m.role = p_role) THEN
            RAISE EXCEPTION 'the caller''s membership changed since the command read it' USING ERRCODE = 'KL001';
        END IF;
    END IF;
    IF coalesce(cardinality(p_deps), 0) > 0 THEN
        IF EXISTS (
            SELECT 1 FROM unnest(p_deps, p_dep_versions) AS d(s, v)
             WHERE EXISTS (SELECT 1 FROM events e
                            WHERE e.tenant_id = p_tenant AND e.stream_id = d.s AND e.stream_version > d.v)) THEN
            RAISE EXCEPTION 'a stream the command read has moved' USING ERRCODE = 'KL001';
        END IF;
    END IF;
    IF coalesce(cardinality(p_members), 0) > 0 THEN
        IF EXISTS (
            SELECT 1 FROM unnest(p_members) AS w(m)
             WHERE NOT EXISTS (SELECT 1 FROM memberships m
                                WHERE m.tenant_id = p_tenant AND m.member_id = w.m AND m.status = 'active')) THEN
            RAISE EXCEPTION 'a member the command named is no longer active' USING ERRCODE = 'KL001';
        END IF;
    END IF;

    -- The data keys made for new members or endpoints, whose fields the events carry sealed.
    IF coalesce(cardinality(p_key_owners), 0) > 0 THEN
        INSERT INTO member_keys (tenant_id, member_id, wrapped_key, master_key_id)
        SELECT p_tenant, o, w, p_master_key_id FROM unnest(p_key_owners, p_wrapped_keys) AS n(o, w);
    END IF;

    -- One row at a time, in the order given (an append is one event or a few): measured
    -- cheaper than one INSERT from UNNEST whose positions are gathered by a second query.
    FOR i IN 1 .. coalesce(cardinality(p_event_ids), 0) LOOP
        INSERT INTO events (tenant_id, stream_type, stream_id, stream_version, event_id, event_type,
                            schema_version, payload, metadata, recorded_at, prev_hash, hash)
        VALUES (p_tenant, p_stream_types[i], p_stream_ids[i], p_versions[i], p_event_ids[i], p_event_types[i],
                p_schema_versions[i], p_payloads[i], p_metadata, p_recorded_at, p_prev_hashes[i], p_hashes[i])
        RETURNING events.position, events.transaction_id::text INTO v_position, v_xid;
        IF p_stream_ids[i] = p_snap_stream THEN
            v_snap_version := p_versions[i];
            v_snap_position := v_position;
            v_snap_hash := p_hashes[i];
        END IF;
        "position" := v_position;
        xid := v_xid;
        RETURN NEXT;
    END LOOP;

    -- The inline tables and the tenant's counters (store::inline), in the same transaction.
    IF p_inline IS NOT NULL OR p_seats <> 0 OR p_projects <> 0 THEN
        PERFORM keel_inline(p_tenant, p_inline, p_seats, p_projects);
    END IF;
    -- Usage decided on months' units read earlier: each month it added to must still be within
    -- the plan's limit now that its counter is locked and moved.
    IF p_month_limit IS NOT NULL THEN
        IF EXISTS (
            SELECT 1 FROM usage_counters u
             WHERE u.tenant_id = p_tenant AND u.units > p_month_limit
               AND u.month IN (SELECT (m ->> 'month')::date
                                 FROM jsonb_array_elements(coalesce(p_inline, '[]'::jsonb)) AS o,
                                      jsonb_array_elements(o -> 'months') AS m
                                WHERE o ->> 'op' = 'usage')) THEN
            RAISE EXCEPTION 'a usage month moved past its limit since the command read it' USING ERRCODE = 'KL001';
        END IF;
    END IF;

    IF v_snap_version IS NOT NULL THEN
        INSERT INTO snapshots (tenant_id, stream_id, stream_type, state_version, version, last_xid, last_position,
                               last_hash, state)
        VALUES (p_tenant, p_snap_stream, p_snap_type, p_snap_state_version, v_snap_version, v_xid::xid8,
                v_snap_position, v_snap_hash, p_snap_state)
        ON CONFLICT ON CONSTRAINT snapshots_pkey DO UPDATE
           SET stream_type = EXCLUDED.stream_type, state_version = EXCLUDED.state_version, version = EXCLUDED.version,
               last_xid = EXCLUDED.last_xid, last_position = EXCLUDED.last_position, last_hash = EXCLUDED.last_hash,
               state = EXCLUDED.state, taken_at = now()
         WHERE snapshots.version < EXCLUDED.version OR snapshots.state_version <> EXCLUDED.state_version;
    END IF;

    IF p_key IS NOT NULL THEN
        IF v_position IS NOT NULL THEN
            -- The answer's position is the last event's (LogPosition's "xid.position").
            v_response := jsonb_set(v_response, '{position}', to_jsonb(v_xid || '.' || v_position));
        END IF;
        -- Claimed by this transaction's read (status not yet set), new, or past its retention.
        INSERT INTO idempotency_keys AS k (tenant_id, key, request_hash, status, response)
        VALUES (p_tenant, p_key, p_request_hash, p_key_status, v_response)
        ON CONFLICT (tenant_id, key) DO UPDATE
           SET request_hash = EXCLUDED.request_hash, status = EXCLUDED.status, response = EXCLUDED.response,
               created_at = CASE WHEN k.status IS NULL THEN k.created_at ELSE now() END
         WHERE (k.status IS NULL AND k.request_hash = EXCLUDED.request_hash)
            OR k.created_at < now() - make_interval(hours => p_key_retention_hours);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the idempotency key was used meanwhile' USING ERRCODE = 'KL001';
        END IF;
    END IF;
END
$$;

DROP FUNCTION keel_command_read(uuid, text, uuid[], text[], integer[], text, text, integer, uuid[]);

-- What a command decides on, in one call. With p_in_tx (inside the command's transaction): the
-- tenant row is locked first (p_lock 'update' or 'share'), the idempotency key is claimed, and
-- the usage months' counters are created and locked; without it (the two-call path, its own
-- transaction) nothing is locked or written and the key is only looked up. Then the caller's role
-- and the tenant row; the key's row when it is held by an earlier request (and then nothing else:
-- the answer is known); each stream (its usable snapshot, then the events after it); a stream
-- named by a field of the first stream's first event (a task's project); the data keys of the
-- streams read; the members named; the
-- active owners and the endpoints, when asked; the months' units; the record ids already
-- recorded, and when all were, the batch that recorded them. Rows are told apart by `kind`.
CREATE FUNCTION keel_command_read(
    p_tenant uuid,
    p_user text,
    p_streams uuid[],
    p_stream_types text[],
    p_state_versions integer[],
    p_follow_field text,
    p_follow_type text,
    p_follow_state_version integer,
    p_members uuid[],
    p_in_tx boolean,
    p_lock text,
    p_key text,
    p_request_hash bytea,
    p_key_retention_hours integer,
    p_owners boolean,
    p_endpoints boolean,
    p_months date[],
    p_usage_ids text[]
) RETURNS TABLE (
    kind text,
    backend_pid integer,
    role text, t_name text, t_slug text, t_plan text, t_status text, t_active_projects integer, t_seats_used integer,
    snap_stream uuid, snap_version bigint, snap_xid text, snap_position bigint, snap_hash bytea, snap_state jsonb,
    "position" bigint, xid text, tenant_id uuid, stream_type text, stream_id uuid, stream_version bigint,
    event_id uuid, event_type text, schema_version integer, payload jsonb, metadata jsonb,
    recorded_at timestamptz, prev_hash bytea, hash bytea,
    member_id uuid, m_role text, m_status text,
    x_text text, x_num bigint, x_date date, x_json jsonb, x_bytes bytea
)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
DECLARE
    v_streams uuid[] := p_streams;
    v_types text[] := p_stream_types;
    v_versions integer[] := p_state_versions;
    v_follow uuid;
    v_claimed text;
    v_keyed uuid[];
    i integer;
BEGIN
    PERFORM set_config('keel.tenant_id', p_tenant::text, true);
    IF p_in_tx AND p_lock = 'update' THEN
        PERFORM 1 FROM tenants t WHERE t.tenant_id = p_tenant FOR UPDATE;
    ELSIF p_in_tx AND p_lock = 'share' THEN
        PERFORM 1 FROM tenants t WHERE t.tenant_id = p_tenant FOR SHARE;
    END IF;
    RETURN QUERY
        SELECT 'access'::text, pg_backend_pid(), m.role, t.name, t.slug, t.plan, t.status, t.active_projects, t.seats_used,
               NULL::uuid, NULL::bigint, NULL::text, NULL::bigint, NULL::bytea, NULL::jsonb,
               NULL::bigint, NULL::text, NULL::uuid, NULL::text, NULL::uuid, NULL::bigint,
               NULL::uuid, NULL::text, NULL::integer, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::bytea, NULL::bytea,
               NULL::uuid, NULL::text, NULL::text,
               NULL::text, NULL::bigint, NULL::date, NULL::jsonb, NULL::bytea
          FROM (SELECT 1) AS one
          LEFT JOIN tenants t ON t.tenant_id = p_tenant
          LEFT JOIN memberships m ON m.tenant_id = p_tenant AND m.user_id = p_user AND m.status = 'active';

    -- The single-row kinds below are returned through the output columns (RETURN NEXT).
    IF p_key IS NOT NULL THEN
        IF p_in_tx THEN
            -- A concurrent holder of the key makes this wait until it commits (then this is a
            -- replay) or rolls back (then this holds the key).
            INSERT INTO idempotency_keys AS k (tenant_id, key, request_hash) VALUES (p_tenant, p_key, p_request_hash)
            ON CONFLICT (tenant_id, key) DO UPDATE
                SET request_hash = EXCLUDED.request_hash, status = NULL, response = NULL, created_at = now()
                WHERE k.created_at < now() - make_interval(hours => p_key_retention_hours)
            RETURNING pg_current_xact_id()::text INTO v_claimed;
        END IF;
        IF v_claimed IS NOT NULL THEN
            kind := 'key'; x_text := v_claimed;
            RETURN NEXT;
            x_text := NULL;
        ELSE
            SELECT 'key', k.request_hash, k.status, k.response INTO kind, x_bytes, x_num, x_json
              FROM idempotency_keys k
             WHERE k.tenant_id = p_tenant AND k.key = p_key
               AND k.created_at >= now() - make_interval(hours => p_key_retention_hours);
            IF FOUND THEN
                RETURN NEXT;
                RETURN;
            END IF;
            x_bytes := NULL; x_num := NULL; x_json := NULL;
        END IF;
    END IF;

    IF p_follow_field IS NOT NULL AND cardinality(p_streams) > 0 THEN
        SELECT (e.payload ->> p_follow_field)::uuid INTO v_follow
          FROM events e WHERE e.tenant_id = p_tenant AND e.stream_id = p_streams[1] AND e.stream_version = 1;
        IF v_follow IS NOT NULL THEN
            v_streams := v_streams || v_follow;
            v_types := v_types || p_follow_type;
            v_versions := v_versions || p_follow_state_version;
        END IF;
    END IF;
    -- Per stream one statement: its usable snapshot (columns snap_*, repeated on each row) and
    -- the events after it (one row each; one row with no event when there are none).
    FOR i IN 1 .. coalesce(cardinality(v_streams), 0) LOOP
        RETURN QUERY
            SELECT 'stream'::text, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                   NULL::integer, NULL::integer,
                   v_streams[i], s.version, s.last_xid::text, s.last_position, s.last_hash, s.state,
                   e.position, e.transaction_id::text, e.tenant_id, e.stream_type, e.stream_id, e.stream_version,
                   e.event_id, e.event_type, e.schema_version, e.payload, e.metadata, e.recorded_at, e.prev_hash, e.hash,
                   NULL::uuid, NULL::text, NULL::text,
                   NULL::text, NULL::bigint, NULL::date, NULL::jsonb, NULL::bytea
              FROM (SELECT 1) AS one
              LEFT JOIN snapshots s
                ON s.tenant_id = p_tenant AND s.stream_id = v_streams[i] AND s.stream_type = v_types[i]
               AND s.state_version = v_versions[i]
              LEFT JOIN LATERAL (SELECT * FROM events ev
                                  WHERE ev.tenant_id = p_tenant AND ev.stream_id = v_streams[i]
                                    AND ev.stream_version > coalesce(s.version, 0)) AS e ON true
             ORDER BY e.stream_version;
    END LOOP;
    -- The data keys of the member and endpoint streams read (their sealed fields open with them);
    -- other streams have none, and a task command runs no statement for them.
    v_keyed := ARRAY(SELECT x.s FROM unnest(v_streams, v_types) AS x(s, t) WHERE x.t IN ('member', 'webhook'));
    IF cardinality(v_keyed) > 0 THEN
        RETURN QUERY
            SELECT 'datakey'::text, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                   NULL::integer, NULL::integer,
                   NULL::uuid, NULL::bigint, NULL::text, NULL::bigint, NULL::bytea, NULL::jsonb,
                   NULL::bigint, NULL::text, NULL::uuid, NULL::text, NULL::uuid, NULL::bigint,
                   NULL::uuid, NULL::text, NULL::integer, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::bytea,
                   NULL::bytea, k.member_id, NULL::text, NULL::text,
                   NULL::text, NULL::bigint, NULL::date, NULL::jsonb, k.wrapped_key
              FROM member_keys k WHERE k.tenant_id = p_tenant AND k.member_id = ANY (v_keyed);
    END IF;
    IF coalesce(cardinality(p_members), 0) > 0 THEN
        RETURN QUERY
            SELECT 'member'::text, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                   NULL::integer, NULL::integer,
                   NULL::uuid, NULL::bigint, NULL::text, NULL::bigint, NULL::bytea, NULL::jsonb,
                   NULL::bigint, NULL::text, NULL::uuid, NULL::text, NULL::uuid, NULL::bigint,
                   NULL::uuid, NULL::text, NULL::integer, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::bytea,
                   NULL::bytea, m.member_id, m.role, m.status,
                   NULL::text, NULL::bigint, NULL::date, NULL::jsonb, NULL::bytea
              FROM memberships m
             WHERE m.tenant_id = p_tenant AND m.member_id = ANY (p_members);
    END IF;
    IF p_owners THEN
        kind := 'owners';
        SELECT count(*) INTO x_num FROM memberships m
         WHERE m.tenant_id = p_tenant AND m.role = 'owner' AND m.status = 'active';
        RETURN NEXT;
        x_num := NULL;
    END IF;
    IF p_endpoints THEN
        kind := 'endpoints';
        SELECT count(*) INTO x_num FROM webhook_endpoints w WHERE w.tenant_id = p_tenant AND NOT w.deleted;
        RETURN NEXT;
        x_num := NULL;
    END IF;
    IF coalesce(cardinality(p_months), 0) > 0 THEN
        IF p_in_tx THEN
            -- Missing rows are created first so that there is something to lock; sorted order
            -- avoids deadlocks between calls that touch the same months.
            INSERT INTO usage_counters (tenant_id, month) SELECT p_tenant, m FROM unnest(p_months) AS m
                ON CONFLICT (tenant_id, month) DO NOTHING;
            PERFORM 1 FROM usage_counters u
              WHERE u.tenant_id = p_tenant AND u.month = ANY (p_months) ORDER BY u.month FOR UPDATE;
        END IF;
        RETURN QUERY
            SELECT 'month'::text, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                   NULL::integer, NULL::integer,
                   NULL::uuid, NULL::bigint, NULL::text, NULL::bigint, NULL::bytea, NULL::jsonb,
                   NULL::bigint, NULL::text, NULL::uuid, NULL::text, NULL::uuid, NULL::bigint,
                   NULL::uuid, NULL::text, NULL::integer, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::bytea,
                   NULL::bytea, NULL::uuid, NULL::text, NULL::text,
                   NULL::text, u.units, u.month, NULL::jsonb, NULL::bytea
              FROM usage_counters u WHERE u.tenant_id = p_tenant AND u.month = ANY (p_months);
    END IF;
    IF coalesce(cardinality(p_usage_ids), 0) > 0 THEN
        -- One primary-key probe per id, whatever the table's statistics say.
        RETURN QUERY
            SELECT 'recorded'::text, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                   NULL::integer, NULL::integer,
                   NULL::uuid, NULL::bigint, NULL::text, NULL::bigint, NULL::bytea, NULL::jsonb,
                   NULL::bigint, NULL::text, NULL::uuid, NULL::text, NULL::uuid, NULL::bigint,
                   NULL::uuid, NULL::text, NULL::integer, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::bytea,
                   NULL::bytea, NULL::uuid, NULL::text, NULL::text,
                   x.record_id, NULL::bigint, NULL::date, NULL::jsonb, NULL::bytea
              FROM unnest(p_usage_ids) AS i(id),
                   LATERAL (SELECT r.record_id FROM usage_records r
                             WHERE r.tenant_id = p_tenant AND r.record_id = i.id LIMIT 1) AS x;
        -- Every record recorded before: the call changes nothing and answers with the batch that
        -- recorded them, the one whose last event comes last in the log.
        IF NOT EXISTS (SELECT 1 FROM unnest(p_usage_ids) AS i(id)
                        WHERE NOT EXISTS (SELECT 1 FROM usage_records r
                                           WHERE r.tenant_id = p_tenant AND r.record_id = i.id)) THEN
            SELECT 'recording', e.stream_id, e.stream_version, e.transaction_id::text, e.position
              INTO kind, stream_id, stream_version, xid, "position"
              FROM events e
             WHERE e.tenant_id = p_tenant
               AND e.stream_id IN (SELECT r.batch_id FROM usage_records r
                                    WHERE r.tenant_id = p_tenant AND r.record_id = ANY (p_usage_ids))
             ORDER BY e.transaction_id DESC, e.position DESC
             LIMIT 1;
            IF FOUND THEN
                RETURN NEXT;
            END IF;
        END IF;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION keel_inline(uuid, jsonb, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keel_inline(uuid, jsonb, integer, integer) TO keel_writer;
REVOKE ALL ON FUNCTION keel_command_read(uuid, text, uuid[], text[], integer[], text, text, integer, uuid[], boolean, text,
                                         text, bytea, integer, boolean, boolean, date[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keel_command_read(uuid, text, uuid[], text[], integer[], text, text, integer, uuid[], boolean,
                                            text, text, bytea, integer, boolean, boolean, date[], text[]) TO keel_writer;
REVOKE ALL ON FUNCTION keel_append(uuid, jsonb, timestamptz, text[], uuid[], bigint[], uuid[], text[], integer[], jsonb[],
                                   bytea[], bytea[], integer, integer, jsonb, text, text, text, uuid[], bigint[], uuid[],
                                   uuid, text, integer, jsonb, text, bytea, integer, jsonb, integer, uuid[], bytea[],
                                   text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keel_append(uuid, jsonb, timestamptz, text[], uuid[], bigint[], uuid[], text[], integer[],
                                      jsonb[], bytea[], bytea[], integer, integer, jsonb, text, text, text, uuid[], bigint[],
                                      uuid[], uuid, text, integer, jsonb, text, bytea, integer, jsonb, integer, uuid[],
                                      bytea[], text, text, bigint)
    TO keel_writer;
