-- The `reporting` schema for analysts: stable views over the read tables, read by the
-- read-only role keel_analyst, which sees only the tenant set in its session.

DO $$
BEGIN
    CREATE ROLE keel_analyst NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

CREATE SCHEMA reporting;
COMMENT ON SCHEMA reporting IS 'Keel''s read models for analysts and BI tools. Column names are stable across releases. '
    'Set the tenant first: SET keel.tenant_id = ''<tenant uuid>''; without it every view is empty.';

-- (Re)creates every reporting view; a read-model rebuild calls it after swapping tables in.
CREATE FUNCTION keel_reporting_views() RETURNS void
    LANGUAGE plpgsql
AS $fn$
BEGIN
    CREATE OR REPLACE VIEW reporting.projects WITH (security_invoker = true) AS
        SELECT tenant_id, project_id, name, description, status, created_at, updated_at,
               tasks_todo, tasks_in_progress, tasks_done,
               tasks_todo + tasks_in_progress + tasks_done AS tasks_total,
               CASE WHEN tasks_todo + tasks_in_progress + tasks_done = 0 THEN 0.0
                    ELSE tasks_done::numeric / (tasks_todo + tasks_in_progress + tasks_done) END AS progress
          FROM public.rm_projects;
    COMMENT ON VIEW reporting.projects IS 'One row per project, with task counts by status and progress (0 to 1).';
    COMMENT ON COLUMN reporting.projects.status IS 'active or archived';

    CREATE OR REPLACE VIEW reporting.tasks WITH (security_invoker = true) AS
        SELECT tenant_id, task_id, project_id, title, description, status, priority, assignee AS assignee_member_id,
               due_date, created_at, updated_at, completed_at
          FROM public.rm_tasks;
    COMMENT ON VIEW reporting.tasks IS 'One row per task.';
    COMMENT ON COLUMN reporting.tasks.status IS 'todo, in_progress or done';
    COMMENT ON COLUMN reporting.tasks.priority IS 'low, medium, high or urgent';
    COMMENT ON COLUMN reporting.tasks.completed_at IS 'When it last moved to done; null unless done';

    CREATE OR REPLACE VIEW reporting.members WITH (security_invoker = true) AS
        SELECT tenant_id, member_id, user_id, name, email, role, status, joined_at
          FROM public.rm_members;
    COMMENT ON VIEW reporting.members IS 'One row per member (removed members included, with status removed).';

    CREATE OR REPLACE VIEW reporting.task_throughput_daily WITH (security_invoker = true) AS
        SELECT tenant_id, day, created AS tasks_created, completed AS tasks_completed
          FROM public.rm_task_throughput;
    COMMENT ON VIEW reporting.task_throughput_daily IS 'Tasks created and completed per UTC day; a reopened task no longer counts as completed.';

    CREATE OR REPLACE VIEW reporting.usage_daily WITH (security_invoker = true) AS
        SELECT tenant_id, day, metric, units FROM public.rm_usage_daily;
    COMMENT ON VIEW reporting.usage_daily IS 'Usage units per metric per UTC day.';

    CREATE OR REPLACE VIEW reporting.usage_monthly WITH (security_invoker = true) AS
        SELECT u.tenant_id, u.month, u.units, t.plan,
               CASE t.plan WHEN 'free' THEN 10000 WHEN 'team' THEN 1000000 END::bigint AS quota
          FROM public.rm_usage_monthly u LEFT JOIN public.rm_tenants t USING (tenant_id);
    COMMENT ON VIEW reporting.usage_monthly IS 'Usage units per calendar month (all metrics) against the plan''s quota (null: unlimited).';

    CREATE OR REPLACE VIEW reporting.tenant WITH (security_invoker = true) AS
        SELECT tenant_id, name, slug, plan, status, seats_used, active_projects, created_at FROM public.rm_tenants;
    COMMENT ON VIEW reporting.tenant IS 'The tenant itself: plan, status, seats and active projects.';
END
$fn$;

SELECT keel_reporting_views();

GRANT USAGE ON SCHEMA reporting TO keel_analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO keel_analyst;
-- security_invoker views check the analyst's own rights and RLS on the tables beneath.
GRANT SELECT ON rm_projects, rm_tasks, rm_members, rm_task_throughput, rm_usage_daily, rm_usage_monthly, rm_tenants
    TO keel_analyst;
