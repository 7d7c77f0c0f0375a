-- Rebuilding a read model: a copy of its tables in keel_rebuild (same columns, indexes, RLS,
-- policies and grants) is filled from the log, then moved into public in one transaction.

CREATE SCHEMA keel_retired;

CREATE FUNCTION keel_prepare_rebuild(t text) RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    p record;
    g record;
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS keel_rebuild.%I', t);
    EXECUTE format('CREATE TABLE keel_rebuild.%I (LIKE public.%I INCLUDING ALL)', t, t);
    EXECUTE format('ALTER TABLE keel_rebuild.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE keel_rebuild.%I FORCE ROW LEVEL SECURITY', t);
    FOR p IN SELECT * FROM pg_policies WHERE schemaname = 'public' AND tablename = t LOOP
        EXECUTE format('CREATE POLICY %I ON keel_rebuild.%I AS %s FOR %s TO %s%s%s',
            p.policyname, t, p.permissive, p.cmd,
            (SELECT string_agg(quote_ident(r), ', ') FROM unnest(p.roles) r),
            CASE WHEN p.qual IS NOT NULL THEN ' USING (' || p.qual || ')' ELSE '' END,
            CASE WHEN p.with_check IS NOT NULL THEN ' WITH CHECK (' || p.with_check || ')' ELSE '' END);
    END LOOP;
    FOR g IN SELECT grantee, privilege_type FROM information_schema.role_table_grants
              WHERE table_schema = 'public' AND table_name = t AND grantee <> current_user LOOP
        EXECUTE format('GRANT %s ON keel_rebuild.%I TO %I', g.privilege_type, t, g.grantee);
    END LOOP;
END
$$;

-- Moves the rebuilt table into public and the old one out; readers see one or the other.
CREATE FUNCTION keel_swap_rebuilt(t text) RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS keel_retired.%I', t);
    EXECUTE format('ALTER TABLE public.%I SET SCHEMA keel_retired', t);
    EXECUTE format('ALTER TABLE keel_rebuild.%I SET SCHEMA public', t);
END
$$;
