//! `/graphql`: GraphiQL on GET, queries on POST with a bearer token and optional
//! `Keel-Consistency`.

use crate::context::RequestCtx;
use crate::schema::KeelSchema;
use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use keel_gateway::{Principal, Problem};
use keel_store::{LogPosition, Store};
use std::sync::atomic::Ordering;
use std::time::Duration;

pub const CONSISTENCY_HEADER: &str = "keel-consistency";

#[derive(Clone)]
pub struct QueryState {
    pub schema: KeelSchema,
    pub store: Store,
    pub consistency_wait: Duration,
}

pub fn router(state: QueryState) -> Router {
    Router::new().route("/graphql", get(graphiql).post(graphql)).with_state(state)
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").title("Keel GraphQL").finish())
}

async fn graphql(
    State(state): State<QueryState>,
    principal: Principal,
    headers: HeaderMap,
    req: GraphQLRequest,
) -> Result<Response, Problem> {
    let consistency = match headers.get(CONSISTENCY_HEADER) {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(LogPosition::parse).ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-consistency-token",
                "Bad consistency token",
                "Keel-Consistency must be a position returned by a command",
            )
        })?),
    };
    let ctx = std::sync::Arc::new(RequestCtx::new(principal, state.store.clone(), consistency, state.consistency_wait));
    let request = req.into_inner().data(ctx.clone());
    let mut response = state.schema.execute(request).await;
    if ctx.stale.load(Ordering::Relaxed) {
        response.extensions.insert("consistency".into(), async_graphql::Value::from("stale"));
    }
    Ok(GraphQLResponse::from(response).into_response())
}
