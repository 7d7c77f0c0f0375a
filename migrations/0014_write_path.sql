-- The write path in two round trips (docs/performance.md "The write path"): a command reads what
-- it decides on with one call, and appends with another, each its own transaction. Both run as
-- the caller (SECURITY INVOKER), so Row-Level Security and the service roles hold as for any
-- statement; the tenant setting is made inside, before anything is read or written.

-- What a command decides on, in one call: the caller's role and the tenant row, then each stream
-- (its usable snapshot, then the events after it), then a stream named by a field of the first
-- stream's first event (a task's project), then the members named. Rows are told apart by `kind`.
CREATE FUNCTION keel_command_read(
    p_tenant uuid,
    p_user text,
    p_streams uuid[],
    p_stream_types text[],
    p_state_versions integer[],
    p_follow_field text,
    p_follow_type text,
    p_follow_state_version integer,
    p_members uuid[]
) RETURNS TABLE (
    kind text,
    backend_pid integer,
    role text, t_name text, t_slug text, t_plan text, t_status text, t_active_projects integer, t_seats_used integer,
    snap_stream uuid, snap_version bigint, snap_xid text, snap_position bigint, snap_hash bytea, snap_state jsonb,
    "position" bigint, xid text, tenant_id uuid, stream_type text, stream_id uuid, stream_version bigint,
    event_id uuid, event_type text, schema_version integer, payload jsonb, metadata jsonb,
    recorded_at timestamptz, prev_hash bytea, hash bytea,
    member_id uuid, m_role text, m_status text
)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
DECLARE
    v_streams uuid[] := p_streams;
    v_types text[] := p_stream_types;
    v_versions integer[] := p_state_versions;
    v_follow uuid;
    i integer;
BEGIN
    PERFORM set_config('keel.tenant_id', p_tenant::text, true);
    RETURN QUERY
        SELECT 'access'::text, pg_backend_pid(), m.role, t.name, t.slug, t.plan, t.status, t.active_projects, t.seats_used,
               NULL::uuid, NULL::bigint, NULL::text, NULL::bigint, NULL::bytea, NULL::jsonb,
               NULL::bigint, NULL::text, NULL::uuid, NULL::text, NULL::uuid, NULL::bigint,
               NULL::uuid, NULL::text, NULL::integer, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::bytea, NULL::bytea,
               NULL::uuid, NULL::text, NULL::text
          FROM (SELECT 1) AS one
          LEFT JOIN tenants t ON t.tenant_id = p_tenant
          LEFT JOIN memberships m ON m.tenant_id = p_tenant AND m.user_id = p_user AND m.status = 'active';
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
                   NULL::uuid, NULL::text, NULL::text
              FROM (SELECT 1) AS one
              LEFT JOIN snapshots s
                ON s.tenant_id = p_tenant AND s.stream_id = v_streams[i] AND s.stream_type = v_types[i]
               AND s.state_version = v_versions[i]
              LEFT JOIN LATERAL (SELECT * FROM events ev
                                  WHERE ev.tenant_id = p_tenant AND ev.stream_id = v_streams[i]
                                    AND ev.stream_version > coalesce(s.version, 0)) AS e ON true
             ORDER BY e.stream_version;
    END LOOP;
    IF coalesce(cardinality(p_members), 0) > 0 THEN
        RETURN QUERY
            SELECT 'member'::text, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                   NULL::integer, NULL::integer,
                   NULL::uuid, NULL::bigint, NULL::text, NULL::bigint, NULL::bytea, NULL::jsonb,
                   NULL::bigint, NULL::text, NULL::uuid, NULL::text, NULL::uuid, NULL::bigint,
                   NULL::uuid, NULL::text, NULL::integer, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::bytea,
                   NULL::bytea, m.member_id, m.role, m.status
              FROM memberships m
             WHERE m.tenant_id = p_tenant AND m.member_id = ANY (p_members);
    END IF;
END
$$;

-- An append in one call, its own transaction, guarded by what the command read: the tenant row's
-- status (share-locked until the commit, so a suspension or erasure waits for it, and one that
-- committed first is seen), the caller's role, the other streams it read (still at their
-- versions), and the members it named (still active). A guard that no longer holds raises
-- SQLSTATE KL001 and nothing is written: the command is decided again on fresh state. The stream
-- versions themselves are guarded by the unique (tenant, stream, version), as for every append.
-- Events arrive hashed (store::hash, the one implementation `keel audit verify` also runs); a
-- snapshot, when one is due, is stored in the same transaction.
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
    p_status text,
    p_user text,
    p_role text,
    p_deps uuid[],
    p_dep_versions bigint[],
    p_members uuid[],
    p_snap_stream uuid,
    p_snap_type text,
    p_snap_state_version integer,
    p_snap_state jsonb
) RETURNS TABLE ("position" bigint, xid text)
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_column
DECLARE
    v_status text;
    v_position bigint;
    v_xid text;
    v_snap_version bigint;
    v_snap_hash bytea;
    v_snap_position bigint;
BEGIN
    PERFORM set_config('keel.tenant_id', p_tenant::text, true);
    IF p_status IS NOT NULL THEN
        -- Locked for update when the counters move below: share-then-update would deadlock.
        IF p_seats <> 0 OR p_projects <> 0 THEN
            SELECT t.status INTO v_status FROM tenants t WHERE t.tenant_id = p_tenant FOR UPDATE;
        ELSE
            SELECT t.status INTO v_status FROM tenants t WHERE t.tenant_id = p_tenant FOR SHARE;
        END IF;
        IF v_status IS DISTINCT FROM p_status THEN
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

    -- One row at a time, in the order given (an append is one event or a few): measured
    -- cheaper than one INSERT from UNNEST whose positions are gathered by a second query.
    FOR i IN 1 .. cardinality(p_event_ids) LOOP
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

    -- The tenant's counters (store::inline::counter_deltas), in the same transaction.
    IF p_seats <> 0 OR p_projects <> 0 THEN
        UPDATE tenants t SET seats_used = t.seats_used + p_seats, active_projects = t.active_projects + p_projects
         WHERE t.tenant_id = p_tenant;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tenant % has no control-plane row', p_tenant USING ERRCODE = 'KL002';
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
END
$$;

REVOKE ALL ON FUNCTION keel_command_read(uuid, text, uuid[], text[], integer[], text, text, integer, uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keel_command_read(uuid, text, uuid[], text[], integer[], text, text, integer, uuid[])
    TO keel_writer;
REVOKE ALL ON FUNCTION keel_append(uuid, jsonb, timestamptz, text[], uuid[], bigint[], uuid[], text[], integer[],
                                   jsonb[], bytea[], bytea[], integer, integer, text, text, text, uuid[], bigint[], uuid[], uuid, text,
                                   integer, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keel_append(uuid, jsonb, timestamptz, text[], uuid[], bigint[], uuid[], text[], integer[],
                                      jsonb[], bytea[], bytea[], integer, integer, text, text, text, uuid[], bigint[], uuid[], uuid,
                                      text, integer, jsonb) TO keel_writer;
