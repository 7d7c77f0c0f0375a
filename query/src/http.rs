//! `/graphql` (GraphiQL on GET, queries on POST with a bearer token and optional
//! `Keel-Consistency`) and `/graphql/ws` (subscriptions, graphql-transport-ws, the token in the
//! connection-init payload).

use crate::changes::Changes;
use crate::context::RequestCtx;
use crate::loaders::{MemberLoader, ProjectLoader, ProjectTaskCountLoader, ProjectTasksLoader};
use crate::schema::KeelSchema;
use async_graphql::dataloader::DataLoader;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql::{Data, Request};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use keel_gateway::{Authenticator, Principal, Problem};
use keel_store::{LogPosition, Store};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub const CONSISTENCY_HEADER: &str = "keel-consistency";
/// `Keel-Debug: statements` adds `extensions.sqlStatements`: how many SQL statements the request ran.
pub const DEBUG_HEADER: &str = "keel-debug";

#[derive(Clone)]
pub struct QueryState {
    pub schema: KeelSchema,
    pub store: Store,
    pub consistency_wait: Duration,
    pub auth: Arc<Authenticator>,
    pub changes: Changes,
}

impl QueryState {
    pub fn new(schema: KeelSchema, store: Store, consistency_wait: Duration, auth: Arc<Authenticator>) -> QueryState {
        let changes = Changes::new(store.clone());
        QueryState { schema, store, consistency_wait, auth, changes }
    }

    fn data(&self, ctx: Arc<RequestCtx>) -> Data {
        let mut data = Data::default();
        // Keys asked for within a few milliseconds of each other load in one statement.
        let batch = Duration::from_millis(3);
        data.insert(DataLoader::new(ProjectLoader(ctx.clone()), tokio::spawn).delay(batch));
        data.insert(DataLoader::new(MemberLoader(ctx.clone()), tokio::spawn).delay(batch));
        data.insert(DataLoader::new(ProjectTasksLoader(ctx.clone()), tokio::spawn).delay(batch));
        data.insert(DataLoader::new(ProjectTaskCountLoader(ctx.clone()), tokio::spawn).delay(batch));
        data.insert(self.changes.clone());
        data.insert(ctx);
        data
    }
}

pub fn router(state: QueryState) -> Router {
    Router::new().route("/graphql", get(graphiql).post(graphql)).route("/graphql/ws", get(websocket)).with_state(state)
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("Keel GraphQL")
            .finish(),
    )
}

fn with_data(mut request: Request, data: Data) -> Request {
    request.data = data;
    request
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
    let ctx = Arc::new(RequestCtx::new(principal, state.store.clone(), consistency, state.consistency_wait));
    let request = with_data(req.into_inner(), state.data(ctx.clone()));
    let mut response = state.schema.execute(request).await;
    if ctx.stale.load(Ordering::Relaxed) {
        response.extensions.insert("consistency".into(), async_graphql::Value::from("stale"));
    }
    if headers.get(DEBUG_HEADER).and_then(|v| v.to_str().ok()) == Some("statements") {
        let n = ctx.statements.load(Ordering::Relaxed);
        response.extensions.insert("sqlStatements".into(), async_graphql::Value::from(n));
    }
    Ok(GraphQLResponse::from(response).into_response())
}

/// The bearer token of a connection-init payload: `{"token": "..."}` or
/// `{"Authorization": "Bearer ..."}`.
fn token_of(payload: &serde_json::Value) -> Option<&str> {
    if let Some(t) = payload.get("token").and_then(|t| t.as_str()) {
        return Some(t);
    }
    ["Authorization", "authorization"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
}

async fn websocket(State(state): State<QueryState>, protocol: GraphQLProtocol, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            let schema = state.schema.clone();
            GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let token =
                        token_of(&payload).ok_or_else(|| async_graphql::Error::new("a bearer token is required"))?;
                    let principal = state.auth.verify(token).map_err(|e| async_graphql::Error::new(e.to_string()))?;
                    let ctx = Arc::new(RequestCtx::new(principal, state.store.clone(), None, state.consistency_wait));
                    Ok(state.data(ctx))
                })
                .serve()
        })
        .into_response()
}
