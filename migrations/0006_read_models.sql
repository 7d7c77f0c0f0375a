-- Read models (SPEC §7), each written by its projection and shaped for the GraphQL filters and
-- orderings (SPEC §6b).

CREATE TABLE rm_tasks (
    tenant_id      uuid        NOT NULL,
    task_id        uuid        NOT NULL,
    project_id     uuid        NOT NULL,
    title          text        NOT NULL,
    description    text,
    status         text        NOT NULL,
    priority       text        NOT NULL,
    -- low 1 .. urgent 4, for ordering by priority.
    priority_rank  smallint    NOT NULL,
    assignee       uuid,
    due_date       date,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    completed_at   timestamptz,
    version        bigint      NOT NULL,
    PRIMARY KEY (tenant_id, task_id)
);
CREATE INDEX rm_tasks_created_idx ON rm_tasks (tenant_id, created_at, task_id);
CREATE INDEX rm_tasks_project_idx ON rm_tasks (tenant_id, project_id, created_at, task_id);
CREATE INDEX rm_tasks_status_due_idx ON rm_tasks (tenant_id, status, due_date, task_id);
CREATE INDEX rm_tasks_due_idx ON rm_tasks (tenant_id, due_date, task_id);
CREATE INDEX rm_tasks_priority_idx ON rm_tasks (tenant_id, priority_rank DESC, task_id);
CREATE INDEX rm_tasks_assignee_idx ON rm_tasks (tenant_id, assignee, due_date, task_id);

CREATE TABLE rm_members (
    tenant_id  uuid        NOT NULL,
    member_id  uuid        NOT NULL,
    user_id    text        NOT NULL,
    email      text        NOT NULL,
    name       text        NOT NULL,
    role       text        NOT NULL,
    status     text        NOT NULL,
    joined_at  timestamptz NOT NULL,
    version    bigint      NOT NULL,
    PRIMARY KEY (tenant_id, member_id)
);
CREATE INDEX rm_members_joined_idx ON rm_members (tenant_id, joined_at, member_id);
CREATE INDEX rm_members_role_idx ON rm_members (tenant_id, role, joined_at, member_id);

-- Tasks created and completed per day (UTC); a reopened task no longer counts as completed.
CREATE TABLE rm_task_throughput (
    tenant_id  uuid    NOT NULL,
    day        date    NOT NULL,
    created    integer NOT NULL DEFAULT 0,
    completed  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);
-- The day each task currently counts as completed on (the throughput projection's own state).
CREATE TABLE rm_task_completions (
    tenant_id  uuid NOT NULL,
    task_id    uuid NOT NULL,
    day        date NOT NULL,
    PRIMARY KEY (tenant_id, task_id)
);

CREATE TABLE rm_usage_daily (
    tenant_id  uuid   NOT NULL,
    metric     text   NOT NULL,
    day        date   NOT NULL,
    units      bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, metric)
);
CREATE INDEX rm_usage_daily_metric_idx ON rm_usage_daily (tenant_id, metric, day);

CREATE TABLE rm_usage_monthly (
    tenant_id  uuid   NOT NULL,
    month      date   NOT NULL,
    units      bigint NOT NULL,
    PRIMARY KEY (tenant_id, month)
);

-- The platform's view of every tenant.
CREATE TABLE rm_tenants (
    tenant_id        uuid PRIMARY KEY,
    name             text        NOT NULL,
    slug             text        NOT NULL,
    plan             text        NOT NULL,
    status           text        NOT NULL,
    seats_used       integer     NOT NULL DEFAULT 0,
    active_projects  integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX rm_tenants_created_idx ON rm_tenants (created_at, tenant_id);
CREATE INDEX rm_tenants_plan_idx ON rm_tenants (plan);

-- Same protection as rm_projects for every read table; the platform view also opens to a
-- transaction that says it serves a platform operator (set by the query service only for
-- platform tokens).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['rm_tasks', 'rm_members', 'rm_task_throughput', 'rm_task_completions',
                             'rm_usage_daily', 'rm_usage_monthly', 'rm_tenants'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I USING (tenant_id = keel_current_tenant()) WITH CHECK (tenant_id = keel_current_tenant())',
                       t || '_tenant', t);
        EXECUTE format('CREATE POLICY %I ON %I TO keel_projector USING (true) WITH CHECK (true)', t || '_projector', t);
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO keel_projector', t);
        EXECUTE format('GRANT SELECT ON %I TO keel_reader', t);
    END LOOP;
END
$$;
CREATE POLICY rm_tenants_platform ON rm_tenants FOR SELECT TO keel_reader
    USING (current_setting('keel.platform', true) = 'on');
