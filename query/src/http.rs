//! `/graphql` (GraphiQL on GET, queries on POST with a bearer token and optional
//! `Keel-Consistency`) and `/graphql/ws` (subscriptions, graphql-transport-ws, the token in the
//! connection-init payload).

use crate::changes::Changes;
use crate::context::RequestCtx;
use crate::limits::{self, GraphqlLimits};
use crate::loaders::{MemberLoader, ProjectLoader, ProjectTaskCountLoader, ProjectTasksLoader};
use crate::schema::{KeelSchema, build_introspection_schema, build_schema_with};
use async_graphql::dataloader::DataLoader;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Data, Request, Variables};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use keel_gateway::{Authenticator, Principal, Problem};
use keel_store::{LogPosition, Store};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub const CONSISTENCY_HEADER: &str = "keel-consistency";
/// `Keel-Debug: statements` adds `extensions.sqlStatements`: how many SQL statements the request ran.
pub const DEBUG_HEADER: &str = "keel-debug";

#[derive(Clone)]
pub struct QueryState {
    pub schema: KeelSchema,
    /// The same types without depth and complexity limits, for queries that read only the schema.
    pub introspection: KeelSchema,
    pub store: Store,
    pub consistency_wait: Duration,
    pub auth: Arc<Authenticator>,
    pub changes: Changes,
    pub limits: GraphqlLimits,
}

impl QueryState {
    pub fn new(
        store: Store,
        consistency_wait: Duration,
        auth: Arc<Authenticator>,
        limits: GraphqlLimits,
    ) -> QueryState {
        let changes = Changes::new(store.clone());
        QueryState {
            schema: build_schema_with(limits),
            introspection: build_introspection_schema(limits),
            store,
            consistency_wait,
            auth,
            changes,
            limits,
        }
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
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(websocket))
        .with_state(state)
}

fn graphiql() -> Response {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("Keel GraphQL")
            .finish(),
    )
    .into_response()
}

/// The media type of the answer (GraphQL over HTTP): `application/graphql-response+json` when
/// the client accepts it, else `application/json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    GraphqlResponse,
    Json,
}

impl Media {
    const GRAPHQL_RESPONSE: &'static str = "application/graphql-response+json";

    /// `None`: the client accepts neither (406).
    fn negotiate(headers: &HeaderMap) -> Option<Media> {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Some(Media::Json);
        };
        let types: Vec<String> = accept
            .split(',')
            .filter_map(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        if types.is_empty() {
            Some(Media::Json)
        } else if types.iter().any(|t| t == Self::GRAPHQL_RESPONSE) {
            Some(Media::GraphqlResponse)
        } else if types.iter().any(|t| t == "application/json" || t == "application/*" || t == "*/*") {
            Some(Media::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Media::GraphqlResponse => Self::GRAPHQL_RESPONSE,
            Media::Json => "application/json",
        }
    }
}

/// An answer in the GraphQL response shape: `{"errors": [{"message", "extensions": {"code"}}]}`.
fn request_error(status: StatusCode, media: Media, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, [(header::CONTENT_TYPE, media.content_type())], body.to_string()).into_response()
}

/// `POST /graphql`: a JSON body `{query, operationName?, variables?, extensions?}`.
async fn graphql_post(
    State(state): State<QueryState>,
    principal: Result<Principal, Response>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(media) = Media::negotiate(&headers) else {
        return request_error(
            StatusCode::NOT_ACCEPTABLE,
            Media::Json,
            "NOT_ACCEPTABLE",
            "accept application/graphql-response+json or application/json",
        );
    };
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            "UNSUPPORTED_MEDIA_TYPE",
            "the body must be application/json",
        );
    }
    let principal = match principal {
        Ok(p) => p,
        Err(r) => return r,
    };
    let bytes = match axum::body::to_bytes(body, state.limits.body_limit).await {
        Ok(b) => b,
        Err(_) => {
            let message =
                format!("the body is larger than {} bytes (KEEL_GRAPHQL_BODY_LIMIT)", state.limits.body_limit);
            return request_error(StatusCode::PAYLOAD_TOO_LARGE, media, "PAYLOAD_TOO_LARGE", &message);
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return request_error(StatusCode::BAD_REQUEST, media, "BAD_REQUEST", "the body is not valid JSON"),
    };
    let params = match value {
        serde_json::Value::Object(o) => o,
        serde_json::Value::Array(_) => {
            return request_error(StatusCode::BAD_REQUEST, media, "BAD_REQUEST", "batched requests are not supported");
        }
        _ => return request_error(StatusCode::BAD_REQUEST, media, "BAD_REQUEST", "the body must be a JSON object"),
    };
    let text = |k: &str| params.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let Some(query) = text("query") else {
        return request_error(StatusCode::BAD_REQUEST, media, "BAD_REQUEST", "query must be a string");
    };
    let operation_name = match params.get("operationName") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return request_error(StatusCode::BAD_REQUEST, media, "BAD_REQUEST", "operationName must be a string");
        }
    };
    let variables = match params.get("variables") {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::Object(_)) => Some(v.clone()),
        Some(_) => return request_error(StatusCode::BAD_REQUEST, media, "BAD_REQUEST", "variables must be an object"),
    };
    if !matches!(params.get("extensions"), None | Some(serde_json::Value::Null) | Some(serde_json::Value::Object(_))) {
        return request_error(StatusCode::BAD_REQUEST, media, "BAD_REQUEST", "extensions must be an object");
    }
    execute(&state, principal, &headers, media, Params { query, operation_name, variables }, false).await
}

#[derive(Debug, Deserialize)]
struct GetParams {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
}

/// `GET /graphql`: GraphiQL for a browser; with `?query=` a query (never a mutation: 405).
async fn graphql_get(
    State(state): State<QueryState>,
    principal: Result<Principal, Response>,
    headers: HeaderMap,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.to_ascii_lowercase().contains("text/html"));
    let params = params.ok().map(|Query(p)| p);
    let query = params.as_ref().and_then(|p| p.query.clone());
    if query.is_none() && wants_html {
        return graphiql();
    }
    let Some(media) = Media::negotiate(&headers) else {
        return request_error(
            StatusCode::NOT_ACCEPTABLE,
            Media::Json,
            "NOT_ACCEPTABLE",
            "accept application/graphql-response+json or application/json",
        );
    };
    let Some(params) = params else {
        return request_error(StatusCode::BAD_REQUEST, media, "BAD_REQUEST", "the query string is malformed");
    };
    let Some(query) = query else {
        return request_error(StatusCode::BAD_REQUEST, media, "BAD_REQUEST", "the query parameter is required");
    };
    let principal = match principal {
        Ok(p) => p,
        Err(r) => return r,
    };
    let variables = match params.variables.as_deref().map(serde_json::from_str::<serde_json::Value>) {
        None => None,
        Some(Ok(v @ serde_json::Value::Object(_))) => Some(v),
        Some(Ok(serde_json::Value::Null)) => None,
        Some(_) => {
            return request_error(StatusCode::BAD_REQUEST, media, "BAD_REQUEST", "variables must be a JSON object");
        }
    };
    execute(
        &state,
        principal,
        &headers,
        media,
        Params { query, operation_name: params.operation_name, variables },
        true,
    )
    .await
}

struct Params {
    query: String,
    operation_name: Option<String>,
    variables: Option<serde_json::Value>,
}

/// A data request answered with request errors only (it never ran: parse, validation or a
/// limit), which `application/graphql-response+json` answers with 400.
fn is_request_error(response: &async_graphql::Response) -> bool {
    !response.errors.is_empty()
        && response.data == async_graphql::Value::Null
        && response.errors.iter().all(|e| e.path.is_empty())
}

async fn execute(
    state: &QueryState,
    principal: Principal,
    headers: &HeaderMap,
    media: Media,
    params: Params,
    get: bool,
) -> Response {
    let consistency = match headers.get(CONSISTENCY_HEADER) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(LogPosition::parse) {
            Some(p) => Some(p),
            None => {
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    "bad-consistency-token",
                    "Bad consistency token",
                    "Keel-Consistency must be a position returned by a command",
                )
                .into_response();
            }
        },
    };
    let bad_document = |code: &str, message: &str| {
        let status = if media == Media::GraphqlResponse { StatusCode::BAD_REQUEST } else { StatusCode::OK };
        request_error(status, media, code, message)
    };
    // Before the parser sees it: the parser recurses once per bracket.
    if limits::nesting_exceeds(&params.query, state.limits.max_nesting) {
        let message = format!(
            "the document nests brackets deeper than {} levels (KEEL_GRAPHQL_MAX_NESTING)",
            state.limits.max_nesting
        );
        return bad_document(limits::TOO_COMPLEX, &message);
    }
    let mut request = Request::new(params.query).variables(Variables::from_json(params.variables.unwrap_or_default()));
    if let Some(name) = params.operation_name.clone() {
        request = request.operation_name(name);
    }
    let doc = match request.parsed_query() {
        Ok(doc) => doc,
        Err(e) => return bad_document("GRAPHQL_PARSE_FAILED", &e.message),
    };
    let operation_type = selected_operation(doc, params.operation_name.as_deref());
    if get && operation_type.is_some_and(|t| t != OperationType::Query) {
        let mut r = request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            media,
            "METHOD_NOT_ALLOWED",
            "GET runs queries only: send mutations and subscriptions with POST or over /graphql/ws",
        );
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let schema = if limits::is_introspection(doc, params.operation_name.as_deref()) {
        &state.introspection
    } else {
        &state.schema
    };
    let ctx = Arc::new(RequestCtx::new(principal, state.store.clone(), consistency, state.consistency_wait));
    let request = with_data(request, state.data(ctx.clone()));
    let Ok(mut response) = tokio::time::timeout(state.limits.timeout, schema.execute(request)).await else {
        tracing::warn!(
            timeout_ms = state.limits.timeout.as_millis() as u64,
            "GraphQL request cancelled at its deadline"
        );
        let message = format!(
            "the request did not finish within {} ms (KEEL_REQUEST_TIMEOUT_MS)",
            state.limits.timeout.as_millis()
        );
        let mut r = request_error(StatusCode::SERVICE_UNAVAILABLE, media, "TIMEOUT", &message);
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    if ctx.stale.load(Ordering::Relaxed) {
        response.extensions.insert("consistency".into(), async_graphql::Value::from("stale"));
    }
    if headers.get(DEBUG_HEADER).and_then(|v| v.to_str().ok()) == Some("statements") {
        let n = ctx.statements.load(Ordering::Relaxed);
        response.extensions.insert("sqlStatements".into(), async_graphql::Value::from(n));
    }
    let status = if media == Media::GraphqlResponse && is_request_error(&response) {
        for e in &mut response.errors {
            let ext = e.extensions.get_or_insert_with(Default::default);
            if ext.get("code").is_none() {
                ext.set("code", "GRAPHQL_VALIDATION_FAILED");
            }
        }
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    match serde_json::to_vec(&response) {
        Ok(body) => (status, [(header::CONTENT_TYPE, media.content_type())], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a GraphQL response");
            request_error(StatusCode::INTERNAL_SERVER_ERROR, media, "INTERNAL", "internal error")
        }
    }
}

/// The type of the operation the request selects, when the document names it unambiguously.
fn selected_operation(doc: &ExecutableDocument, name: Option<&str>) -> Option<OperationType> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(n)) => ops.get(n).map(|op| op.node.ty),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next().map(|op| op.node.ty),
        _ => None,
    }
}

fn with_data(mut request: Request, data: Data) -> Request {
    request.data = data;
    request
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
