//! JSON request bodies with errors a client can act on: 415 for another media type, 413 past
//! the body limit, 400 for malformed JSON, 422 naming the field whose value or type is wrong.

use crate::codes::Code;
use crate::problem::{FieldError, Problem};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json(req.headers()).map_err(IntoResponse::into_response)?;
        let bytes = read_body(req, state).await?;
        parse(&bytes).map(JsonBody).map_err(IntoResponse::into_response)
    }
}

/// 415 unless the request says its body is JSON (`application/json` or `application/*+json`).
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), Problem> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false);
    if is_json {
        Ok(())
    } else {
        Err(Problem::new(Code::UnsupportedMediaType, "the body must be JSON with Content-Type: application/json"))
    }
}

/// The whole body, or 413 past the configured limit.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Response> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(Code::PayloadTooLarge, e.body_text()).into_response()
        } else {
            Problem::new(Code::BadRequest, e.body_text()).into_response()
        }
    })
}

/// Parses a body, telling malformed JSON (400) from JSON of the wrong shape (422 with the field).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // Syntax first, so that `{} trailing` is malformed rather than missing fields.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(Problem::new(Code::MalformedJson, e.to_string()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        let path = e.path().to_string();
        let message = strip_position(&inner.to_string());
        let field = field_of(&path, &message);
        Problem::validation(format!("{field}: {message}"), vec![FieldError { field, message }])
    })
}

/// serde names a missing field in its message, with the path pointing at its parent.
fn field_of(path: &str, message: &str) -> String {
    let named = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
    let parent = if path == "." { "" } else { path };
    match named {
        Some(name) if parent.is_empty() => name.to_owned(),
        Some(name) => format!("{parent}.{name}"),
        None if parent.is_empty() => "body".to_owned(),
        None => parent.to_owned(),
    }
}

fn strip_position(m: &str) -> String {
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_owned(),
        None => m.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Owner {
        email: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        owner: Owner,
    }

    #[test]
    fn malformed_json_is_400() {
        let p = parse::<Body>(b"{\"name\": ").unwrap_err();
        assert_eq!(p.status(), StatusCode::BAD_REQUEST);
        let p = parse::<Body>(b"{} trailing").unwrap_err();
        assert_eq!(p.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn wrong_shapes_name_their_field() {
        let p = parse::<Body>(br#"{"name": 5, "owner": {"email": "a"}}"#).unwrap_err();
        assert_eq!((p.status(), p.errors[0].field.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "name"));
        let p = parse::<Body>(br#"{"name": "x", "owner": {}}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "owner.email");
        let p = parse::<Body>(br#"{"name": "x", "owner": {"email": "a"}, "extra": 1}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "extra");
    }
}
