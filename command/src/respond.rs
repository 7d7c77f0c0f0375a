//! The success shape of every command: `{id, version, position}`, `ETag` and `Keel-Position`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

pub(crate) const KEEL_POSITION: &str = "keel-position";

/// The body of every successful command.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Written {
    /// The id of the resource written.
    pub(crate) id: Uuid,
    /// Its version after the command (its stream's last event).
    pub(crate) version: i64,
    /// Consistency token: send it as `Keel-Consistency` to read your write.
    pub(crate) position: String,
}

/// `position`: a `LogPosition`, or a token that names its database (`placement::token`).
pub(crate) fn written_body(id: Uuid, version: i64, position: impl std::fmt::Display) -> serde_json::Value {
    serde_json::to_value(Written { id, version, position: position.to_string() }).expect("serializes")
}

pub(crate) fn written(status: StatusCode, id: Uuid, version: i64, token: &str) -> Response {
    respond(status, written_body(id, version, token))
}

/// The stored first response to an idempotency key, as it was.
pub(crate) fn replay(status: u16, body: serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut r = respond(status, body);
    r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

pub(crate) fn respond(status: StatusCode, body: serde_json::Value) -> Response {
    let version = body["version"].as_i64().unwrap_or(0);
    let token = body["position"].as_str().unwrap_or("0.0").to_owned();
    let mut r = (status, Json(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&format!("\"{version}\"")).expect("digits"));
    if let Ok(v) = HeaderValue::from_str(&token) {
        h.insert(KEEL_POSITION, v);
    }
    r
}
