//! The projector's writes to `rm_members`.

use crate::error::StoreError;
use crate::log::RecordedEvent;
use crate::read::Handled;
use keel_domain::Event;
use sqlx::PgConnection;

pub(super) async fn apply(
    conn: &mut PgConnection,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<Handled, StoreError> {
    let tenant = recorded.tenant_id.0;
    let v = recorded.stream_version;
    match event {
        Event::MemberInvited(e) => {
            sqlx::query(
                "INSERT INTO rm_members (tenant_id, member_id, user_id, email, name, role, status, joined_at, version)
                 VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8)
                 ON CONFLICT (tenant_id, member_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(e.member_id.0)
            .bind(e.user_id.as_str())
            .bind(e.email.as_str())
            .bind(e.name.as_str())
            .bind(e.role.as_str())
            .bind(e.at)
            .bind(v)
            .execute(conn)
            .await?;
        }
        Event::MemberRoleChanged(e) => {
            sqlx::query("UPDATE rm_members SET role = $3, version = $4 WHERE tenant_id = $1 AND member_id = $2 AND version < $4")
                .bind(tenant)
                .bind(e.member_id.0)
                .bind(e.to.as_str())
                .bind(v)
                .execute(conn)
                .await?;
        }
        Event::MemberErased(e) => {
            sqlx::query(
                "UPDATE rm_members SET status = 'erased', email = $3, name = $3, version = $4
                  WHERE tenant_id = $1 AND member_id = $2 AND version < $4",
            )
            .bind(tenant)
            .bind(e.member_id.0)
            .bind(crate::crypto::ERASED)
            .bind(v)
            .execute(conn)
            .await?;
        }
        Event::TenantErased(_) => crate::read::purge(conn, tenant, super::MODEL.tables).await?,
        Event::MemberRemoved(e) => {
            sqlx::query(
                "UPDATE rm_members SET status = 'removed', version = $3 WHERE tenant_id = $1 AND member_id = $2 AND version < $3",
            )
            .bind(tenant)
            .bind(e.member_id.0)
            .bind(v)
            .execute(conn)
            .await?;
        }
        _ => return Ok(Handled::Ignored),
    }
    Ok(Handled::Applied)
}
