//! Webhook endpoint routes (`docs/api.md`, "Webhooks"): create, update, delete, rotate the
//! secret, replay. Owners and admins only. A create and a rotation answer the new secret once.

use super::{not_null, path_id, present};
use crate::CommandState;
use crate::exec::{Cmd, Done, execute, execute_with, tenant_of};
use crate::request::{Bare, Write};
use crate::respond::Written;
use axum::extract::{Path, State};
use axum::response::Response;
use keel_domain::WebhookId;
use keel_domain::webhook::{WebhookCommand, WebhookSecret};
use keel_gateway::Problem;
use serde::Deserialize;
use utoipa::ToSchema;

/// What a webhook command may name, from the service's settings.
#[derive(Debug, Clone, Copy)]
pub struct WebhookSettings {
    /// `KEEL_WEBHOOKS_ALLOW_HTTP`, `KEEL_WEBHOOKS_ALLOW_PRIVATE`.
    pub policy: keel_domain::webhook::UrlPolicy,
    /// How long the secret before a rotation still signs (`KEEL_WEBHOOKS_ROTATION_GRACE_SECS`).
    pub rotation_grace: std::time::Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            policy: keel_domain::webhook::UrlPolicy::default(),
            rotation_grace: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// A new signing secret: `whsec_` and the base64 of 24 random bytes (Standard Webhooks).
fn new_secret() -> WebhookSecret {
    let mut key = [0u8; 24];
    getrandom::fill(&mut key).expect("the operating system provides randomness");
    WebhookSecret::from_key(&key)
}

/// The answer to a command that made a secret: `Written` and the secret, this once. A replay of
/// its idempotency key answers as stored, without it (rotate to get a new one).
#[derive(Debug, serde::Serialize, ToSchema)]
pub(crate) struct WrittenWithSecret {
    id: uuid::Uuid,
    version: i64,
    position: String,
    /// The endpoint's signing secret (`whsec_...`), shown only in this answer: a repeat with the
    /// same `Idempotency-Key` answers without it.
    #[schema(required = false)]
    secret: String,
}

async fn with_secret(
    state: &CommandState,
    w: &crate::request::WriteMeta,
    id: WebhookId,
    cmd: WebhookCommand,
    secret: WebhookSecret,
    created: bool,
) -> Result<Response, Problem> {
    let tenant = tenant_of(w)?;
    let done =
        execute_with(state, w, tenant, Cmd::Webhook(id, cmd, state.webhooks), created, crate::exec::Clock::System)
            .await?;
    Ok(match done {
        Done::Written { status, id, version, position, database } => {
            let mut body = crate::respond::written_body(id, version, keel_store::placement::token(position, &database));
            body["secret"] = serde_json::Value::String(secret.expose().to_owned());
            crate::respond::respond(status, body)
        }
        replayed @ Done::Replayed { .. } => replayed.into_response(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWebhookBody {
    /// `https` URL of a public host (at most 2,048 characters; `http` and private hosts only when
    /// the service allows them).
    url: String,
    /// Keel event type names (`TaskCreated`, ...) or `"*"`: 1 to 64.
    event_types: Vec<String>,
    /// Up to 500 characters.
    #[serde(default)]
    description: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/webhooks", operation_id = "createWebhook", summary = "Create a webhook endpoint", tag = "webhooks", request_body = CreateWebhookBody,
    responses((status = 201, description = "Endpoint created; `secret` is shown this once (at most 20 endpoints per tenant)", body = WrittenWithSecret)))]
pub(crate) async fn create(
    State(state): State<CommandState>,
    w: Write<CreateWebhookBody>,
) -> Result<Response, Problem> {
    let id = WebhookId::new_v7();
    let secret = new_secret();
    let cmd = WebhookCommand::Create {
        webhook_id: id,
        url: w.body.url,
        event_types: w.body.event_types,
        description: w.body.description,
        secret: secret.clone(),
    };
    with_secret(&state, &w.meta, id, cmd, secret, true).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateWebhookBody {
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = String)]
    url: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(value_type = Vec<String>)]
    event_types: Option<Vec<String>>,
    /// `null` or `""` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", operation_id = "updateWebhook", summary = "Change a webhook endpoint's URL, event types or description", tag = "webhooks", request_body = UpdateWebhookBody,
    params(("id" = Uuid, Path, description = "Webhook endpoint id")),
    responses((status = 200, description = "Endpoint updated", body = Written)))]
pub(crate) async fn update(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Write<UpdateWebhookBody>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = WebhookId(path_id(&id, "webhook")?);
    let cmd = WebhookCommand::Update {
        url: w.body.url,
        event_types: w.body.event_types,
        description: w.body.description.map(Option::unwrap_or_default),
    };
    execute(&state, &w.meta, tenant, Cmd::Webhook(id, cmd, state.webhooks), false).await
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", operation_id = "deleteWebhook", summary = "Delete a webhook endpoint", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook endpoint id")),
    responses((status = 200, description = "Endpoint deleted (it takes no further command)", body = Written)))]
pub(crate) async fn delete(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Bare,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = WebhookId(path_id(&id, "webhook")?);
    execute(&state, &w.meta, tenant, Cmd::Webhook(id, WebhookCommand::Delete, state.webhooks), false).await
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret", operation_id = "rotateWebhookSecret", summary = "Rotate a webhook endpoint's signing secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook endpoint id")),
    responses((status = 200, description = "New secret, shown this once; the previous one still signs for the grace period", body = WrittenWithSecret)))]
pub(crate) async fn rotate_secret(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Bare,
) -> Result<Response, Problem> {
    let id = WebhookId(path_id(&id, "webhook")?);
    let secret = new_secret();
    with_secret(&state, &w.meta, id, WebhookCommand::RotateSecret { secret: secret.clone() }, secret, false).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayWebhookBody {
    /// An RFC 3339 time (events recorded from then on) or a position token `"<xid>.<position>"`
    /// (events after it), as a command's `position` gives it.
    from: String,
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/replay", operation_id = "replayWebhook", summary = "Resend a webhook endpoint's events from a time or a log position", tag = "webhooks", request_body = ReplayWebhookBody,
    params(("id" = Uuid, Path, description = "Webhook endpoint id")),
    responses((status = 200, description = "Replay recorded", body = Written)))]
pub(crate) async fn replay(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    w: Write<ReplayWebhookBody>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(&w.meta)?;
    let id = WebhookId(path_id(&id, "webhook")?);
    let cmd = WebhookCommand::Replay { from: w.body.from };
    execute(&state, &w.meta, tenant, Cmd::Webhook(id, cmd, state.webhooks), false).await
}
