//! Bearer JWT authentication: RS256/ES256 against an identity provider's keys (a JWKS file or
//! URL, or a PEM public key), or HS256 with a shared secret for development. A token says who the
//! caller is and which tenant they act in; what they may do comes from their membership, looked
//! up per request.

use crate::codes::Code;
use crate::jwks::{KeySet, RemoteJwks, RemoteJwksConfig, VerifyKey};
use crate::problem::Problem;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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

/// Where the keys that verify tokens come from. Exactly one source is in force.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// HS256 with a shared secret (development; `keel up` makes one).
    Secret(Secret),
    /// One PEM public key, RSA (RS256) or EC (ES256, ES384); a token's `kid` is not needed.
    PublicKeyPem(Vec<u8>),
    /// A JWKS document read once at start-up; a token must name its key by `kid`.
    JwksDocument(Vec<u8>),
    /// A JWKS URL (an identity provider's `jwks_uri`).
    JwksUrl(RemoteJwksConfig),
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub keys: KeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl JwtConfig {
    /// HS256 with `secret`, no issuer or audience (tests and development).
    pub fn hs256(secret: Secret) -> JwtConfig {
        JwtConfig { keys: KeySource::Secret(secret), issuer: None, audience: None }
    }
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

/// Why a token is refused. Every message says what is wrong without any key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("the token is expired")]
    Expired,
    #[error("the token is not valid yet (its `nbf` is in the future)")]
    NotYetValid,
    /// The token is well formed but its signature does not verify: it was signed with another
    /// secret or key (often a development secret of another data directory). The message names
    /// no secret, only what to check.
    #[error(
        "the token's signature does not verify: it was signed with a different secret or key than this server's \
         (a token from `keel token` must be made with the server's KEEL_JWT_SECRET or its data directory)"
    )]
    BadSignature,
    #[error("the token is unsigned (`alg: none`): Keel accepts signed tokens only")]
    Unsigned,
    /// The header's `alg` is not the one the key verifies (an HS256 token against an RSA key:
    /// algorithm confusion; an ES256 token naming an RSA key: the wrong key type).
    #[error("the token's algorithm {token} does not fit the key that verifies it, which accepts {key} only")]
    WrongAlgorithm { token: String, key: String },
    #[error("the token names key {0:?}, which is not in the identity provider's key set")]
    UnknownKey(String),
    #[error("the token names no key (`kid`), and this server's key set needs one")]
    NoKeyId,
    #[error("the token's `iss` is not the issuer this server accepts")]
    Issuer,
    #[error("the token's `aud` is not the audience this server accepts")]
    Audience,
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

/// The keys tokens are checked against.
enum Verifier {
    Secret(VerifyKey),
    /// A PEM key: the one key, whatever `kid` says.
    Single(VerifyKey),
    Set(KeySet),
    Remote(Arc<RemoteJwks>),
}

/// Signs tokens for `keel token`, `keel up` and tests: HS256 with the secret, or RS256/ES256
/// with a private key (PEM) under a `kid`.
pub struct Signer {
    key: EncodingKey,
    header: Header,
    issuer: Option<String>,
    audience: Option<String>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({:?}, kid {:?})", self.header.alg, self.header.kid)
    }
}

impl Signer {
    pub fn hs256(secret: &Secret, issuer: Option<String>, audience: Option<String>) -> Signer {
        Signer {
            key: EncodingKey::from_secret(secret.0.expose_secret()),
            header: Header::new(Algorithm::HS256),
            issuer,
            audience,
        }
    }

    /// A private key in PEM (PKCS#1 or PKCS#8 RSA: RS256; SEC1 or PKCS#8 P-256 EC: ES256), its
    /// tokens carrying `kid`.
    pub fn private_pem(
        pem: &[u8],
        kid: Option<String>,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<Signer, String> {
        let (key, alg) = match EncodingKey::from_rsa_pem(pem) {
            Ok(k) => (k, Algorithm::RS256),
            Err(_) => match EncodingKey::from_ec_pem(pem) {
                Ok(k) => (k, Algorithm::ES256),
                Err(_) => return Err("not a PEM private key of RSA or EC (P-256) type".into()),
            },
        };
        let mut header = Header::new(alg);
        header.kid = kid;
        let signer = Signer { key, header, issuer, audience };
        // An EC key on another curve than P-256 fails here rather than on the first token.
        signer.sign(&Claims {
            sub: "check".into(),
            tenant_id: None,
            scope: None,
            exp: 0,
            iat: None,
            iss: None,
            aud: None,
        })?;
        Ok(signer)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.header.alg
    }

    fn sign(&self, claims: &Claims) -> Result<String, String> {
        encode(&self.header, claims, &self.key).map_err(|e| format!("cannot sign with this key: {e}"))
    }

    pub fn issue(&self, subject: &str, tenant_id: Option<Uuid>, platform: bool, ttl: Duration) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            tenant_id,
            scope: platform.then(|| PLATFORM_SCOPE.to_owned()),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        self.sign(&claims).expect("a key checked at construction signs")
    }
}

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

pub struct Authenticator {
    verifier: Verifier,
    signer: Option<Signer>,
    validation: Validation,
    config: JwtConfig,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// The authenticator of `config`: keys read (a JWKS URL fetched once) and checked now, so a
    /// bad key stops start-up.
    pub async fn new(config: JwtConfig) -> Result<Authenticator, String> {
        let verifier = match &config.keys {
            KeySource::Secret(s) => Verifier::Secret(VerifyKey {
                key: DecodingKey::from_secret(s.0.expose_secret()),
                alg: Algorithm::HS256,
            }),
            KeySource::PublicKeyPem(pem) => Verifier::Single(VerifyKey::from_pem(pem)?),
            KeySource::JwksDocument(json) => Verifier::Set(KeySet::from_jwks(json)?),
            KeySource::JwksUrl(remote) => Verifier::Remote(RemoteJwks::start(remote.clone()).await?),
        };
        Ok(Authenticator::with(verifier, config))
    }

    /// HS256 with the config's secret (panics on another key source: use `new`).
    pub fn hs256(config: JwtConfig) -> Authenticator {
        let KeySource::Secret(s) = &config.keys else { panic!("Authenticator::hs256 needs KeySource::Secret") };
        let key = VerifyKey { key: DecodingKey::from_secret(s.0.expose_secret()), alg: Algorithm::HS256 };
        Authenticator::with(Verifier::Secret(key), config)
    }

    fn with(verifier: Verifier, config: JwtConfig) -> Authenticator {
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        if config.issuer.is_some() {
            required.push("iss");
        }
        if config.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let signer = match &config.keys {
            KeySource::Secret(s) => Some(Signer::hs256(s, config.issuer.clone(), config.audience.clone())),
            _ => None,
        };
        Authenticator { verifier, signer, validation, config }
    }

    /// The signer of a shared-secret configuration; none when keys come from an identity provider
    /// (its tokens come from there).
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_until(token).await.map(|(p, _)| p)
    }

    /// The principal and the moment the token expires (its `exp`), for connections that outlive
    /// a request and must end when their token does.
    pub async fn verify_until(&self, token: &str) -> Result<(Principal, SystemTime), AuthError> {
        let (alg, kid) = header_of(token)?;
        let key = match &self.verifier {
            Verifier::Secret(k) | Verifier::Single(k) => k.clone(),
            Verifier::Set(set) => {
                let kid = kid.ok_or(AuthError::NoKeyId)?;
                set.get(&kid).cloned().ok_or_else(|| AuthError::UnknownKey(shown(&kid)))?
            }
            Verifier::Remote(remote) => {
                let kid = kid.ok_or(AuthError::NoKeyId)?;
                remote.key(&kid).await.ok_or_else(|| AuthError::UnknownKey(shown(&kid)))?
            }
        };
        // The algorithm is the key's: a header naming another one is refused before any
        // signature check, so an RSA public key is never used as an HMAC secret.
        if alg != format!("{:?}", key.alg) {
            return Err(AuthError::WrongAlgorithm { token: shown(&alg), key: format!("{:?}", key.alg) });
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.alg];
        let data = decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => AuthError::Expired,
                K::ImmatureSignature => AuthError::NotYetValid,
                K::InvalidSignature => AuthError::BadSignature,
                K::InvalidIssuer => AuthError::Issuer,
                K::InvalidAudience => AuthError::Audience,
                K::MissingRequiredClaim(c) => AuthError::Invalid(format!("the claim `{c}` is missing")),
                K::Json(_) => AuthError::Invalid("its claims are not the expected JSON".into()),
                other => AuthError::Invalid(format!("{other:?}")),
            }
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

    /// Signs a token with the shared secret, for `keel token` and tests (panics without one).
    pub fn issue(&self, subject: &str, tenant_id: Option<Uuid>, platform: bool, ttl: Duration) -> String {
        self.signer.as_ref().expect("only a shared-secret authenticator signs").issue(subject, tenant_id, platform, ttl)
    }
}

/// The header's `alg` and `kid`, read before any key is chosen; `alg: none` is refused here.
fn header_of(token: &str) -> Result<(String, Option<String>), AuthError> {
    #[derive(Deserialize)]
    struct Head {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(AuthError::Invalid("not a JWT (three base64url parts separated by dots)".into()));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| AuthError::Invalid("its header is not base64url".into()))?;
    let head: Head =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Invalid("its header is not JSON with `alg`".into()))?;
    if head.alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::Unsigned);
    }
    Ok((head.alg, head.kid))
}

/// A value from a token, bounded for a message.
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Middleware: verifies a bearer token when one is sent and puts the `Principal` in the request.
/// A request without a token goes on (health and docs need none); one with a bad token stops here.
pub async fn authenticate(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return next.run(req).await;
    };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let result = match token {
        Some(t) => auth.verify(t.trim()).await,
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

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn auth() -> Authenticator {
        Authenticator::hs256(JwtConfig::hs256(Secret::new(SECRET.to_vec())))
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    #[test]
    fn issued_tokens_verify() {
        let a = auth();
        let t = Uuid::now_v7();
        let p = block(a.verify(&a.issue("u1", Some(t), false, Duration::from_secs(60)))).unwrap();
        assert_eq!(p, Principal { subject: "u1".into(), tenant_id: Some(t), platform: false });
        assert!(block(a.verify(&a.issue("op", None, true, Duration::from_secs(60)))).unwrap().platform);
    }

    #[test]
    fn other_secrets_and_garbage_fail() {
        let other = Authenticator::hs256(JwtConfig::hs256(Secret::new(b"another secret".to_vec())));
        let token = other.issue("u1", None, false, Duration::from_secs(60));
        assert_eq!(block(auth().verify(&token)), Err(AuthError::BadSignature));
        assert!(block(auth().verify("not.a.jwt")).is_err());
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"u1","exp":99999999999}"#);
        assert_eq!(block(auth().verify(&format!("{head}.{body}."))), Err(AuthError::Unsigned));
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
            keys: KeySource::Secret(Secret::new(SECRET.to_vec())),
            issuer: Some("keel".into()),
            audience: Some("api".into()),
        });
        let loose = auth().issue("u1", None, false, Duration::from_secs(60));
        assert!(block(strict.verify(&loose)).is_err());
        assert!(block(strict.verify(&strict.issue("u1", None, false, Duration::from_secs(60)))).is_ok());
    }
}
