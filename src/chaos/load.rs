//! The load of `keel chaos`: clients sending a mix of commands to a few tenants, every request
//! with an `Idempotency-Key` and an `X-Request-Id`, every answer recorded; a command without a
//! definite answer is sent again with the same key until it gets one.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A tenant under load, and what its clients know of it from their 2xx answers.
pub(crate) struct Tenant {
    pub(crate) id: Uuid,
    pub(crate) slug: String,
    pub(crate) token: String,
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    active: Vec<Uuid>,
    archived: Vec<Uuid>,
    tasks: Vec<Uuid>,
    members: Vec<Uuid>,
}

impl Tenant {
    pub(crate) fn new(id: Uuid, slug: String, token: String) -> Tenant {
        Tenant { id, slug, token, known: Mutex::new(Known::default()) }
    }
}

/// One answer to one request.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Answer {
    Http {
        status: u16,
        /// The problem's `code`.
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Uuid>,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        position: Option<String>,
        replayed: bool,
        retry_after: bool,
    },
    /// No HTTP answer: refused, reset, closed or timed out.
    ConnectionError { error: String },
}

/// What an answer says about the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// 2xx: written (or a no-op), with the id, version and position it names.
    Success,
    /// 4xx: refused; nothing was written.
    Rejected,
    /// 503 with a code that says nothing was written (`database-unavailable`, `overloaded`,
    /// `not-ready`, or none); sent again with the same key.
    NotWritten,
    /// A connection error, a 500, a 503 that may have been written (`outcome-unknown`; `timeout`
    /// and `shutting-down`, which cancel a request whose commit may already have been sent) or
    /// another 5xx: sent again with the same key.
    Ambiguous,
}

impl Answer {
    pub(crate) fn class(&self) -> Class {
        match self {
            Answer::ConnectionError { .. } => Class::Ambiguous,
            Answer::Http { status, code, .. } => match status {
                200..=299 => Class::Success,
                // A rate limit is not on in a chaos run, but would mean "not now".
                429 => Class::NotWritten,
                400..=499 => Class::Rejected,
                503 if !matches!(code.as_deref(), Some("outcome-unknown" | "timeout" | "shutting-down")) => {
                    Class::NotWritten
                }
                _ => Class::Ambiguous,
            },
        }
    }

    /// The figure it counts under: `2xx`, `409 conflict`, `503 database-unavailable`,
    /// `connection error`, ...
    pub(crate) fn label(&self) -> String {
        match self {
            Answer::ConnectionError { .. } => "connection error".to_owned(),
            Answer::Http { status, code: Some(code), .. } if *status >= 300 => format!("{status} {code}"),
            Answer::Http { status, .. } if (200..300).contains(status) => "2xx".to_owned(),
            Answer::Http { status, .. } => status.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Attempt {
    pub(crate) request_id: String,
    /// Sent at, in ms since the run began.
    pub(crate) at_ms: u64,
    pub(crate) took_ms: u64,
    pub(crate) answer: Answer,
}

/// One command and every attempt at it (all with the same `Idempotency-Key`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CommandRecord {
    pub(crate) tenant: Uuid,
    pub(crate) kind: &'static str,
    pub(crate) method: &'static str,
    pub(crate) path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<Value>,
    pub(crate) idempotency_key: String,
    pub(crate) attempts: Vec<Attempt>,
}

impl CommandRecord {
    /// The definite answer (2xx or 4xx), when it got one: always the last attempt.
    pub(crate) fn outcome(&self) -> Option<&Attempt> {
        self.attempts.last().filter(|a| matches!(a.answer.class(), Class::Success | Class::Rejected))
    }
}

/// What every client shares.
pub(crate) struct Load {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) tenants: Vec<Tenant>,
    pub(crate) t0: Instant,
    requests: AtomicU64,
}

impl Load {
    pub(crate) fn new(base: String, tenants: Vec<Tenant>, t0: Instant) -> anyhow::Result<Load> {
        // Keep-alive on, as a real client: requests on idle connections meet SIGTERM too.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Load { base, http, tenants, t0, requests: AtomicU64::new(0) })
    }

    /// Sends `rec` (again) until it gets a definite answer or `stop_at` passes.
    pub(crate) async fn resolve(&self, rec: &mut CommandRecord, token: &str, stop_at: Instant) {
        let mut backoff = Duration::from_millis(100);
        while rec.outcome().is_none() && Instant::now() < stop_at && rec.attempts.len() < 400 {
            if !rec.attempts.is_empty() {
                let wait = match rec.attempts.last().map(|a| &a.answer) {
                    Some(Answer::Http { retry_after: true, .. }) => backoff.max(Duration::from_millis(500)),
                    _ => backoff,
                };
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            let n = self.requests.fetch_add(1, Ordering::Relaxed);
            let request_id = format!("chaos-{n}-{}", &Uuid::new_v4().simple().to_string()[..8]);
            let began = Instant::now();
            let answer = self.send(rec, token, &request_id).await;
            rec.attempts.push(Attempt {
                request_id,
                at_ms: began.duration_since(self.t0).as_millis() as u64,
                took_ms: began.elapsed().as_millis() as u64,
                answer,
            });
        }
    }

    async fn send(&self, rec: &CommandRecord, token: &str, request_id: &str) -> Answer {
        let url = format!("{}/api/v1{}", self.base, rec.path);
        let method = reqwest::Method::from_bytes(rec.method.as_bytes()).expect("a method");
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .header("Idempotency-Key", &rec.idempotency_key)
            .header("X-Request-Id", request_id);
        if let Some(body) = &rec.body {
            req = req.json(body);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Answer::ConnectionError { error: error_chain(&e) },
        };
        let status = resp.status().as_u16();
        let replayed = resp.headers().contains_key("idempotent-replayed");
        let retry_after = resp.headers().contains_key("retry-after");
        let body: Value = match resp.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => return Answer::ConnectionError { error: format!("{status}, body lost: {}", error_chain(&e)) },
        };
        Answer::Http {
            status,
            code: body.get("code").and_then(Value::as_str).map(str::to_owned),
            id: body.get("id").and_then(Value::as_str).and_then(|s| s.parse().ok()),
            version: body.get("version").and_then(Value::as_i64),
            position: body.get("position").and_then(Value::as_str).map(str::to_owned),
            replayed,
            retry_after,
        }
    }

    /// One client: commands until `until`, each resolved (or given up at `until + grace`).
    pub(crate) async fn client(&self, index: usize, seed: u64, until: Instant, grace: Duration) -> Vec<CommandRecord> {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(index as u64 * 7919));
        let mut done = Vec::new();
        while Instant::now() < until {
            let tenant = &self.tenants[rng.random_range(0..self.tenants.len())];
            let mut rec = next_command(&mut rng, tenant);
            self.resolve(&mut rec, &tenant.token, until + grace).await;
            learn(tenant, &rec);
            done.push(rec);
        }
        done
    }
}

/// The source's message and its causes, e.g. "error sending request: connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn pick(rng: &mut StdRng, v: &[Uuid]) -> Option<Uuid> {
    (!v.is_empty()).then(|| v[rng.random_range(0..v.len())])
}

/// A command for `tenant`, chosen by weight among those its known state allows.
fn next_command(rng: &mut StdRng, tenant: &Tenant) -> CommandRecord {
    let (project, archived, task, member) = {
        let k = tenant.known.lock().expect("not poisoned");
        (pick(rng, &k.active), pick(rng, &k.archived), pick(rng, &k.tasks), pick(rng, &k.members))
    };
    let short = || Uuid::new_v4().simple().to_string()[..8].to_owned();
    let roll = rng.random_range(0..100);
    let (kind, method, path, body): (&'static str, &'static str, String, Option<Value>) = match (roll, project, task) {
        (0..15, _, _) => {
            ("create-project", "POST", "/projects".into(), Some(json!({ "name": format!("chaos {}", short()) })))
        }
        (15..23, Some(p), _) => ("archive-project", "POST", format!("/projects/{p}/archive"), None),
        (23..29, _, _) if archived.is_some() => {
            ("restore-project", "POST", format!("/projects/{}/restore", archived.expect("some")), None)
        }
        (29..49, Some(p), _) => {
            let priority = ["low", "medium", "high", "urgent"][rng.random_range(0..4)];
            let assignee = if rng.random_bool(0.3) { member } else { None };
            let mut body = json!({ "title": format!("task {}", short()), "priority": priority });
            if let Some(m) = assignee {
                body["assignee"] = json!(m);
            }
            ("create-task", "POST", format!("/projects/{p}/tasks"), Some(body))
        }
        (49..57, _, Some(t)) => {
            ("update-task", "PATCH", format!("/tasks/{t}"), Some(json!({ "title": format!("renamed {}", short()) })))
        }
        (57..64, _, Some(t)) => {
            ("assign-task", "PUT", format!("/tasks/{t}/assignee"), Some(json!({ "member_id": member })))
        }
        (64..72, _, Some(t)) => {
            let status = ["todo", "in_progress", "done"][rng.random_range(0..3)];
            ("task-status", "PUT", format!("/tasks/{t}/status"), Some(json!({ "status": status })))
        }
        (72..88, _, _) => {
            let records: Vec<Value> = (0..rng.random_range(1..=3))
                .map(|_| {
                    let metric = ["api.calls", "storage.gb"][rng.random_range(0..2)];
                    json!({
                        "id": Uuid::new_v4().to_string(),
                        "metric": metric,
                        "quantity": rng.random_range(1..=300),
                        "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    })
                })
                .collect();
            ("usage", "POST", "/usage".into(), Some(json!({ "records": records })))
        }
        (88..95, _, _) => {
            let who = short();
            (
                "invite-member",
                "POST",
                "/members".into(),
                Some(
                    json!({ "user_id": format!("user-{who}"), "email": format!("{who}@chaos.example"), "name": format!("Member {who}"), "role": "member" }),
                ),
            )
        }
        (95.., _, _) if member.is_some() => {
            ("remove-member", "DELETE", format!("/members/{}", member.expect("some")), None)
        }
        _ => ("create-project", "POST", "/projects".into(), Some(json!({ "name": format!("chaos {}", short()) }))),
    };
    CommandRecord {
        tenant: tenant.id,
        kind,
        method,
        path,
        body,
        idempotency_key: format!("chaos-{}", Uuid::new_v4()),
        attempts: Vec::new(),
    }
}

/// What a 2xx teaches the clients about the tenant.
fn learn(tenant: &Tenant, rec: &CommandRecord) {
    let Some(Attempt { answer: Answer::Http { status: 200..=299, id: Some(id), .. }, .. }) = rec.outcome() else {
        return;
    };
    let mut k = tenant.known.lock().expect("not poisoned");
    let id = *id;
    match rec.kind {
        "create-project" => k.active.push(id),
        "archive-project" => {
            k.active.retain(|p| *p != id);
            k.archived.push(id);
        }
        "restore-project" => {
            k.archived.retain(|p| *p != id);
            k.active.push(id);
        }
        "create-task" => k.tasks.push(id),
        "invite-member" => k.members.push(id),
        "remove-member" => k.members.retain(|m| *m != id),
        _ => {}
    }
}
