//! The REST command API (`/api/v1`): authorize from the membership, load the aggregate, decide,
//! append, answer with the new version and a consistency token.

mod errors;
mod handlers;
mod respond;

use axum::Router;
use axum::routing::{patch, post};
use keel_store::Store;

#[derive(Clone)]
pub struct CommandState {
    pub store: Store,
}

pub fn router(store: Store) -> Router {
    Router::new()
        .route("/api/v1/tenants", post(handlers::provision_tenant))
        .route("/api/v1/projects", post(handlers::create_project))
        .route("/api/v1/projects/{id}", patch(handlers::update_project))
        .route("/api/v1/projects/{id}/archive", post(handlers::archive_project))
        .route("/api/v1/projects/{id}/restore", post(handlers::restore_project))
        .with_state(CommandState { store })
}
