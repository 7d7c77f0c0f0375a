//! Shutdown drains (`docs/decisions.md`, "Shutdown drains"): after SIGTERM the `keel serve`
//! process answers every request that reaches it, on keep-alive connections and new ones, with
//! `Connection: close`, while `/readyz` answers 503; only then does it stop accepting.

use crate::helpers::{SECRET, TestDb};
use keel_gateway::auth::Secret;
use keel_gateway::{Authenticator, JwtConfig};
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// One HTTP/1.1 response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

/// A keep-alive HTTP/1.1 connection spoken by hand: no client library that would quietly retry
/// a request on a fresh connection when the old one was closed under it.
struct Conn {
    io: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Conn> {
        Ok(Conn { io: BufReader::new(TcpStream::connect(addr).await?) })
    }

    /// Sends one request and reads its answer; an error is a connection that ended without one.
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: keel\r\nContent-Length: {}\r\n", body.len());
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\nContent-Type: application/json\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        self.io.get_mut().write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.io.read_line(&mut line).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the connection ended without an answer".into());
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let status = head
            .first()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line: {head:?}"))?;
        let header = |name: &str| {
            head.iter().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_ascii_lowercase())
            })
        };
        let close = header("connection").is_some_and(|v| v.split(',').any(|t| t.trim() == "close"));
        let mut body = Vec::new();
        if let Some(len) = header("content-length") {
            body.resize(len.parse().map_err(|_| "bad content-length")?, 0);
            self.io.read_exact(&mut body).await.map_err(|e| format!("body: {e}"))?;
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                self.io.read_line(&mut size).await.map_err(|e| format!("chunk: {e}"))?;
                let n = usize::from_str_radix(size.trim(), 16).map_err(|_| format!("bad chunk size {size:?}"))?;
                let mut chunk = vec![0; n + 2];
                self.io.read_exact(&mut chunk).await.map_err(|e| format!("chunk: {e}"))?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        Ok(Answer { status, close, body })
    }
}

/// What one keep-alive client saw.
#[derive(Debug, Default)]
struct Seen {
    answered: usize,
    answered_after_signal: usize,
    /// Statuses other than the expected one.
    unexpected: Vec<u16>,
    closed_by_keel: bool,
    /// A request that got no answer: the failure the drain exists to prevent.
    lost: Option<String>,
}

#[tokio::test]
async fn sigterm_drains_every_request_on_keep_alive_connections_is_answered() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("keel-drain-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("keel.log");
    let file = std::fs::File::create(&log).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(KEEL)
        .args(["serve"])
        .env("DATABASE_URL", &db.url)
        .env("KEEL_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("KEEL_MASTER_KEY", crate::helpers::MASTER_KEY)
        .env("KEEL_LISTEN", &addr)
        .env("KEEL_LOG", "info")
        .env("KEEL_LOG_FORMAT", "json")
        .env("KEEL_DRAIN_MS", "3000")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://{addr}");
    let started = Instant::now();
    while reqwest::get(format!("{base}/readyz")).await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "keel serve becomes ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A tenant with a project per command client.
    let auth = Authenticator::hs256(JwtConfig::hs256(Secret::new(SECRET.to_vec())));
    let platform = auth.issue("operator", None, true, Duration::from_secs(600));
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(&platform)
        .json(&json!({"name": "Drain", "slug": "drain", "plan": "team",
                      "owner": {"user_id": "ada", "email": "ada@drain.test", "name": "Ada"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let tenant: uuid::Uuid = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let owner = auth.issue("ada", Some(tenant), false, Duration::from_secs(600));
    let mut projects = Vec::new();
    for i in 0..3 {
        let r = http
            .post(format!("{base}/api/v1/projects"))
            .bearer_auth(&owner)
            .json(&json!({"name": format!("Drain {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        projects.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }

    // Keep-alive clients in tight loops: health checks, GraphQL queries and commands; and three
    // whose connections sit idle from before the signal until 0, 0.3 and 0.6 s after it (what
    // a graceful shutdown without a drain closes under them at once).
    let signalled = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..12 {
        let (addr, owner, signalled) = (addr.clone(), owner.clone(), signalled.clone());
        let project = projects[(i / 3) % 3].clone();
        clients.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut conn = Conn::open(&addr).await.expect("keel accepts before the signal");
            let mut n = 0;
            if i >= 9 {
                let a = conn.call("GET", "/healthz", None, None).await.expect("answered before the signal");
                assert!(a.status == 200 && !a.close);
                while !signalled.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(300 * (i as u64 - 9))).await;
            }
            loop {
                let after = signalled.load(Ordering::SeqCst);
                let answer = match if i >= 9 { 0 } else { i % 3 } {
                    0 => conn.call("GET", "/healthz", None, None).await.map(|a| (a, 200)),
                    1 => conn
                        .call("POST", "/graphql", Some(&owner), Some(&json!({"query": "{ projects { totalCount } }"})))
                        .await
                        .map(|a| (a, 200)),
                    _ => conn
                        .call(
                            "POST",
                            &format!("/api/v1/projects/{project}/tasks"),
                            Some(&owner),
                            Some(&json!({"title": format!("T{n}")})),
                        )
                        .await
                        .map(|a| (a, 201)),
                };
                n += 1;
                match answer {
                    Ok((a, expected)) => {
                        seen.answered += 1;
                        if after {
                            seen.answered_after_signal += 1;
                        }
                        if a.status != expected {
                            seen.unexpected.push(a.status);
                            eprintln!("{}", String::from_utf8_lossy(&a.body));
                        }
                        if a.close {
                            seen.closed_by_keel = true;
                            return seen;
                        }
                    }
                    Err(e) => {
                        seen.lost = Some(format!("request {n} (signal sent before it: {after}): {e}"));
                        return seen;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SIGTERM, then a load balancer's view on new connections: ready, healthy, still serving.
    let pid = child.id().unwrap().to_string();
    signalled.store(true, Ordering::SeqCst);
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let signal_at = Instant::now();
    let mut readyz = Vec::new();
    let mut healthz = Vec::new();
    while signal_at.elapsed() < Duration::from_secs(20) {
        let Ok(mut conn) = Conn::open(&addr).await else { break };
        let Ok(r) = conn.call("GET", "/readyz", None, None).await else { break };
        // Until the process has taken the signal, it is ready as before.
        if r.status == 200 && readyz.is_empty() {
            continue;
        }
        assert!(r.close, "a response during the drain closes its connection");
        readyz.push(r.status);
        let Ok(mut conn) = Conn::open(&addr).await else { break };
        let Ok(h) = conn.call("GET", "/healthz", None, None).await else { break };
        healthz.push(h.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained_for = signal_at.elapsed();

    let mut seen = Vec::new();
    for c in clients {
        seen.push(tokio::time::timeout(Duration::from_secs(30), c).await.expect("every client finishes").unwrap());
    }
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("keel exits").unwrap();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "keel exits cleanly after the drain: {exit:?}\n{logged}");

    for (i, s) in seen.iter().enumerate() {
        assert!(s.lost.is_none(), "client {i}: a request got no answer: {s:?}\n{logged}");
        assert!(s.closed_by_keel, "client {i}: Keel closed its connection after a Connection: close answer: {s:?}");
        assert!(s.unexpected.is_empty(), "client {i}: every request was served as usual: {s:?}");
    }
    for (i, s) in seen.iter().enumerate().skip(9) {
        assert!(s.answered_after_signal >= 1, "idle client {i}: its request after the signal was answered: {s:?}");
    }
    // Readiness turned 503 at once while the process kept answering, and stayed so until the end.
    assert!(!readyz.is_empty() && readyz.iter().all(|s| *s == 503), "/readyz during the drain: {readyz:?}");
    assert!(!healthz.is_empty() && healthz.iter().all(|s| *s == 200), "/healthz during the drain: {healthz:?}");
    assert!(drained_for >= Duration::from_secs(2), "new connections were served through the drain: {drained_for:?}");
    assert!(logged.contains("draining"), "{logged}");
    let total: usize = seen.iter().map(|s| s.answered).sum();
    let after: usize = seen.iter().map(|s| s.answered_after_signal).sum();
    eprintln!(
        "{total} requests answered by 12 keep-alive clients, {after} sent after the signal; drain observed for {drained_for:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
