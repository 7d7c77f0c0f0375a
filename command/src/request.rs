//! What every write request carries besides its command: the caller, request id, `If-Match`,
//! `Idempotency-Key`, and a hash of the request for idempotent replays.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_gateway::context::RequestId;
use keel_gateway::json::{parse, read_body, require_json};
use keel_gateway::{Principal, Problem};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Debug, Clone)]
pub(crate) struct WriteMeta {
    pub(crate) principal: Principal,
    pub(crate) request_id: Option<String>,
    /// `If-Match: "<version>"`.
    pub(crate) if_match: Option<i64>,
    pub(crate) idempotency_key: Option<String>,
    /// SHA-256 of method, path and body: a key reused for another request is refused.
    pub(crate) request_hash: Vec<u8>,
}

fn bad_request(code: &'static str, detail: &str) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, code, "Bad request", detail)
}

fn meta(parts: &Parts, principal: Principal, body: &[u8]) -> Result<WriteMeta, Problem> {
    let headers: &HeaderMap = &parts.headers;
    let if_match = match headers.get("if-match") {
        None => None,
        Some(v) => {
            let v = v.to_str().unwrap_or("").trim();
            let v = v.strip_prefix("W/").unwrap_or(v);
            let digits = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
            Some(digits.parse::<i64>().map_err(|_| {
                bad_request("bad-if-match", "If-Match must be a version in quotes, as an ETag gives it: \"3\"")
            })?)
        }
    };
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().map_err(|_| bad_request("bad-idempotency-key", "Idempotency-Key must be ASCII"))?;
            if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY || !k.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return Err(bad_request(
                    "bad-idempotency-key",
                    "Idempotency-Key must be 1 to 255 printable ASCII characters",
                ));
            }
            Some(k.to_owned())
        }
    };
    let mut h = Sha256::new();
    h.update(parts.method.as_str().as_bytes());
    h.update(b" ");
    h.update(parts.uri.path().as_bytes());
    h.update(b"\n");
    h.update(body);
    Ok(WriteMeta {
        principal,
        request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
        if_match,
        idempotency_key,
        request_hash: h.finalize().to_vec(),
    })
}

/// A write with a JSON body. An empty body reads as `{}`, so commands whose fields are all
/// optional need none.
pub(crate) struct Write<T> {
    pub(crate) meta: WriteMeta,
    pub(crate) body: T,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Write<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        // Authentication comes first: an anonymous caller learns nothing about the body.
        let principal = Principal::from_request_parts(&mut parts, state).await?;
        let declared_json = require_json(&parts.headers);
        let bytes = read_body(Request::from_parts(parts.clone(), body), state).await?;
        if !bytes.is_empty() {
            declared_json.map_err(IntoResponse::into_response)?;
        }
        let body: T =
            if bytes.is_empty() { parse(b"{}") } else { parse(&bytes) }.map_err(IntoResponse::into_response)?;
        let meta = meta(&parts, principal, &bytes).map_err(IntoResponse::into_response)?;
        Ok(Write { meta, body })
    }
}

/// The body of commands that take none: nothing, or `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoBody {}
