//! The HTTP client webhook deliveries go through: https only, no private address (checked on
//! the address resolved at connect time, so DNS rebinding cannot slip one in; literal IPs
//! checked before), redirects not followed, a deadline per attempt, a bounded response body,
//! and one typed `Attempt` per try — what a delivery log row holds (docs/integration.md).

use crate::destination::{DestinationPolicy, Refusal};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a delivery attempt is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeClientConfig {
    pub policy: DestinationPolicy,
    /// The whole attempt, connect to response head, ends by then (the rest of it bounds
    /// reading the body).
    pub deadline: Duration,
    /// At most this many bytes of a response body are read and kept.
    pub max_body: usize,
}

impl Default for SafeClientConfig {
    fn default() -> Self {
        SafeClientConfig { policy: DestinationPolicy::default(), deadline: Duration::from_secs(15), max_body: 4 * 1024 }
    }
}

/// Why an attempt did not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The URL or the address it resolved to is not allowed (`destination`); nothing was sent.
    Refused,
    /// A 3xx: not followed, since its target was never checked.
    Redirect,
    /// Any other status that is not 2xx.
    Status,
    /// No response head by the deadline.
    Timeout,
    /// DNS, TCP or TLS failed.
    Connect,
    /// The request failed otherwise (the connection closed mid-way, a bad response).
    Request,
    /// Keel could not make the request (the event or the endpoint's secret could not be read);
    /// nothing was sent.
    Internal,
}

impl ErrorKind {
    /// The delivery log's and the metrics' name (a bounded label).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Status => "status",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Request => "request",
            ErrorKind::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    pub kind: ErrorKind,
    /// For the endpoint's owner: what happened, without Keel's internals.
    pub message: String,
}

/// One delivery attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The response's status, when one came (also for a redirect or a 500).
    pub status: Option<u16>,
    /// From the start of the attempt to its end (response read, error, or deadline).
    pub latency: Duration,
    /// `None` exactly when the receiver answered 2xx.
    pub error: Option<AttemptError>,
    /// The start of the response body, at most `max_body` bytes (lossy UTF-8).
    pub body: String,
}

impl Attempt {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }

    pub fn kind(&self) -> Option<ErrorKind> {
        self.error.as_ref().map(|e| e.kind)
    }
}

/// Resolves a host and refuses it when any of its addresses is not allowed: this runs for each
/// connection, so the address checked is the address connected to.
#[derive(Debug)]
struct GuardedResolver {
    policy: DestinationPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(Box::new(Refusal::Unresolved(host)) as _);
            }
            for a in &addrs {
                // Boxed as the `Refusal` itself, so `describe` finds it by downcasting.
                if let Err(r) = policy.check_ip(&host, a.ip()) {
                    return Err(Box::new(r) as _);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The client deliveries share (cheap to clone: one connection pool).
#[derive(Debug, Clone)]
pub struct SafeClient {
    client: reqwest::Client,
    config: SafeClientConfig,
}

impl SafeClient {
    pub fn new(config: SafeClientConfig) -> Result<SafeClient, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the host itself, past the guard.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { policy: config.policy }))
            .https_only(!config.policy.allow_http)
            .connect_timeout(config.deadline)
            .user_agent(concat!("Keel-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(SafeClient { client, config })
    }

    pub fn config(&self) -> &SafeClientConfig {
        &self.config
    }

    /// POSTs `body` (JSON) to `url` with `headers` (the signature's), once.
    pub async fn post(&self, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Attempt {
        let started = Instant::now();
        let fail = |kind, message: String, status| Attempt {
            status,
            latency: started.elapsed(),
            error: Some(AttemptError { kind, message }),
            body: String::new(),
        };
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return fail(ErrorKind::Refused, format!("not a URL: {e}"), None),
        };
        // reqwest skips the resolver for a literal IP: check it here.
        if let Err(r) = self.config.policy.check_url(&parsed) {
            return fail(ErrorKind::Refused, r.to_string(), None);
        }
        let mut request = self.client.post(parsed).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let deadline = tokio::time::Instant::from_std(started + self.config.deadline);
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return fail(ErrorKind::Timeout, self.timed_out(), None),
            Ok(Err(e)) => {
                let (kind, message) = self.describe(&e);
                return fail(kind, message, None);
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = self.read_body(response, deadline).await;
        let error = if status.is_success() {
            None
        } else if status.is_redirection() {
            let to = location.unwrap_or_else(|| "nowhere".into());
            Some(AttemptError {
                kind: ErrorKind::Redirect,
                message: format!("answered {status} to {to}: redirects are not followed"),
            })
        } else {
            Some(AttemptError { kind: ErrorKind::Status, message: format!("answered {status}") })
        };
        Attempt { status: Some(status.as_u16()), latency: started.elapsed(), error, body }
    }

    /// Up to `max_body` bytes, read by the deadline; a body cut short keeps what came.
    async fn read_body(&self, mut response: reqwest::Response, deadline: tokio::time::Instant) -> String {
        let max = self.config.max_body;
        let mut kept = Vec::new();
        while kept.len() < max {
            match tokio::time::timeout_at(deadline, response.chunk()).await {
                Ok(Ok(Some(chunk))) => kept.extend_from_slice(&chunk[..chunk.len().min(max - kept.len())]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    }

    fn timed_out(&self) -> String {
        format!("no response within {} ms", self.config.deadline.as_millis())
    }

    fn describe(&self, e: &reqwest::Error) -> (ErrorKind, String) {
        let mut source = e.source();
        while let Some(s) = source {
            // The resolver's `Refusal`, found as itself or inside an `io::Error` (whose `source`
            // skips the error it holds).
            let inner = s.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
            let refusal = s.downcast_ref::<Refusal>().or_else(|| inner?.downcast_ref::<Refusal>());
            if let Some(r) = refusal {
                return (ErrorKind::Refused, r.to_string());
            }
            source = s.source();
        }
        if e.is_timeout() {
            (ErrorKind::Timeout, self.timed_out())
        } else if e.is_connect() {
            (ErrorKind::Connect, chain(e))
        } else {
            (ErrorKind::Request, chain(e))
        }
    }
}

/// An error and its causes, without the URL (the endpoint's owner knows it).
fn chain(e: &reqwest::Error) -> String {
    let mut text = String::from(if e.is_connect() { "could not connect" } else { "request failed" });
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
