//! What the database itself enforces: immutability of the log, Row-Level Security on every
//! tenant table, service roles that cannot bypass it, and migrations that coexist.

use crate::helpers::{TestDb, drop_database, fresh_database};
use sqlx::{Connection, Executor, PgConnection, Row};

#[tokio::test]
async fn the_log_rejects_update_delete_and_truncate_even_for_a_superuser() {
    let db = TestDb::new().await;
    db.provision("immutable", "ada").await;

    // The service roles have no such privilege at all.
    for pool in [db.store.writer(), db.store.reader(), db.store.projector()] {
        for sql in ["UPDATE events SET event_type = 'X'", "DELETE FROM events", "TRUNCATE events"] {
            let err = pool.execute(sql).await.expect_err(sql);
            let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
            assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
        }
    }

    // A superuser has the privilege, and the trigger still refuses, even a statement that
    // matches no row.
    let mut su = db.superuser().await;
    for sql in [
        "UPDATE events SET event_type = 'X'",
        "UPDATE events SET payload = '{}' WHERE false",
        "DELETE FROM events",
        "DELETE FROM events WHERE false",
        "TRUNCATE events",
    ] {
        let err = su.execute(sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut su).await.unwrap();
    assert_eq!(n, 2, "nothing was changed");
}

#[tokio::test]
async fn every_tenant_table_has_rls_enabled_and_forced() {
    let db = TestDb::new().await;
    let mut su = db.superuser().await;
    let rows = sqlx::query(
        "SELECT c.relname::text AS name, c.relrowsecurity, c.relforcerowsecurity
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname = 'public'
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)",
    )
    .fetch_all(&mut su)
    .await
    .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get("name")).collect();
    for expected in ["events", "tenants", "memberships", "rm_projects"] {
        assert!(names.contains(&expected.to_owned()), "{expected} has tenant_id");
    }
    // Bridge tenancy's records of where each tenant's rows are (docs/tenancy.md) hold no
    // tenant's data — ids, database names, log positions — and are the platform's: the
    // directory is read across tenants to route them, the rest only by the move (the owner).
    let placement = ["tenant_placements", "tenant_moves", "tenants_departed", "tenant_arrivals", "imported_events"];
    for r in &rows {
        let (name, enabled, forced): (String, bool, bool) = (r.get(0), r.get(1), r.get(2));
        if placement.contains(&name.as_str()) {
            continue;
        }
        assert!(enabled && forced, "{name}: RLS enabled={enabled} forced={forced}");
    }
    // None of them is writable by a service role but the directory's insert at provisioning.
    let writable: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, grantee::text FROM information_schema.role_table_grants
          WHERE table_name = ANY ($1) AND grantee LIKE 'keel\\_%' AND privilege_type <> 'SELECT'",
    )
    .bind(placement)
    .fetch_all(&mut su)
    .await
    .unwrap();
    assert_eq!(writable, vec![("tenant_placements".to_owned(), "keel_writer".to_owned())], "{writable:?}");
}

#[tokio::test]
async fn a_query_with_no_tenant_set_returns_no_rows() {
    let db = TestDb::new().await;
    let a = db.provision("rls-a", "ada").await;
    let b = db.provision("rls-b", "bob").await;
    let mut su = db.superuser().await;
    sqlx::query(
        "INSERT INTO rm_projects (tenant_id, project_id, name, status, created_at, updated_at, version)
         VALUES ($1, gen_random_uuid(), 'A', 'active', now(), now(), 1), ($2, gen_random_uuid(), 'B', 'active', now(), now(), 1)",
    )
    .bind(a.0)
    .bind(b.0)
    .execute(&mut su)
    .await
    .unwrap();

    // Every tenant table gets a row for each tenant, then none is visible without a tenant.
    for t in [a, b] {
        sqlx::query("INSERT INTO usage_counters (tenant_id, month, units) VALUES ($1, '2026-11-01', 5)")
            .bind(t.0)
            .execute(&mut su)
            .await
            .unwrap();
        sqlx::query("INSERT INTO usage_records (tenant_id, record_id, batch_id) VALUES ($1, 'r', gen_random_uuid())")
            .bind(t.0)
            .execute(&mut su)
            .await
            .unwrap();
        sqlx::query("INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ($1, 'k', '\\x00')")
            .bind(t.0)
            .execute(&mut su)
            .await
            .unwrap();
    }
    let tables =
        ["events", "tenants", "memberships", "rm_projects", "usage_counters", "usage_records", "idempotency_keys"];
    for (role, pool) in [("writer", db.store.writer()), ("reader", db.store.reader())] {
        for t in tables {
            let sql = format!("SELECT count(*) FROM {t}");
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone())).fetch_one(pool).await.unwrap_or(-1);
            if n == -1 {
                continue; // this role has no SELECT on the table at all
            }
            assert_eq!(n, 0, "{role}: {sql} with no tenant set");
        }
    }

    // With a tenant set, exactly that tenant's rows.
    let mut tx = db.store.begin_read(a).await.unwrap();
    for t in ["events", "tenants", "memberships", "rm_projects", "usage_counters"] {
        let sql = format!("SELECT count(*) FILTER (WHERE tenant_id <> $1), count(*) FROM {t}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(a.0).fetch_one(tx.conn()).await.unwrap();
        let (foreign, all): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(foreign, 0, "{t}: no other tenant's rows");
        assert!(all > 0, "{t}: the tenant's own rows are visible");
    }

    // Writing a row for another tenant is refused by the policy's WITH CHECK.
    let mut tx = db.store.begin_write(a).await.unwrap();
    let err = sqlx::query("INSERT INTO memberships (tenant_id, member_id, user_id, role, status, joined_at) VALUES ($1, gen_random_uuid(), 'x', 'owner', 'active', now())")
        .bind(b.0)
        .execute(tx.conn())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
}

#[tokio::test]
async fn service_roles_are_not_superuser_owner_or_bypassrls() {
    let db = TestDb::new().await;
    for (expected, pool) in [
        ("keel_writer", db.store.writer()),
        ("keel_reader", db.store.reader()),
        ("keel_projector", db.store.projector()),
    ] {
        let row = sqlx::query(
            "SELECT current_user::text, r.rolsuper, r.rolbypassrls,
                    (SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user)
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        let (user, sup, bypass, owned): (String, bool, bool, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(user, expected);
        assert!(!sup && !bypass && owned == 0, "{user}: superuser={sup} bypassrls={bypass} owns={owned}");
    }
}

#[tokio::test]
async fn migrations_succeed_when_the_roles_exist_and_run_twice_as_a_no_op() {
    // Two more Keel databases on the same server, migrated at the same time: the roles exist
    // (other tests made them) or are being made concurrently.
    let (n1, u1) = fresh_database().await;
    let (n2, u2) = fresh_database().await;
    let (r1, r2) = tokio::join!(keel_store::migrate(&u1), keel_store::migrate(&u2));
    r1.expect("first database migrates");
    r2.expect("second database migrates");
    keel_store::migrate(&u1).await.expect("a second run is a no-op");
    let mut c = PgConnection::connect(&u1).await.unwrap();
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&mut c).await.unwrap();
    assert_eq!(n as usize, keel_store::MIGRATOR.iter().count());
    c.close().await.unwrap();
    drop_database(&n1);
    drop_database(&n2);
}
