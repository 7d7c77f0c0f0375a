//! The REST command API (`/api/v1`): authorize from the membership, load the aggregate, decide,
//! append, answer with the new version and a consistency token.

pub mod demo;
mod errors;
mod exec;
mod openapi;
mod openapi_webhooks;
pub mod platform;
mod request;
mod respond;
mod routes;

use axum::Router;
use axum::routing::{delete, get, patch, post, put};
use keel_store::Store;
use routes::{members, projects, tasks, tenants, usage, webhooks};

pub use routes::webhooks::WebhookSettings;

#[derive(Clone)]
pub struct CommandState {
    pub store: Store,
    pub webhooks: WebhookSettings,
}

pub use openapi::openapi_json;

pub fn router(store: Store) -> Router {
    router_with(store, WebhookSettings::default())
}

/// `router` with the webhook settings of the service (`KEEL_WEBHOOKS_*`).
pub fn router_with(store: Store, webhooks: WebhookSettings) -> Router {
    Router::new()
        .route("/api/v1/tenants", post(tenants::provision))
        .route("/api/v1/tenants/{id}/plan", put(tenants::change_plan))
        .route("/api/v1/tenants/{id}/suspend", post(tenants::suspend))
        .route("/api/v1/tenants/{id}/reactivate", post(tenants::reactivate))
        .route("/api/v1/tenants/{id}/erase", post(tenants::erase))
        .route("/api/v1/members/{id}/erase", post(members::erase))
        .route("/api/v1/members", post(members::invite))
        .route("/api/v1/members/{id}/role", put(members::change_role))
        .route("/api/v1/members/{id}", delete(members::remove))
        .route("/api/v1/projects", post(projects::create))
        .route("/api/v1/projects/{id}", patch(projects::update))
        .route("/api/v1/projects/{id}/archive", post(projects::archive))
        .route("/api/v1/projects/{id}/restore", post(projects::restore))
        .route("/api/v1/projects/{id}/tasks", post(tasks::create))
        .route("/api/v1/tasks/{id}", patch(tasks::update))
        .route("/api/v1/tasks/{id}/assignee", put(tasks::assign))
        .route("/api/v1/tasks/{id}/status", put(tasks::change_status))
        .route("/api/v1/usage", post(usage::record))
        .route("/api/v1/webhooks", post(webhooks::create))
        .route("/api/v1/webhooks/{id}", patch(webhooks::update).delete(webhooks::delete))
        .route("/api/v1/webhooks/{id}/rotate-secret", post(webhooks::rotate_secret))
        .route("/api/v1/webhooks/{id}/replay", post(webhooks::replay))
        .layer(axum::middleware::map_response(keel_gateway::not_allowed::as_problem))
        .with_state(CommandState { store, webhooks })
}

/// `/api/v1/openapi.json`; no authentication (the console's explorer at `/api/v1/docs` renders it).
pub fn docs_router() -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi::serve_json))
        .layer(axum::middleware::map_response(keel_gateway::not_allowed::as_problem))
}
