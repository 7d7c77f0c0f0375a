//! What every write request carries besides its command: the caller, request id, `If-Match`,
//! `Idempotency-Key`, and a hash of the request for idempotent replays.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use keel_gateway::context::RequestId;
use keel_gateway::json::{parse, read_body, require_json};
use keel_gateway::{Code, FieldError, Principal, Problem};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Debug, Clone)]
pub(crate) struct WriteMeta {
    pub(crate) principal: Principal,
    pub(crate) request_id: Option<String>,
    /// `If-Match`: `*` or a list of entity tags.
    pub(crate) if_match: Option<IfMatch>,
    pub(crate) idempotency_key: Option<String>,
    /// SHA-256 of method, path and body: a key reused for another request is refused.
    pub(crate) request_hash: Vec<u8>,
}

/// `If-Match` (RFC 9110 §13.1.1), compared strongly: a weak tag (`W/"3"`) or a tag that is not a
/// version never matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IfMatch {
    /// `*`: the resource exists, at any version.
    Any,
    /// The versions named by the strong tags of the list (possibly none).
    Versions(Vec<i64>),
}

impl IfMatch {
    /// Whether the header pins versions, so that a lost race cannot be retried against a newer one.
    pub(crate) fn pins_version(&self) -> bool {
        matches!(self, IfMatch::Versions(_))
    }

    /// Whether a resource that exists at `version` satisfies the condition.
    pub(crate) fn matches(&self, version: i64) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Versions(v) => v.contains(&version),
        }
    }
}

/// Every `If-Match` line, as one list; 400 when it is not `*` or a list of entity tags. An empty
/// list (`If-Match:` with no tag) is valid syntax and matches nothing.
fn if_match(headers: &HeaderMap) -> Result<Option<IfMatch>, Problem> {
    let mut lines = headers.get_all("if-match").iter().peekable();
    if lines.peek().is_none() {
        return Ok(None);
    }
    let bad =
        || bad_request(Code::BadIfMatch, "If-Match must be * or entity tags in quotes, as an ETag gives them: \"3\"");
    let mut versions = Vec::new();
    let mut any = false;
    for line in lines {
        let line = line.as_bytes();
        if trim_ows(line) == b"*" {
            any = true;
            continue;
        }
        let mut rest = line;
        loop {
            rest = trim_ows(rest);
            if let Some(r) = rest.strip_prefix(b",") {
                rest = r;
                continue;
            }
            if rest.is_empty() {
                break;
            }
            let (weak, r) = match rest.strip_prefix(b"W/") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let r = r.strip_prefix(b"\"").ok_or_else(bad)?;
            let end = r.iter().position(|b| *b == b'"').ok_or_else(bad)?;
            let (tag, r) = (&r[..end], &r[end + 1..]);
            // etagc: %x21 / %x23-7E / obs-text
            if !tag.iter().all(|b| *b == 0x21 || (0x23..=0x7e).contains(b) || *b >= 0x80) {
                return Err(bad());
            }
            let r = trim_ows(r);
            if !(r.is_empty() || r.starts_with(b",")) {
                return Err(bad());
            }
            rest = r;
            // Strong comparison is octet by octet: only the ETag's own spelling (`"3"`, never
            // `"03"`) names a version.
            if !weak
                && let Some(v) = std::str::from_utf8(tag).ok().and_then(|t| t.parse::<i64>().ok())
                && v.to_string().as_bytes() == tag
            {
                versions.push(v);
            }
        }
    }
    // `*` in a list is not valid syntax; alone it means "exists".
    match (any, versions.is_empty()) {
        (true, true) => Ok(Some(IfMatch::Any)),
        (true, false) => Err(bad()),
        (false, _) => Ok(Some(IfMatch::Versions(versions))),
    }
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', r @ ..] = b {
        b = r;
    }
    while let [r @ .., b' ' | b'\t'] = b {
        b = r;
    }
    b
}

fn bad_request(code: Code, detail: &str) -> Problem {
    Problem::new(code, detail)
}

fn meta(parts: &Parts, principal: Principal, body: &[u8]) -> Result<WriteMeta, Problem> {
    let headers: &HeaderMap = &parts.headers;
    let if_match = if_match(headers)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().map_err(|_| bad_request(Code::BadIdempotencyKey, "Idempotency-Key must be ASCII"))?;
            if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY || !k.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return Err(bad_request(
                    Code::BadIdempotencyKey,
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
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            no_nul(&v, "").map_err(IntoResponse::into_response)?;
        }
        let body: T =
            if bytes.is_empty() { parse(b"{}") } else { parse(&bytes) }.map_err(IntoResponse::into_response)?;
        let meta = meta(&parts, principal, &bytes).map_err(IntoResponse::into_response)?;
        Ok(Write { meta, body })
    }
}

/// PostgreSQL cannot store U+0000 in text or jsonb: a string that holds it is refused here,
/// whatever the field, naming it (422), before any rule or statement sees it.
fn no_nul(v: &serde_json::Value, path: &str) -> Result<(), Problem> {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains('\0') => {
            let field = if path.is_empty() { "body".to_owned() } else { path.to_owned() };
            let message = "must not contain the NUL character (U+0000)".to_owned();
            Err(Problem::validation(format!("{field}: {message}"), vec![FieldError { field, message }]))
        }
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| no_nul(item, &format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().try_for_each(|(k, item)| {
            let path = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            no_nul(item, &path)
        }),
        _ => Ok(()),
    }
}

/// A command that takes no body: the body must be empty or `{}` (400 otherwise), whatever its
/// content type, so these routes never answer 415 or 422 for it.
pub(crate) struct Bare {
    pub(crate) meta: WriteMeta,
}

impl<S: Send + Sync> FromRequest<S> for Bare {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let principal = Principal::from_request_parts(&mut parts, state).await?;
        let bytes = read_body(Request::from_parts(parts.clone(), body), state).await?;
        let empty = bytes.iter().all(u8::is_ascii_whitespace)
            || serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v == serde_json::json!({}));
        if !empty {
            return Err(bad_request(Code::UnexpectedBody, "this command takes no body (or an empty JSON object)")
                .into_response());
        }
        let meta = meta(&parts, principal, b"").map_err(IntoResponse::into_response)?;
        Ok(Bare { meta })
    }
}
