//! The building blocks of webhook delivery (`keel_outbound::{signature, safe_client}`,
//! docs/integration.md "Verifying a webhook") against real receivers on loopback ports: Keel's
//! signatures verified by the independent `standardwebhooks` package from PyPI, and the
//! delivery client's refusals, redirect, deadline and bounded body.

use keel_outbound::destination::DestinationPolicy;
use keel_outbound::safe_client::{Attempt, ErrorKind, SafeClient, SafeClientConfig};
use keel_outbound::signature::{Headers, Secret};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the receiver answers.
#[derive(Clone)]
enum Answer {
    Status(u16, String),
    Redirect(String),
    Sleep(Duration),
}

/// One request as the receiver read it off the wire.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A small real HTTP/1.1 receiver on 127.0.0.1: records every request, answers `answer`.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (r, c) = (received.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                *c.lock().unwrap() += 1;
                tokio::spawn(serve(socket, answer.clone(), r.clone()));
            }
        });
        Receiver { addr, received, connections }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.addr.port())
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

async fn serve(mut socket: TcpStream, answer: Answer, received: Arc<Mutex<Vec<Received>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    received.lock().unwrap().push(Received { path, headers, body });
    let response = match answer {
        Answer::Status(code, text) => format!(
            "HTTP/1.1 {code} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        ),
        Answer::Redirect(to) => {
            format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        }
        Answer::Sleep(d) => {
            tokio::time::sleep(d).await;
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
        }
    };
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

fn client(allow_http: bool, allow_private: bool, deadline: Duration) -> SafeClient {
    SafeClient::new(SafeClientConfig {
        policy: DestinationPolicy { allow_http, allow_private },
        deadline,
        max_body: 64,
    })
    .unwrap()
}

/// Loopback receivers are reached only with both allowances, as in tests and development.
fn open_client() -> SafeClient {
    client(true, true, Duration::from_secs(10))
}

fn assert_kind(a: &Attempt, kind: ErrorKind) {
    assert_eq!(a.kind(), Some(kind), "{a:?}");
}

/// The Python with the `standardwebhooks` package: `KEEL_TEST_PYTHON`, else the venv `.ci/run`
/// installs it into, else `python3`.
fn python() -> String {
    if let Ok(p) = std::env::var("KEEL_TEST_PYTHON") {
        return p;
    }
    let venv = format!("{}/.cache/keel/pyvenv/bin/python", std::env::var("HOME").unwrap_or_default());
    if std::path::Path::new(&venv).exists() { venv } else { "python3".into() }
}

const VERIFY_PY: &str = r#"
import json, sys
from standardwebhooks import Webhook
body = sys.stdin.buffer.read()
headers = json.loads(sys.argv[2])
try:
    payload = Webhook(sys.argv[1]).verify(body, headers)
except Exception as e:
    print(type(e).__name__, e)
    sys.exit(3)
print(json.dumps(payload))
"#;

/// Runs the reference verifier on what the receiver got: Ok(parsed body) or Err(its message).
async fn python_verify(secret: &str, got: &Received) -> Result<serde_json::Value, String> {
    let headers: HashMap<&str, &str> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .map(|h| (h, got.headers.get(h).map(String::as_str).unwrap_or("")))
        .collect();
    let mut child = tokio::process::Command::new(python())
        .args(["-c", VERIFY_PY, secret, &serde_json::to_string(&headers).unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(&got.body).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) => Ok(serde_json::from_str(&stdout).unwrap()),
        Some(3) => Err(stdout),
        _ => panic!(
            "the standardwebhooks package did not run ({}): {}; .ci/run installs it",
            python(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test]
async fn the_standardwebhooks_package_verifies_keels_signatures_and_refuses_a_wrong_secret() {
    let receiver = Receiver::start(Answer::Status(204, String::new())).await;
    let (old, new) = (Secret::generate(), Secret::generate());
    // A body with non-ASCII text and escapes: the signature covers the exact bytes sent.
    let body = serde_json::to_vec(&serde_json::json!({
        "type": "ProjectCreated", "id": "0193f1c2-7a4e-7c1a-9d1e-1f2a3b4c5d6e",
        "data": { "name": "Zürich \"Ω\" ✓", "n": 2432232314u64 }
    }))
    .unwrap();
    let now = chrono::Utc::now().timestamp();
    let id = "0193f1c2-7a4e-7c1a-9d1e-1f2a3b4c5d6e";

    // A rotation's grace period: both secrets sign one delivery.
    let headers = Headers::new(&[&new, &old], id, now, &body);
    let attempt = open_client()
        .post(&receiver.url("127.0.0.1", "/hook"), &headers.pairs().map(|(n, v)| (n, v)), body.clone())
        .await;
    assert!(attempt.delivered(), "{attempt:?}");
    assert_eq!(attempt.status, Some(204));
    let got = receiver.received().pop().expect("the receiver got the delivery");
    assert_eq!(got.body, body, "the bytes signed are the bytes sent");
    assert_eq!(got.path, "/hook");
    assert_eq!(got.headers["webhook-id"], id);
    assert_eq!(got.headers["content-type"], "application/json");

    for secret in [&new, &old] {
        let payload = python_verify(&secret.expose(), &got).await.expect("verifies");
        assert_eq!(payload["data"]["name"], "Zürich \"Ω\" ✓");
    }
    let wrong = python_verify(&Secret::generate().expose(), &got).await;
    assert!(wrong.as_ref().is_err_and(|e| e.contains("No matching signature")), "{wrong:?}");

    // One secret only (after the grace period): the old one no longer verifies.
    let headers = Headers::new(&[&new], id, now, &body);
    let attempt = open_client()
        .post(&receiver.url("127.0.0.1", "/hook"), &headers.pairs().map(|(n, v)| (n, v)), body.clone())
        .await;
    assert!(attempt.delivered(), "{attempt:?}");
    let got = receiver.received().pop().unwrap();
    assert!(python_verify(&new.expose(), &got).await.is_ok());
    assert!(python_verify(&old.expose(), &got).await.is_err());

    // A changed body, and a timestamp outside the five minutes, are refused too.
    let mut tampered = got.clone();
    tampered.body = body.iter().map(|b| if *b == b'2' { b'3' } else { *b }).collect();
    assert!(python_verify(&new.expose(), &tampered).await.is_err());
    let stale = Headers::new(&[&new], id, now - 3600, &body);
    let mut old_delivery = got.clone();
    old_delivery.headers.insert("webhook-timestamp".into(), stale.timestamp.to_string());
    old_delivery.headers.insert("webhook-signature".into(), stale.signature);
    let e = python_verify(&new.expose(), &old_delivery).await;
    assert!(e.as_ref().is_err_and(|e| e.contains("too old")), "{e:?}");
}

#[tokio::test]
async fn loopback_is_refused_without_allow_private_and_reached_with_it() {
    let receiver = Receiver::start(Answer::Status(200, "ok".into())).await;
    let strict = client(true, false, Duration::from_secs(10));
    for host in ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433"] {
        let a = strict.post(&receiver.url(host, "/"), &[], b"{}".to_vec()).await;
        assert_kind(&a, ErrorKind::Refused);
        assert_eq!(a.status, None);
        let message = &a.error.as_ref().unwrap().message;
        assert!(message.contains("loopback"), "{host}: {message}");
    }
    assert_eq!(receiver.connections(), 0, "nothing reached the receiver");

    // `localhost` goes through the resolver (a name): refused there, at connect time.
    let open = open_client();
    for host in ["127.0.0.1", "localhost"] {
        let a = open.post(&receiver.url(host, "/"), &[], b"{}".to_vec()).await;
        assert!(a.delivered(), "{host}: {a:?}");
        assert_eq!((a.status, a.body.as_str()), (Some(200), "ok"));
    }
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn plain_http_is_refused_without_allow_http() {
    let receiver = Receiver::start(Answer::Status(200, String::new())).await;
    let a =
        client(false, true, Duration::from_secs(10)).post(&receiver.url("127.0.0.1", "/"), &[], b"{}".to_vec()).await;
    assert_kind(&a, ErrorKind::Refused);
    assert!(a.error.unwrap().message.contains("https"));
    // A name goes the same way: the scheme is checked before anything resolves.
    let a =
        client(false, true, Duration::from_secs(10)).post(&receiver.url("localhost", "/"), &[], b"{}".to_vec()).await;
    assert_kind(&a, ErrorKind::Refused);
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_is_a_failed_attempt_with_its_status() {
    let target = Receiver::start(Answer::Status(200, String::new())).await;
    let receiver = Receiver::start(Answer::Redirect(target.url("127.0.0.1", "/elsewhere"))).await;
    let a = open_client().post(&receiver.url("127.0.0.1", "/hook"), &[], b"{}".to_vec()).await;
    assert_kind(&a, ErrorKind::Redirect);
    assert_eq!(a.status, Some(302));
    assert!(a.error.unwrap().message.contains("/elsewhere"));
    assert_eq!(receiver.received().iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/hook"]);
    assert_eq!(target.connections(), 0, "the redirect's target was never asked");
}

#[tokio::test]
async fn a_receiver_that_sleeps_past_the_deadline_fails_at_the_deadline() {
    let receiver = Receiver::start(Answer::Sleep(Duration::from_secs(30))).await;
    let deadline = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let a = client(true, true, deadline).post(&receiver.url("127.0.0.1", "/"), &[], b"{}".to_vec()).await;
    let took = started.elapsed();
    assert_kind(&a, ErrorKind::Timeout);
    assert_eq!(a.status, None);
    assert_eq!(receiver.received().len(), 1, "the request was sent; its answer never came in time");
    // Not before the deadline; well before the receiver's 30 s (a generous bound, not a timing).
    assert!(a.latency >= deadline, "{:?}", a.latency);
    assert!(took < Duration::from_secs(15), "waited {took:?} for a 500 ms deadline");
}

#[tokio::test]
async fn a_500_is_a_failed_attempt_with_its_status_and_at_most_max_body_of_its_body() {
    let receiver = Receiver::start(Answer::Status(500, "x".repeat(10_000))).await;
    let a = open_client().post(&receiver.url("127.0.0.1", "/"), &[], b"{}".to_vec()).await;
    assert_kind(&a, ErrorKind::Status);
    assert_eq!(a.status, Some(500));
    assert_eq!(a.body, "x".repeat(64), "the body is kept up to max_body");
    assert_eq!(ErrorKind::Status.as_str(), "status");
}

#[tokio::test]
async fn a_port_nobody_listens_on_is_a_connect_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let a = open_client().post(&format!("http://127.0.0.1:{port}/"), &[], b"{}".to_vec()).await;
    assert_kind(&a, ErrorKind::Connect);
}
