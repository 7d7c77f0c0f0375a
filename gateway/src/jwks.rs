//! Verification keys of an identity provider: a PEM public key, a JWKS document (a file, or a
//! URL fetched with a timeout, cached, refreshed at most once per cooldown, served stale while the
//! provider is unreachable). Each key verifies exactly one algorithm, taken from the key's type
//! (and its JWK `alg` when it names one): never from a token's header.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The largest JWKS document Keel reads (real ones are a few kilobytes).
const MAX_JWKS_BYTES: usize = 1 << 20;

/// A public key and the one algorithm it verifies.
#[derive(Clone)]
pub struct VerifyKey {
    pub(crate) key: DecodingKey,
    pub(crate) alg: Algorithm,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyKey({:?})", self.alg)
    }
}

impl VerifyKey {
    /// A PEM public key (SPKI or PKCS#1 RSA; SPKI EC on P-256 or P-384): RS256 for RSA, ES256 or
    /// ES384 by the curve.
    pub fn from_pem(pem: &[u8]) -> Result<VerifyKey, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(VerifyKey { key, alg: Algorithm::RS256 });
        }
        match DecodingKey::from_ec_pem(pem) {
            // The key is the uncompressed point: 1 + 2 × 32 bytes on P-256, 1 + 2 × 48 on P-384.
            Ok(key) => match key.try_get_as_bytes().map(<[u8]>::len) {
                Ok(65) => Ok(VerifyKey { key, alg: Algorithm::ES256 }),
                Ok(97) => Ok(VerifyKey { key, alg: Algorithm::ES384 }),
                _ => Err("the EC public key is on neither P-256 nor P-384".into()),
            },
            Err(_) => Err("not a PEM public key of RSA or EC type (`-----BEGIN PUBLIC KEY-----`)".into()),
        }
    }

    /// The key of one JWK and the algorithm it verifies; `Err` says why the key is not used.
    fn from_jwk(jwk: &Jwk) -> Result<VerifyKey, String> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return Err("its `use` is `enc`".into());
        }
        let named = jwk.common.key_algorithm;
        let alg = match (&jwk.algorithm, named) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS384)) => Algorithm::RS384,
            (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS512)) => Algorithm::RS512,
            (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS256)) => Algorithm::PS256,
            (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS384)) => Algorithm::PS384,
            (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS512)) => Algorithm::PS512,
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES384))
                if p.curve == EllipticCurve::P384 =>
            {
                Algorithm::ES384
            }
            (AlgorithmParameters::OctetKey(_), _) => return Err("symmetric keys are not accepted from a JWKS".into()),
            (_, Some(a)) => return Err(format!("its type does not fit its `alg` {a:?}, or Keel does not verify it")),
            (_, None) => return Err("Keel does not verify keys of its type".into()),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("cannot read it: {e}"))?;
        Ok(VerifyKey { key, alg })
    }
}

/// Keys by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyKey>,
}

impl KeySet {
    /// The usable keys of a JWKS document; keys without a `kid` or of a type Keel does not verify
    /// are skipped (and logged), and a document with none usable is an error.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, String> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                tracing::warn!("a JWKS key without `kid` is skipped");
                continue;
            };
            match VerifyKey::from_jwk(jwk) {
                Ok(k) => {
                    keys.insert(kid, k);
                }
                Err(why) => tracing::warn!(kid = %kid, "a JWKS key is skipped: {why}"),
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "the JWKS has no usable key (of {}; RSA and EC P-256/P-384 keys with a `kid`)",
                set.keys.len()
            ));
        }
        Ok(KeySet { keys })
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyKey> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// How a JWKS URL is followed.
#[derive(Debug, Clone)]
pub struct RemoteJwksConfig {
    pub url: String,
    /// A cached set older than this is fetched again in the background (requests go on with it).
    pub refresh: Duration,
    /// The least time between two fetches: an unknown `kid` fetches at most once per cooldown.
    pub cooldown: Duration,
    /// Deadline of one fetch.
    pub timeout: Duration,
}

/// A JWKS URL's keys. Requests read the cached set without waiting; a token with an unknown `kid`
/// fetches again, at most once per cooldown, and concurrent ones wait for that one fetch
/// (single-flight, at most its timeout) instead of starting their own. A failed fetch keeps the
/// keys it had.
pub struct RemoteJwks {
    config: RemoteJwksConfig,
    client: reqwest::Client,
    cached: RwLock<(Arc<KeySet>, Instant)>,
    /// The moment of the last fetch attempt; held during a fetch, so it is the single flight.
    gate: tokio::sync::Mutex<Option<Instant>>,
    /// Fetch attempts finished, so a waiter knows one happened while it waited.
    attempts: AtomicU64,
    refreshing: AtomicBool,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks").field("config", &self.config).finish_non_exhaustive()
    }
}

impl RemoteJwks {
    /// Fetches the set once: a provider unreachable at start-up is an error (nothing to serve yet).
    pub async fn start(config: RemoteJwksConfig) -> Result<Arc<RemoteJwks>, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let keys = fetch(&client, &config.url).await?;
        let remote = RemoteJwks {
            config,
            client,
            cached: RwLock::new((Arc::new(keys), Instant::now())),
            gate: tokio::sync::Mutex::new(Some(Instant::now())),
            attempts: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
        };
        Ok(Arc::new(remote))
    }

    fn current(&self) -> (Arc<KeySet>, Instant) {
        let c = self.cached.read().unwrap_or_else(|e| e.into_inner());
        (c.0.clone(), c.1)
    }

    /// The key for `kid`: from the cache; if the cache is older than the refresh interval, a
    /// background fetch starts (this request does not wait); if `kid` is unknown, one fetch per
    /// cooldown.
    pub async fn key(self: &Arc<Self>, kid: &str) -> Option<VerifyKey> {
        let seen = self.attempts.load(Ordering::Acquire);
        let (keys, fetched) = self.current();
        if let Some(k) = keys.get(kid) {
            if fetched.elapsed() >= self.config.refresh && !self.refreshing.swap(true, Ordering::AcqRel) {
                let this = self.clone();
                tokio::spawn(async move {
                    this.refetch(None).await;
                    this.refreshing.store(false, Ordering::Release);
                });
            }
            return Some(k.clone());
        }
        self.refetch(Some(seen)).await;
        self.current().0.get(kid).cloned()
    }

    /// Fetches unless one was attempted within the cooldown or (`seen`) finished while waiting.
    async fn refetch(&self, seen: Option<u64>) {
        let mut gate = self.gate.lock().await;
        if seen.is_some_and(|s| s != self.attempts.load(Ordering::Acquire)) {
            return;
        }
        if gate.is_some_and(|t| t.elapsed() < self.config.cooldown) {
            return;
        }
        *gate = Some(Instant::now());
        let outcome = match fetch(&self.client, &self.config.url).await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "fetched the JWKS");
                *self.cached.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(keys), Instant::now());
                "ok"
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the JWKS; the cached keys stay in use");
                "error"
            }
        };
        metrics::counter!("keel_jwks_fetches_total", "outcome" => outcome).increment(1);
        self.attempts.fetch_add(1, Ordering::AcqRel);
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<KeySet, String> {
    let mut response = client.get(url).send().await.map_err(|e| format!("GET {url}: {}", plain(&e)))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: status {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("GET {url}: {}", plain(&e)))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("GET {url}: the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
        }
    }
    KeySet::from_jwks(&body)
}

/// A reqwest error without its URL (already named) but with its cause.
fn plain(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "failed"
    };
    match std::error::Error::source(e) {
        Some(cause) => format!("{kind} ({cause})"),
        None => kind.to_owned(),
    }
}
