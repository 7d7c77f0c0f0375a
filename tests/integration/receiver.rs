//! A webhook receiver for the tests: a real HTTP server on a loopback port that records every
//! request (path, headers, body, arrival) and answers as the test sets it — 204, a status, or
//! after a sleep.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use keel_outbound::signature::{Secret, verify};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Ok,
    Status(u16),
    /// Answers 204 after this long (longer than an attempt's deadline: a hung receiver).
    Sleep(Duration),
}

#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    pub envelope: Value,
    pub at: Instant,
    /// What the receiver answered.
    pub answered: u16,
}

#[derive(Default)]
struct Inner {
    hits: Vec<Hit>,
    modes: HashMap<String, Mode>,
}

#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().route("/{path}", post(hook)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { base, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    pub fn set(&self, path: &str, mode: Mode) {
        self.inner.lock().unwrap().modes.insert(path.to_owned(), mode);
    }

    /// Every request to `path`, in arrival order.
    pub fn hits(&self, path: &str) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.iter().filter(|h| h.path == path).cloned().collect()
    }

    /// The requests to `path` it answered 2xx, in order.
    pub fn delivered(&self, path: &str) -> Vec<Hit> {
        self.hits(path).into_iter().filter(|h| (200..300).contains(&h.answered)).collect()
    }

    /// Waits until `path` has had `n` deliveries answered 2xx (panics after `within`).
    pub async fn wait_delivered(&self, path: &str, n: usize, within: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let d = self.delivered(path);
            if d.len() >= n {
                return d;
            }
            assert!(Instant::now() < deadline, "{path}: {} of {n} delivered within {within:?}", d.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `path` has had `n` requests of any answer.
    pub async fn wait_hits(&self, path: &str, n: usize, within: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let d = self.hits(path);
            if d.len() >= n {
                return d;
            }
            assert!(Instant::now() < deadline, "{path}: {} of {n} requests within {within:?}", d.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Hit {
    /// Checks the Standard Webhooks signature with `secret`, as a receiver would.
    pub fn verify(&self, secret: &str) -> bool {
        let secret = Secret::parse(secret).unwrap();
        verify(&secret, &self.id, &self.timestamp, &self.signature, &self.body, chrono::Utc::now().timestamp()).is_ok()
    }
}

async fn hook(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mode = inner.lock().unwrap().modes.get(&path).copied().unwrap_or(Mode::Ok);
    let answered = match mode {
        Mode::Ok => 204,
        Mode::Status(s) => s,
        Mode::Sleep(d) => {
            tokio::time::sleep(d).await;
            204
        }
    };
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    inner.lock().unwrap().hits.push(Hit {
        path,
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        envelope: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body: body.to_vec(),
        at: Instant::now(),
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}
