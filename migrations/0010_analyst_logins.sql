-- Analyst logins bound to one tenant by the database (issue 12, point 13). Until now an analyst
-- chose its tenant with `SET keel.tenant_id`, a setting it controls, and so could read every
-- tenant. Now each login in keel_analyst is mapped to one tenant here, by the platform
-- (`keel analyst create|list|revoke`), and the analyst's policies follow the mapping of
-- session_user: the login that authenticated, which neither SET ROLE nor RESET ROLE changes and
-- which only a superuser may change (SET SESSION AUTHORIZATION).

CREATE TABLE analyst_logins (
    login       name        PRIMARY KEY,
    -- No foreign key to tenants: inline tables are rebuilt from the log by deleting and
    -- re-inserting a tenant's rows (store::inline::rebuild_tenant). `create` checks the tenant.
    tenant_id   uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE analyst_logins IS 'The tenant each analyst login (a LOGIN role in keel_analyst) may read; managed by keel analyst create|revoke.';
CREATE INDEX analyst_logins_tenant_idx ON analyst_logins (tenant_id);

-- Nobody but the owner (the DATABASE_URL role, which manages it) reads or writes the mapping:
-- no grants, and forced RLS with one policy for roles that have the owner's privileges (so
-- also after a change of owner), so that a grant made later by mistake opens nothing. Analysts
-- learn their own tenant only through keel_analyst_tenant(), which runs as the owner.
REVOKE ALL ON analyst_logins FROM PUBLIC;
ALTER TABLE analyst_logins ENABLE ROW LEVEL SECURITY;
ALTER TABLE analyst_logins FORCE ROW LEVEL SECURITY;
CREATE POLICY analyst_logins_owner ON analyst_logins
    USING (pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'public.analyst_logins'::regclass), 'USAGE'))
    WITH CHECK (pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'public.analyst_logins'::regclass), 'USAGE'));

-- The tenant of the login that opened this session, or NULL (no row matches) when it has none.
-- SECURITY DEFINER so that it reads the mapping for the analyst without the analyst reading it;
-- a fixed search_path and qualified names so that nothing an analyst creates (a temporary table
-- named analyst_logins) can stand in for it.
CREATE FUNCTION keel_analyst_tenant() RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenant_id FROM public.analyst_logins WHERE login = session_user $$;
REVOKE ALL ON FUNCTION keel_analyst_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keel_analyst_tenant() TO keel_analyst;

-- Every table keel_analyst can read (the reporting views are security_invoker, so these
-- policies apply beneath them too) gets two analyst policies:
--  * a permissive one that shows the mapped tenant's rows;
--  * a restrictive one that hides every other row, so the older permissive policy
--    `<table>_tenant` (for every role, on keel.tenant_id) no longer opens another tenant to an
--    analyst who sets keel.tenant_id. The service roles are not members of keel_analyst, so
--    their policies are unchanged.
-- `(SELECT keel_analyst_tenant())` is evaluated once per statement, not once per row.
DO $$
DECLARE
    r record;
BEGIN
    -- keel_rebuild and keel_retired too: a table being rebuilt now is swapped into public later.
    FOR r IN SELECT schemaname, tablename FROM pg_tables
              WHERE schemaname IN ('public', 'keel_rebuild', 'keel_retired')
                AND tablename IN ('rm_projects', 'rm_tasks', 'rm_members', 'rm_task_throughput',
                                  'rm_usage_daily', 'rm_usage_monthly', 'rm_tenants') LOOP
        EXECUTE format('CREATE POLICY %I ON %I.%I AS PERMISSIVE FOR SELECT TO keel_analyst
                            USING (tenant_id = (SELECT public.keel_analyst_tenant()))',
                       r.tablename || '_analyst', r.schemaname, r.tablename);
        EXECUTE format('CREATE POLICY %I ON %I.%I AS RESTRICTIVE FOR ALL TO keel_analyst
                            USING (tenant_id = (SELECT public.keel_analyst_tenant()))
                            WITH CHECK (false)',
                       r.tablename || '_analyst_only', r.schemaname, r.tablename);
    END LOOP;
END
$$;

COMMENT ON SCHEMA reporting IS 'Keel''s read models for analysts and BI tools. Column names are stable across releases. '
    'An analyst login (keel analyst create) sees only the tenant it was created for.';
