//! The success shape of every command: `{id, version, position}`, `ETag` and `Keel-Position`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keel_store::LogPosition;
use uuid::Uuid;

pub(crate) const KEEL_POSITION: &str = "keel-position";

pub(crate) fn written(status: StatusCode, id: Uuid, version: i64, position: LogPosition) -> Response {
    let token = position.to_string();
    let body = serde_json::json!({ "id": id, "version": version, "position": token });
    let mut r = (status, Json(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&format!("\"{version}\"")).expect("digits"));
    h.insert(KEEL_POSITION, HeaderValue::from_str(&token).expect("digits and a dot"));
    r
}
