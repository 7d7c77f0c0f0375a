//! `/graphql` (GraphiQL on GET, queries on POST with a bearer token and optional
//! `Keel-Consistency`) and `/graphql/ws` (subscriptions, graphql-transport-ws, the token in the
//! connection-init payload).

use crate::changes::Changes;
use crate::context::RequestCtx;
use crate::limits::{self, GraphqlLimits};
use crate::loaders::{MemberLoader, ProjectLoader, ProjectTaskCountLoader, ProjectTasksLoader};
use crate::schema::{KeelSchema, build_introspection_schema, build_schema_with};
use async_graphql::dataloader::DataLoader;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Data, Request, Variables};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use keel_gateway::{Authenticator, Code, Principal, Problem};
use keel_store::{LogPosition, Store};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::SystemTime;
use tokio::sync::{broadcast, watch};

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
    /// Turns true when the server begins to shut down: subscription sockets close with 1001.
    pub stopping: watch::Receiver<bool>,
    /// The page a browser gets for `GET /graphql` (the console's GraphiQL); the composition
    /// root hands it over, so this crate knows no page. Without one, browsers get 404.
    pub graphiql: Option<Arc<str>>,
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
            stopping: watch::channel(false).1,
            graphiql: None,
        }
    }

    /// Serves `page` to browsers at `GET /graphql`.
    pub fn graphiql(self, page: impl Into<Arc<str>>) -> QueryState {
        QueryState { graphiql: Some(page.into()), ..self }
    }

    /// Closes subscription sockets when `stopping` turns true.
    pub fn stopping(self, stopping: watch::Receiver<bool>) -> QueryState {
        QueryState { stopping, ..self }
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

/// `/graphql/schema.graphql`: the schema as SDL (as `keel graphql-schema` prints it); no
/// authentication, like the OpenAPI document.
pub fn schema_router() -> Router {
    let sdl: Arc<str> = crate::schema::build_schema().sdl().into();
    Router::new().route(
        "/graphql/schema.graphql",
        get(move || {
            let sdl = sdl.clone();
            async move { ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], sdl.to_string()) }
        }),
    )
}

fn graphiql(state: &QueryState) -> Response {
    let Some(page) = &state.graphiql else {
        return Problem::not_found("route").into_response();
    };
    let mut r = Html(page.to_string()).into_response();
    // The page may carry the development token of `keel up`.
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A browser's navigation: `text/html` accepted and no JSON type named (browsers send
/// `text/html,...,*/*;q=0.8`; API clients name `application/json` or send no `Accept`).
fn prefers_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return false };
    let accept = accept.to_ascii_lowercase();
    accept.contains("text/html") && !accept.contains("json")
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
/// Its status is the code's.
fn request_error(media: Media, code: Code, message: &str) -> Response {
    request_error_at(code.status(), media, code, message)
}

fn request_error_at(status: StatusCode, media: Media, code: Code, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code.graphql() } }] });
    (status, [(header::CONTENT_TYPE, media.content_type())], body.to_string()).into_response()
}

fn not_acceptable() -> Response {
    let message = "accept application/graphql-response+json or application/json";
    request_error(Media::Json, Code::NotAcceptable, message)
}

/// `POST /graphql`: a JSON body `{query, operationName?, variables?, extensions?}`.
async fn graphql_post(
    State(state): State<QueryState>,
    principal: Result<Principal, Response>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(media) = Media::negotiate(&headers) else { return not_acceptable() };
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return request_error(media, Code::UnsupportedMediaType, "the body must be application/json");
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
            return request_error(media, Code::PayloadTooLarge, &message);
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return request_error(media, Code::BadRequest, "the body is not valid JSON"),
    };
    let params = match value {
        serde_json::Value::Object(o) => o,
        serde_json::Value::Array(_) => {
            return request_error(media, Code::BadRequest, "batched requests are not supported");
        }
        _ => return request_error(media, Code::BadRequest, "the body must be a JSON object"),
    };
    let text = |k: &str| params.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let Some(query) = text("query") else {
        return request_error(media, Code::BadRequest, "query must be a string");
    };
    let operation_name = match params.get("operationName") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return request_error(media, Code::BadRequest, "operationName must be a string");
        }
    };
    let variables = match params.get("variables") {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::Object(_)) => Some(v.clone()),
        Some(_) => return request_error(media, Code::BadRequest, "variables must be an object"),
    };
    if !matches!(params.get("extensions"), None | Some(serde_json::Value::Null) | Some(serde_json::Value::Object(_))) {
        return request_error(media, Code::BadRequest, "extensions must be an object");
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

/// `GET /graphql`: GraphiQL for a browser (also with `?query=`, its URL state); with `?query=`
/// and a JSON `Accept`, a query (never a mutation: 405).
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
    // `?query=` is also GraphiQL's URL state: a browser opening such a link gets GraphiQL with
    // the query in its editor; a client that asks for JSON gets the query run.
    if wants_html && (query.is_none() || prefers_html(&headers)) {
        return graphiql(&state);
    }
    let Some(media) = Media::negotiate(&headers) else { return not_acceptable() };
    let Some(params) = params else {
        return request_error(media, Code::BadRequest, "the query string is malformed");
    };
    let Some(query) = query else {
        return request_error(media, Code::BadRequest, "the query parameter is required");
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
            return request_error(media, Code::BadRequest, "variables must be a JSON object");
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
        Some(v) => match v.to_str().ok().and_then(keel_store::placement::parse_token) {
            Some(p) => Some(p),
            None => {
                return Problem::new(
                    Code::BadConsistencyToken,
                    "Keel-Consistency must be a position returned by a command",
                )
                .into_response();
            }
        },
    };
    let bad_document = |code: Code, message: &str| {
        // A document that never ran: 400 under graphql-response+json, 200 under plain JSON.
        let status = if media == Media::GraphqlResponse { code.status() } else { StatusCode::OK };
        request_error_at(status, media, code, message)
    };
    // Before anything recursive runs: the parser recurses once per bracket, the recursion-depth
    // check once per expanded fragment.
    let doc = match limits::vet(&params.query, &state.limits) {
        Ok(doc) => doc,
        Err(e) => {
            let code = e.extensions.as_ref().and_then(|x| x.get("code")).map(|_| Code::QueryTooComplex);
            return bad_document(code.unwrap_or(Code::GraphqlParseFailed), &e.message);
        }
    };
    let mut request = Request::new(params.query).variables(Variables::from_json(params.variables.unwrap_or_default()));
    if let Some(name) = params.operation_name.clone() {
        request = request.operation_name(name);
    }
    request.set_parsed_query(doc);
    let Ok(doc) = request.parsed_query() else {
        return bad_document(Code::GraphqlParseFailed, "the document cannot be parsed");
    };
    let operation_type = selected_operation(doc, params.operation_name.as_deref());
    if get && operation_type.is_some_and(|t| t != OperationType::Query) {
        let mut r = request_error(
            media,
            Code::MethodNotAllowed,
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
    let (store, consistency) = match read_side(&state.store, &principal, consistency).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot find the tenant's database");
            return request_error(media, Code::DatabaseUnavailable, "the tenant's database cannot be reached");
        }
    };
    let ctx = Arc::new(RequestCtx::new(principal, store, consistency, state.consistency_wait));
    let mut data = state.data(ctx.clone());
    data.insert(limits::Vetted);
    let request = with_data(request, data);
    let Ok(mut response) = tokio::time::timeout(state.limits.timeout, schema.execute(request)).await else {
        tracing::warn!(
            timeout_ms = state.limits.timeout.as_millis() as u64,
            "GraphQL request cancelled at its deadline"
        );
        let message = format!(
            "the request did not finish within {} ms (KEEL_REQUEST_TIMEOUT_MS)",
            state.limits.timeout.as_millis()
        );
        let mut r = request_error(media, Code::Timeout, &message);
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
    let never_ran = is_request_error(&response);
    if never_ran {
        for e in &mut response.errors {
            let ext = e.extensions.get_or_insert_with(Default::default);
            if ext.get("code").is_none() {
                ext.set("code", Code::GraphqlValidationFailed.graphql());
            }
        }
    }
    // The database is unreachable: the whole request is a 503, whichever field found out first,
    // so clients and load balancers see it as they see a REST command's (with `Retry-After`).
    let unavailable = response.errors.iter().any(|e| {
        e.extensions.as_ref().and_then(|x| x.get("code"))
            == Some(&async_graphql::Value::from(Code::DatabaseUnavailable.graphql()))
    });
    let status = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else if media == Media::GraphqlResponse && never_ran {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    match serde_json::to_vec(&response) {
        Ok(body) if unavailable => {
            let mut r = (status, [(header::CONTENT_TYPE, media.content_type())], body).into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Ok(body) => (status, [(header::CONTENT_TYPE, media.content_type())], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a GraphQL response");
            request_error(media, Code::Internal, "internal error")
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
/// Where the caller's reads are served and what they wait for (docs/tenancy.md): the tenant's
/// database, or right after a move the one it left until the new one's read models caught up.
/// A token names the database whose log it is: in the database it names it waits as it is; one
/// from a database the tenant left waits for the new database's copy of its last event.
async fn read_side(
    store: &Store,
    principal: &Principal,
    token: Option<(LogPosition, String)>,
) -> Result<(Store, Option<LogPosition>), keel_store::StoreError> {
    let pool = keel_store::placement::POOL;
    let Some(tenant) = principal.tenant_id else {
        return Ok((store.clone(), token.filter(|(_, db)| db == pool).map(|(at, _)| at)));
    };
    let mut p = store.placement(keel_domain::TenantId(tenant)).await?;
    // A token of a database this process does not place the tenant in: its placement may have
    // moved since it was cached; read it again.
    if let Some((_, db)) = &token
        && *db != p.database
        && p.reads_from.as_deref() != Some(db.as_str())
    {
        store.forget_placement(keel_domain::TenantId(tenant));
        p = store.placement(keel_domain::TenantId(tenant)).await?;
    }
    let (db, want) = match token {
        None => (p.reads().to_owned(), None),
        Some((at, db)) if db == p.database => (db, Some(at)),
        Some((at, db)) if p.reads_from.as_deref() == Some(db.as_str()) => (db, Some(at)),
        Some(_) => match &p.reads_from {
            Some(from) => (from.clone(), None),
            None => (p.database.clone(), p.arrived),
        },
    };
    Ok((store.database(&db)?, want))
}

fn token_of(payload: &serde_json::Value) -> Option<&str> {
    if let Some(t) = payload.get("token").and_then(|t| t.as_str()) {
        return Some(t);
    }
    ["Authorization", "authorization"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
}

async fn websocket(
    State(state): State<QueryState>,
    slot: Option<axum::Extension<keel_gateway::limits::shed::Slot>>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            // The subscriptions' bulkhead slot is held until the socket ends.
            let _slot = slot;
            serve_socket(state, protocol, socket).await
        })
        .into_response()
}

/// Why Keel ends a socket, as graphql-transport-ws close codes with fixed reasons (no internal text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The token expired, or a subscribe came before the connection was acknowledged.
    Unauthorized,
    /// The token was refused, the membership ended, the tenant was suspended or erased.
    Forbidden,
    /// A message that is not graphql-transport-ws.
    BadRequest,
    /// Keel is shutting down.
    GoingAway,
}

impl Ending {
    fn frame(self) -> Message {
        let (code, reason) = match self {
            Ending::Unauthorized => (4401, "Unauthorized"),
            Ending::Forbidden => (4403, "Forbidden"),
            Ending::BadRequest => (4400, "Bad request"),
            Ending::GoingAway => (1001, "Going away"),
        };
        Message::Close(Some(CloseFrame { code, reason: reason.into() }))
    }
}

/// One subscription socket: async-graphql speaks the protocol; this loop forwards what it says,
/// rewrites its close frames to fixed reasons, and ends the socket when access ends: at the
/// token's `exp`, or when a membership or tenant change of the subscriber's tenant leaves it
/// without an active membership in an active tenant.
async fn serve_socket(state: QueryState, protocol: GraphQLProtocol, socket: WebSocket) {
    let (mut sink, stream) = socket.split();
    let (out_tx, mut out_rx) = futures::channel::mpsc::channel::<Message>(16);
    let (end_tx, mut end_rx) = watch::channel::<Option<Ending>>(None);
    let refused = Arc::new(std::sync::Mutex::new(None::<Ending>));
    let on_init = {
        let state = state.clone();
        let refused = refused.clone();
        move |payload: serde_json::Value| async move {
            let refuse = |why: Ending| {
                *refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                async_graphql::Error::new("refused")
            };
            let token = token_of(&payload).ok_or_else(|| refuse(Ending::Forbidden))?;
            let (principal, expires) = state.auth.verify_until(token).await.map_err(|e| {
                tracing::info!(error = %e, "subscription token refused");
                refuse(Ending::Forbidden)
            })?;
            let (store, _) = read_side(&state.store, &principal, None).await.map_err(|e| {
                tracing::warn!(error = %e, "cannot find the tenant's database");
                refuse(Ending::Forbidden)
            })?;
            let ctx = Arc::new(RequestCtx::new(principal, store, None, state.consistency_wait));
            tokio::spawn(watch_access(ctx.clone(), state.changes.clone(), expires, end_tx));
            Ok(state.data(ctx))
        }
    };
    let graphql = GraphQLWebSocket::new_with_pair(out_tx, stream, state.schema.clone(), protocol)
        .on_connection_init(on_init)
        .serve();
    tokio::pin!(graphql);
    let mut stopping = state.stopping.clone();
    let mut serving = true;
    let mut watching = true;
    let ending = loop {
        tokio::select! {
            _ = &mut graphql, if serving => serving = false,
            msg = out_rx.next() => match msg {
                Some(Message::Close(frame)) => {
                    let code = frame.as_ref().map(|f| f.code).unwrap_or(1000);
                    let refused = *refused.lock().unwrap_or_else(|e| e.into_inner());
                    let rewritten = match (code, refused) {
                        (_, Some(why)) => why.frame(),
                        (1002, None) => Ending::BadRequest.frame(),
                        (1011, None) => Ending::Unauthorized.frame(),
                        _ => Message::Close(frame),
                    };
                    let _ = sink.send(rewritten).await;
                    break None;
                }
                Some(m) => {
                    if sink.send(m).await.is_err() {
                        break None;
                    }
                }
                None => break None,
            },
            _ = async {
                // A sender that is gone never stops the socket.
                if stopping.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => break Some(Ending::GoingAway),
            changed = end_rx.changed(), if watching => match changed {
                Ok(()) => {
                    let why = *end_rx.borrow();
                    if why.is_some() {
                        break why;
                    }
                }
                // No watcher (the connection was refused or never acknowledged): keep serving
                // what async-graphql says, without polling a closed channel again.
                Err(_) => watching = false,
            },
        }
    };
    if let Some(why) = ending {
        tracing::info!(?why, "subscription socket ended");
        let _ = sink.send(why.frame()).await;
    }
    let _ = sink.close().await;
}

/// Ends the socket (through `end`) at the token's expiry or when the subscriber's access ends.
async fn watch_access(ctx: Arc<RequestCtx>, changes: Changes, expires: SystemTime, end: watch::Sender<Option<Ending>>) {
    let left = expires.duration_since(SystemTime::now()).unwrap_or_default();
    let expiry = tokio::time::sleep(left);
    tokio::pin!(expiry);
    let tenant = ctx.principal.tenant_id.filter(|_| !ctx.principal.platform);
    let mut feed = changes.subscribe().await;
    loop {
        let recheck = tokio::select! {
            _ = &mut expiry => {
                let _ = end.send(Some(Ending::Unauthorized));
                return;
            }
            _ = end.closed() => return,
            c = feed.recv() => match c {
                Ok(c) => Some(c.t) == tenant && (c.p == keel_store::read::members::MODEL.name || c.p == keel_store::read::tenants::MODEL.name),
                Err(broadcast::error::RecvError::Lagged(_)) => tenant.is_some(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        // Access is what any subscription needs: an active membership in an active tenant.
        if recheck && matches!(ctx.still_allowed(|_| true).await, Ok(false)) {
            let _ = end.send(Some(Ending::Forbidden));
            return;
        }
    }
}
