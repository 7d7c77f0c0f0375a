//! Bearer JWT authentication (HS256 with a shared secret). A token says who the caller is and
//! which tenant they act in; what they may do comes from their membership, looked up per request.

use crate::codes::Code;
use crate::problem::Problem;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

pub const PLATFORM_SCOPE: &str = "platform:admin";

/// The claims Keel reads and `keel token` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// A shared secret that never prints and is zeroed when dropped.
#[derive(Clone)]
pub struct Secret(SecretSlice<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into().into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub secret: Secret,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Who made a request, as far as the token can say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub tenant_id: Option<Uuid>,
    pub platform: bool,
}

impl Principal {
    /// The actor recorded in event metadata and logs.
    pub fn actor(&self) -> String {
        if self.platform { format!("platform:{}", self.subject) } else { format!("user:{}", self.subject) }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("the token is expired")]
    Expired,
    /// The token is well formed but its HS256 signature does not verify: it was signed with
    /// another secret (often a development secret of another data directory). The message names
    /// no secret, only what to check.
    #[error(
        "the token's signature does not verify: it was signed with a different secret or key than this server's \
         (a token from `keel token` must be made with the server's KEEL_JWT_SECRET or its data directory)"
    )]
    BadSignature,
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

pub struct Authenticator {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    config: JwtConfig,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn hs256(config: JwtConfig) -> Authenticator {
        // Only HS256 is accepted: `alg: none` and any other algorithm fail before the signature
        // is looked at, so a public key can never be used as an HMAC secret.
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        if config.issuer.is_some() {
            required.push("iss");
        }
        if config.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = 5;
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Authenticator {
            decoding: DecodingKey::from_secret(config.secret.0.expose_secret()),
            encoding: EncodingKey::from_secret(config.secret.0.expose_secret()),
            validation,
            config,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_until(token).map(|(p, _)| p)
    }

    /// The principal and the moment the token expires (its `exp`), for connections that outlive
    /// a request and must end when their token does.
    pub fn verify_until(&self, token: &str) -> Result<(Principal, SystemTime), AuthError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::BadSignature,
            other => AuthError::Invalid(format!("{other:?}")),
        })?;
        let c = data.claims;
        if c.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        let platform = c.scope.as_deref().is_some_and(|s| s.split(' ').any(|s| s == PLATFORM_SCOPE));
        if platform && c.tenant_id.is_some() {
            return Err(AuthError::Invalid("a platform token carries no tenant_id".into()));
        }
        Ok((Principal { subject: c.sub, tenant_id: c.tenant_id, platform }, UNIX_EPOCH + Duration::from_secs(c.exp)))
    }

    /// Signs a token for `keel token` and tests.
    pub fn issue(&self, subject: &str, tenant_id: Option<Uuid>, platform: bool, ttl: Duration) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            tenant_id,
            scope: platform.then(|| PLATFORM_SCOPE.to_owned()),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).expect("HS256 signing cannot fail")
    }
}

/// Middleware: verifies a bearer token when one is sent and puts the `Principal` in the request.
/// A request without a token goes on (health and docs need none); one with a bad token stops here.
pub async fn authenticate(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return next.run(req).await;
    };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let result = match token {
        Some(t) => auth.verify(t.trim()),
        None => Err(AuthError::Malformed),
    };
    match result {
        Ok(p) => {
            let span = tracing::Span::current();
            span.record("actor", p.actor());
            if let Some(t) = p.tenant_id {
                span.record("tenant_id", t.to_string());
            }
            let tenant = p.tenant_id;
            req.extensions_mut().insert(p);
            let mut res = next.run(req).await;
            if let Some(t) = tenant {
                res.extensions_mut().insert(crate::metrics::RequestTenant(t));
            }
            res
        }
        Err(e) => {
            tracing::info!(error = %e, "authentication failed");
            unauthorized(&e.to_string())
        }
    }
}

fn unauthorized(detail: &str) -> Response {
    let mut r = Problem::new(Code::Unauthorized, detail).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| unauthorized("a bearer token is required"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::hs256(JwtConfig {
            secret: Secret::new(b"0123456789abcdef0123456789abcdef".to_vec()),
            issuer: None,
            audience: None,
        })
    }

    #[test]
    fn issued_tokens_verify() {
        let a = auth();
        let t = Uuid::now_v7();
        let p = a.verify(&a.issue("u1", Some(t), false, Duration::from_secs(60))).unwrap();
        assert_eq!(p, Principal { subject: "u1".into(), tenant_id: Some(t), platform: false });
        assert!(a.verify(&a.issue("op", None, true, Duration::from_secs(60))).unwrap().platform);
    }

    #[test]
    fn other_secrets_and_garbage_fail() {
        let other = Authenticator::hs256(JwtConfig {
            secret: Secret::new(b"another secret".to_vec()),
            issuer: None,
            audience: None,
        });
        let token = other.issue("u1", None, false, Duration::from_secs(60));
        assert_eq!(auth().verify(&token), Err(AuthError::BadSignature));
        assert!(auth().verify("not.a.jwt").is_err());
    }

    #[test]
    fn the_secret_never_prints() {
        let shown = format!("{:?} {:#?}", auth(), auth());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("Secret(***)"), "{shown}");
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let strict = Authenticator::hs256(JwtConfig {
            secret: Secret::new(b"0123456789abcdef0123456789abcdef".to_vec()),
            issuer: Some("keel".into()),
            audience: Some("api".into()),
        });
        let loose = auth().issue("u1", None, false, Duration::from_secs(60));
        assert!(strict.verify(&loose).is_err());
        assert!(strict.verify(&strict.issue("u1", None, false, Duration::from_secs(60))).is_ok());
    }
}
