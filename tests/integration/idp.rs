//! Identity providers: RS256/ES256 tokens verified against a JWKS served on a real loopback port
//! (or a JWKS file, or a PEM public key), with key pairs made here; every refusal; the tenant and
//! role from the membership; a key rotation under load; the provider down; an unknown-`kid` storm.

use crate::helpers::{Options, TestApp, spawn_app_with};
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keel_domain::TenantId;
use keel_gateway::{Authenticator, JwtConfig, KeySource, RemoteJwksConfig};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://idp.test/";
const AUDIENCE: &str = "keel-api";

/// A key pair made in the test: PEMs (PKCS#8 private, SPKI public) and its JWK.
struct Pair {
    private_pem: String,
    public_pem: String,
    alg: Algorithm,
    jwk: Value,
}

impl Pair {
    fn jwk(&self, kid: &str) -> Value {
        let mut j = self.jwk.clone();
        j["kid"] = json!(kid);
        j["use"] = json!("sig");
        j
    }

    fn encoding(&self) -> EncodingKey {
        match self.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(self.private_pem.as_bytes()).unwrap(),
        }
    }

    fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &self.encoding()).unwrap()
    }
}

/// One RSA key for the whole test binary (made once: 2048 bits take a while unoptimised).
fn rsa_pair() -> &'static Pair {
    static KEY: OnceLock<Pair> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let public = key.to_public_key();
        Pair {
            private_pem: rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, LineEnding::LF).unwrap().to_string(),
            public_pem: rsa::pkcs8::EncodePublicKey::to_public_key_pem(&public, LineEnding::LF).unwrap(),
            alg: Algorithm::RS256,
            jwk: json!({"kty": "RSA", "alg": "RS256",
                        "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                        "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be())}),
        }
    })
}

fn ec_pair() -> Pair {
    let key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let point = key.public_key().to_encoded_point(false);
    Pair {
        private_pem: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: key.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        alg: Algorithm::ES256,
        jwk: json!({"kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                    "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())}),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims(sub: &str, tenant: Option<TenantId>) -> Value {
    let mut c = json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600});
    match tenant {
        Some(t) => c["tenant_id"] = json!(t.0),
        None => c["scope"] = json!("platform:admin"),
    }
    c
}

/// A JWKS endpoint on a loopback port that counts its fetches; `mode` 1 answers 503, 2 hangs.
struct Provider {
    url: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    mode: Arc<AtomicU8>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ProviderState {
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    mode: Arc<AtomicU8>,
}

async fn serve_jwks(State(s): State<ProviderState>) -> axum::response::Response {
    s.fetches.fetch_add(1, Ordering::SeqCst);
    match s.mode.load(Ordering::SeqCst) {
        1 => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
        2 => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            axum::http::StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        _ => axum::Json(s.jwks.lock().unwrap().clone()).into_response(),
    }
}

async fn provider(keys: Vec<Value>) -> Provider {
    let state = ProviderState {
        jwks: Arc::new(Mutex::new(json!({ "keys": keys }))),
        fetches: Arc::new(AtomicUsize::new(0)),
        mode: Arc::new(AtomicU8::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    let router = Router::new().route("/.well-known/jwks.json", get(serve_jwks)).with_state(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Provider { url, jwks: state.jwks, fetches: state.fetches, mode: state.mode, server }
}

impl Provider {
    fn set_keys(&self, keys: Vec<Value>) {
        *self.jwks.lock().unwrap() = json!({ "keys": keys });
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn remote(p: &Provider, cooldown: Duration, timeout: Duration) -> JwtConfig {
    remote_refreshed(p, Duration::from_secs(300), cooldown, timeout)
}

fn remote_refreshed(p: &Provider, refresh: Duration, cooldown: Duration, timeout: Duration) -> JwtConfig {
    JwtConfig {
        keys: KeySource::JwksUrl(RemoteJwksConfig { url: p.url.clone(), refresh, cooldown, timeout }),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
    }
}

async fn app_with(jwt: JwtConfig) -> TestApp {
    spawn_app_with(Options { jwt: Some(jwt), ..Options::default() }).await
}

/// A project created with `token`: its status and body.
async fn create(app: &TestApp, token: &str, name: &str) -> (u16, Value) {
    let r = app.post("/api/v1/projects", token, json!({"name": name})).await;
    (r.status, r.body)
}

/// A task created with `token` in `project` (tasks have no plan limit): its status and body.
async fn task(app: &TestApp, token: &str, project: &str, title: &str) -> (u16, Value) {
    let r = app.post(&format!("/api/v1/projects/{project}/tasks"), token, json!({"title": title})).await;
    (r.status, r.body)
}

/// A 401 problem whose detail says `words`, and nothing of the token.
async fn refused(app: &TestApp, token: &str, words: &str) {
    let r = app.post("/api/v1/projects", token, json!({"name": "Nope"})).await;
    assert_eq!(r.status, 401, "expected 401 ({words}): {}", r.body);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(words), "detail {detail:?} should say {words:?}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(signature.is_empty() || !detail.contains(signature), "the detail repeats the token: {detail}");
    assert!(!detail.contains("BEGIN"), "the detail shows a key: {detail}");
}

#[tokio::test]
async fn rs256_and_es256_tokens_from_a_jwks_url_work_on_rest_and_graphql_with_roles_from_the_membership() {
    let (rsa, ec) = (rsa_pair(), ec_pair());
    let idp = provider(vec![rsa.jwk("rsa-1"), ec.jwk("ec-1")]).await;
    let app = app_with(remote(&idp, Duration::from_secs(1), Duration::from_secs(3))).await;
    let tenant = app.db.provision("idp", "owner-idp").await;
    let other = app.db.provision("idp-other", "owner-other").await;

    let owner_rs = rsa.sign(Some("rsa-1"), &claims("owner-idp", Some(tenant)));
    let owner_es = ec.sign(Some("ec-1"), &claims("owner-idp", Some(tenant)));
    let (status, body) = create(&app, &owner_rs, "Over RS256").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = create(&app, &owner_es, "Over ES256").await;
    assert_eq!(status, 201, "{body}");
    for token in [&owner_rs, &owner_es] {
        let r = app.graphql(token, "{ projects(first: 5) { totalCount } }", None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.get("errors").is_none(), "{}", r.body);
        assert!(r.body["data"]["projects"]["totalCount"].is_number(), "{}", r.body);
    }
    // A platform token from the provider provisions a tenant.
    let platform = rsa.sign(Some("rsa-1"), &claims("operator", None));
    let r = app
        .post(
            "/api/v1/tenants",
            &platform,
            json!({"name": "Via IdP", "slug": "via-idp", "plan": "free",
                   "owner": {"user_id": "o", "email": "o@via.test", "name": "O"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // A viewer's token claiming to be an owner (and an admin of everything) still acts as a viewer.
    let r = app
        .post(
            "/api/v1/members",
            &owner_rs,
            json!({"user_id": "vera", "email": "vera@idp.test", "name": "Vera", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut forged = claims("vera", Some(tenant));
    forged["role"] = json!("owner");
    forged["roles"] = json!(["owner", "admin"]);
    forged["https://keel/role"] = json!("owner");
    forged["scope"] = json!("projects:write");
    let vera = rsa.sign(Some("rsa-1"), &forged);
    let (status, body) = create(&app, &vera, "Forged").await;
    assert_eq!(status, 403, "a forged role claim must not grant a write: {body}");
    let r = app.graphql(&vera, "{ projects(first: 5) { totalCount } }", None).await;
    assert!(r.body.get("errors").is_none(), "a viewer reads: {}", r.body);
    // The same user naming another tenant is not a member there.
    let (status, body) = create(&app, &rsa.sign(Some("rsa-1"), &claims("vera", Some(other))), "Elsewhere").await;
    assert_eq!(status, 403, "{body}");
    // Wrong issuer or audience, or none: 401.
    for (field, value) in [("iss", json!("https://evil.test/")), ("aud", json!("other-api"))] {
        let mut c = claims("owner-idp", Some(tenant));
        c[field] = value;
        refused(&app, &rsa.sign(Some("rsa-1"), &c), if field == "iss" { "`iss`" } else { "`aud`" }).await;
        c.as_object_mut().unwrap().remove(field);
        refused(&app, &rsa.sign(Some("rsa-1"), &c), &format!("`{field}` is missing")).await;
    }
}

#[tokio::test]
async fn every_refusal_is_a_401_problem_that_says_why() {
    let (rsa, ec, stranger) = (rsa_pair(), ec_pair(), ec_pair());
    let idp = provider(vec![rsa.jwk("rsa-1"), ec.jwk("ec-1")]).await;
    let app = app_with(remote(&idp, Duration::from_secs(1), Duration::from_secs(3))).await;
    let tenant = app.db.provision("refusals", "owner-r").await;
    let good = claims("owner-r", Some(tenant));

    // `alg: none`.
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
    let body = URL_SAFE_NO_PAD.encode(good.to_string());
    refused(&app, &format!("{head}.{body}."), "unsigned").await;
    // Algorithm confusion: HS256 with the RSA public key (as its PEM, and as its JWK's modulus) for a secret.
    for secret in [rsa.public_pem.as_bytes().to_vec(), rsa.jwk["n"].as_str().unwrap().as_bytes().to_vec()] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa-1".into());
        let token = jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(&secret)).unwrap();
        refused(&app, &token, "algorithm HS256 does not fit the key").await;
    }
    // A key of the wrong type: an ES256 token naming the RSA key, an RS256 one naming the EC key.
    refused(&app, &ec.sign(Some("rsa-1"), &good), "algorithm ES256 does not fit the key").await;
    refused(&app, &rsa.sign(Some("ec-1"), &good), "algorithm RS256 does not fit the key").await;
    // A kid not in the set, and no kid at all.
    refused(&app, &stranger.sign(Some("somebody-else"), &good), "\"somebody-else\", which is not in").await;
    refused(&app, &ec.sign(None, &good), "names no key").await;
    // Signed by another key under a listed kid.
    refused(&app, &stranger.sign(Some("ec-1"), &good), "signature does not verify").await;
    // Expired; not valid yet; `nbf` inside the leeway is fine.
    let mut c = good.clone();
    c["exp"] = json!(now() - 120);
    refused(&app, &ec.sign(Some("ec-1"), &c), "expired").await;
    let mut c = good.clone();
    c["nbf"] = json!(now() + 120);
    refused(&app, &ec.sign(Some("ec-1"), &c), "not valid yet").await;
    c["nbf"] = json!(now() + 2);
    let (status, body) = create(&app, &ec.sign(Some("ec-1"), &c), "Within leeway").await;
    assert_eq!(status, 201, "{body}");
    // GraphQL refuses the same way.
    let r = app.graphql(&ec.sign(Some("rsa-1"), &good), "{ projects(first: 1) { totalCount } }", None).await;
    assert_eq!(r.status, 401, "{}", r.body);
}

#[tokio::test]
async fn a_pem_public_key_or_a_jwks_file_verifies_by_key_type() {
    let (rsa, ec) = (rsa_pair(), ec_pair());
    let jwt = |keys| JwtConfig { keys, issuer: None, audience: None };
    let mut c = claims("u1", Some(TenantId::new_v7()));
    c.as_object_mut().unwrap().remove("aud");

    // RSA PEM: RS256 only; HS256 signed with the PEM itself is refused before any HMAC.
    let by_rsa = Authenticator::new(jwt(KeySource::PublicKeyPem(rsa.public_pem.clone().into_bytes()))).await.unwrap();
    assert_eq!(by_rsa.verify(&rsa.sign(None, &c)).await.unwrap().subject, "u1");
    let confused =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &EncodingKey::from_secret(rsa.public_pem.as_bytes()))
            .unwrap();
    let e = by_rsa.verify(&confused).await.unwrap_err().to_string();
    assert!(e.contains("HS256 does not fit"), "{e}");
    assert!(by_rsa.verify(&ec.sign(None, &c)).await.is_err());
    // EC PEM: ES256 only.
    let by_ec = Authenticator::new(jwt(KeySource::PublicKeyPem(ec.public_pem.clone().into_bytes()))).await.unwrap();
    assert!(by_ec.verify(&ec.sign(Some("any"), &c)).await.is_ok());
    assert!(by_ec.verify(&rsa.sign(None, &c)).await.unwrap_err().to_string().contains("RS256 does not fit"));
    // A JWKS file: by kid; a symmetric key in it is skipped, so it cannot verify anything.
    let doc = json!({"keys": [rsa.jwk("r"), ec.jwk("e"), {"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]});
    let by_file = Authenticator::new(jwt(KeySource::JwksDocument(doc.to_string().into_bytes()))).await.unwrap();
    assert!(by_file.verify(&rsa.sign(Some("r"), &c)).await.is_ok());
    assert!(by_file.verify(&ec.sign(Some("e"), &c)).await.is_ok());
    let hs = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("s".into());
        jsonwebtoken::encode(&h, &c, &EncodingKey::from_secret(b"secret")).unwrap()
    };
    assert!(by_file.verify(&hs).await.unwrap_err().to_string().contains("not in the identity provider's key set"));
    // Keys that cannot work stop start-up.
    assert!(Authenticator::new(jwt(KeySource::PublicKeyPem(b"not a key".to_vec()))).await.is_err());
    assert!(Authenticator::new(jwt(KeySource::JwksDocument(br#"{"keys": []}"#.to_vec()))).await.is_err());
    // `keel token --key-file` signs with the private half: RS256 or ES256 by the key's type.
    for (pair, alg) in [(rsa, Algorithm::RS256), (&ec, Algorithm::ES256)] {
        let signer =
            keel_gateway::Signer::private_pem(pair.private_pem.as_bytes(), Some("r".into()), None, None).unwrap();
        assert_eq!(signer.algorithm(), alg);
        let token = signer.issue("dev", None, true, Duration::from_secs(60));
        let verifier = if alg == Algorithm::RS256 { &by_rsa } else { &by_ec };
        assert!(verifier.verify(&token).await.unwrap().platform);
    }
}

#[tokio::test]
async fn a_key_rotation_under_load_fails_no_request() {
    let (rsa, ec) = (rsa_pair(), ec_pair());
    let idp = provider(vec![rsa.jwk("old")]).await;
    let app = Arc::new(app_with(remote(&idp, Duration::from_millis(500), Duration::from_secs(3))).await);
    let tenant = app.db.provision("rotation", "owner-rot").await;
    let token = Arc::new(Mutex::new(rsa.sign(Some("old"), &claims("owner-rot", Some(tenant)))));
    let first = token.lock().unwrap().clone();
    let (status, body) = create(&app, &first, "Rotation").await;
    assert_eq!(status, 201, "{body}");
    let project = Arc::new(body["id"].as_str().unwrap().to_owned());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (app, token, stop, project) = (app.clone(), token.clone(), stop.clone(), project.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let t = token.lock().unwrap().clone();
                let r = if n % 2 == 0 {
                    app.graphql(&t, "{ projects(first: 1) { totalCount } }", None).await
                } else {
                    app.post(&format!("/api/v1/projects/{project}/tasks"), &t, json!({"title": format!("W{w}-{n}")}))
                        .await
                };
                if (r.status == 200 && r.body.get("errors").is_none()) || r.status == 201 {
                    ok += 1;
                } else {
                    failed.push(format!("{}: {}", r.status, r.body));
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The provider publishes the new key beside the old, then signs with it; later drops the old.
    idp.set_keys(vec![rsa.jwk("old"), ec.jwk("new")]);
    *token.lock().unwrap() = ec.sign(Some("new"), &claims("owner-rot", Some(tenant)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    idp.set_keys(vec![ec.jwk("new")]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed) = (0, Vec::new());
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rotation: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok >= 40, "the load ran ({ok} requests)");
    // One fetch at start-up, one for the new kid: the concurrent first uses of `new` shared it.
    assert_eq!(idp.fetches(), 2, "fetches of the JWKS");
}

#[tokio::test]
async fn unknown_kid_storms_fetch_once_per_cooldown_and_a_provider_down_leaves_the_cached_keys() {
    let (rsa, ghost) = (rsa_pair(), ec_pair());
    let idp = provider(vec![rsa.jwk("rsa-1")]).await;
    let cooldown = Duration::from_secs(2);
    let app = Arc::new(app_with(remote(&idp, cooldown, Duration::from_millis(1500))).await);
    let tenant = app.db.provision("storm", "owner-s").await;
    let good = rsa.sign(Some("rsa-1"), &claims("owner-s", Some(tenant)));
    assert_eq!(idp.fetches(), 1, "the start-up fetch");
    let (status, body) = create(&app, &good, "Storms").await;
    assert_eq!(status, 201, "{body}");
    let project = body["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(cooldown + Duration::from_millis(200)).await;

    // 60 concurrent tokens, each naming another unknown kid: one fetch, all 401.
    let storm = |round: usize| {
        let app = app.clone();
        let tokens: Vec<String> = (0..60)
            .map(|i| ghost.sign(Some(&format!("ghost-{round}-{i}")), &claims("owner-s", Some(tenant))))
            .collect();
        async move {
            let replies = futures::future::join_all(
                tokens.iter().map(|t| app.post("/api/v1/projects", t, json!({"name": "Ghost"}))),
            )
            .await;
            assert!(replies.iter().all(|r| r.status == 401), "every unknown kid is refused");
        }
    };
    storm(0).await;
    assert_eq!(idp.fetches(), 2, "a storm of unknown kids fetches once");
    storm(1).await;
    assert_eq!(idp.fetches(), 2, "and not again within the cooldown");
    let (status, body) = task(&app, &good, &project, "During storms").await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(cooldown + Duration::from_millis(200)).await;
    storm(2).await;
    assert_eq!(idp.fetches(), 3, "once more after the cooldown");

    // The provider hangs: an unknown kid waits for the one fetch (until its timeout), while
    // requests with a known kid go on at once.
    tokio::time::sleep(cooldown + Duration::from_millis(200)).await;
    idp.mode.store(2, Ordering::SeqCst);
    let waiting = {
        let app = app.clone();
        let t = ghost.sign(Some("ghost-hang"), &claims("owner-s", Some(tenant)));
        tokio::spawn(async move {
            let started = Instant::now();
            let r = app.post("/api/v1/projects", &t, json!({"name": "Ghost"})).await;
            (r.status, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 0..3 {
        let (status, body) = task(&app, &good, &project, &format!("While hung {i}")).await;
        assert_eq!(status, 201, "{body}");
    }
    assert!(!waiting.is_finished(), "known kids were answered while the fetch hung");
    let (status, waited) = waiting.await.unwrap();
    assert_eq!(status, 401);
    assert!(waited < Duration::from_secs(5), "the fetch's timeout bounds the wait ({waited:?})");

    // The provider is gone: the cached keys still verify, and the failed fetches show in /metrics.
    idp.mode.store(1, Ordering::SeqCst);
    idp.server.abort();
    tokio::time::sleep(cooldown + Duration::from_millis(200)).await;
    refused(&app, &ghost.sign(Some("ghost-gone"), &claims("owner-s", Some(tenant))), "not in the identity").await;
    let (status, body) = task(&app, &good, &project, "Provider gone").await;
    assert_eq!(status, 201, "cached keys verify while the provider is down: {body}");
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"keel_jwks_fetches_total{outcome="error"}"#), "{metrics}");
}

#[tokio::test]
async fn a_key_the_provider_removed_stops_verifying_after_the_refresh_interval() {
    let (rsa, ec) = (rsa_pair(), ec_pair());
    let idp = provider(vec![rsa.jwk("rsa-1"), ec.jwk("ec-1")]).await;
    let refresh = Duration::from_secs(1);
    let app = app_with(remote_refreshed(&idp, refresh, Duration::from_millis(500), Duration::from_secs(3))).await;
    let tenant = app.db.provision("refresh", "owner-f").await;
    let (rs, es) = (
        rsa.sign(Some("rsa-1"), &claims("owner-f", Some(tenant))),
        ec.sign(Some("ec-1"), &claims("owner-f", Some(tenant))),
    );
    let (status, body) = create(&app, &es, "Before").await;
    assert_eq!(status, 201, "{body}");
    let project = body["id"].as_str().unwrap().to_owned();
    idp.set_keys(vec![rsa.jwk("rsa-1")]);
    tokio::time::sleep(refresh + Duration::from_millis(200)).await;
    // The set is older than the interval: this request is answered from it and starts a refresh.
    let (status, body) = task(&app, &rs, &project, "Starts the refresh").await;
    assert_eq!(status, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while idp.fetches() < 2 {
        assert!(Instant::now() < deadline, "the background refresh fetched the set");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    refused(&app, &es, "\"ec-1\", which is not in").await;
    let (status, body) = task(&app, &rs, &project, "After").await;
    assert_eq!(status, 201, "{body}");
}

/// `keel token --key-file` signs for a server verifying with the public half; a secret beside a
/// provider's keys stops start-up naming both.
#[tokio::test]
async fn keel_token_signs_with_a_private_key_file_and_key_sources_are_exclusive() {
    const KEEL: &str = env!("CARGO_BIN_EXE_keel");
    let (rsa, ec) = (rsa_pair(), ec_pair());
    let dir = std::env::temp_dir().join(format!("keel-idp-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    for (pair, name) in [(rsa, "rsa"), (&ec, "ec")] {
        let key = dir.join(format!("{name}.pem"));
        std::fs::write(&key, &pair.private_pem).unwrap();
        let out = tokio::process::Command::new(KEEL)
            .args(["token", "--platform", "--key-file"])
            .arg(&key)
            .args(["--kid", "dev-1"])
            .env_remove("KEEL_JWT_SECRET")
            .env("KEEL_DATA_DIR", &dir)
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!((header.alg, header.kid.as_deref()), (pair.alg, Some("dev-1")));
        let server = Authenticator::new(JwtConfig {
            keys: KeySource::PublicKeyPem(pair.public_pem.clone().into_bytes()),
            issuer: None,
            audience: None,
        })
        .await
        .unwrap();
        assert!(server.verify(&token).await.unwrap().platform);
    }
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [rsa.jwk("rsa-1")]}).to_string()).unwrap();
    let out = tokio::process::Command::new(KEEL)
        .args(["serve"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("KEEL_JWT_SECRET", "a-development-secret-of-32-bytes-or-more")
        .env("KEEL_JWT_JWKS_FILE", &jwks)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("KEEL_JWT_JWKS_FILE and KEEL_JWT_SECRET are exclusive"), "{err}");
    assert!(!err.contains("a-development-secret"), "the secret is printed: {err}");
    std::fs::remove_dir_all(&dir).ok();
}
