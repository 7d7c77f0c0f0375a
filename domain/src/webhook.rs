//! The Webhook aggregate: one endpoint of a tenant for events out (`docs/domain.md`, "Webhook
//! endpoints") — its URL, the event types it takes, its signing secret and its rotation, and the
//! replays asked of it. One stream per endpoint; a deleted endpoint takes no further command.

use crate::address::{is_private_ip, is_private_name};
use crate::aggregate::{Aggregate, Decide, StreamType};
use crate::error::{DomainError, FieldError, Fields, Limit};
use crate::event::{Event, EventKind};
use crate::ids::WebhookId;
use crate::values::storable;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest URL an endpoint may have, in bytes.
pub const MAX_URL: usize = 2048;
/// The most event types one endpoint names.
pub const MAX_EVENT_TYPES: usize = 64;
/// The longest description, in characters.
pub const MAX_DESCRIPTION: usize = 500;
/// The most endpoints a tenant has at once (deleted ones do not count).
pub const MAX_ENDPOINTS: u64 = 20;
/// The event type filter that takes every event.
pub const ALL_EVENTS: &str = "*";

/// Which destinations a URL may name. Both off by default: `https` to a public host only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// `KEEL_WEBHOOKS_ALLOW_HTTP`: plain `http` URLs are accepted too.
    pub allow_http: bool,
    /// `KEEL_WEBHOOKS_ALLOW_PRIVATE`: loopback, private, link-local and metadata hosts are accepted.
    pub allow_private: bool,
}

impl UrlPolicy {
    /// What any policy could accept: the shape of a URL, without its destination rules.
    pub const ANY: UrlPolicy = UrlPolicy { allow_http: true, allow_private: true };
}

/// An endpoint's URL: absolute, `https` (or `http` when allowed), with a host, no credentials and
/// no fragment, at most `MAX_URL` bytes; stored in its normalised form (the `url` crate's, so
/// `https://0x7f.1/` is seen, and refused, as `https://127.0.0.1/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn parse(field: &str, s: &str, policy: UrlPolicy) -> Result<WebhookUrl, FieldError> {
        let s = storable(field, s)?.trim();
        let bad = |m: &str| FieldError::new(field, m);
        if s.len() > MAX_URL {
            return Err(bad(&format!("must be at most {MAX_URL} characters")));
        }
        let url = url::Url::parse(s).map_err(|e| bad(&format!("must be an absolute URL ({e})")))?;
        match url.scheme() {
            "https" => {}
            "http" if policy.allow_http => {}
            "http" => {
                return Err(bad("must use https (plain http is accepted only when KEEL_WEBHOOKS_ALLOW_HTTP is set)"));
            }
            _ => return Err(bad("must be an https URL")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not carry credentials (user:password@); authenticate by the signature"));
        }
        if url.fragment().is_some() {
            return Err(bad("must not have a fragment (#...)"));
        }
        let private = match url.host() {
            None => return Err(bad("must name a host")),
            Some(url::Host::Ipv4(ip)) => is_private_ip(ip.into()),
            Some(url::Host::Ipv6(ip)) => is_private_ip(ip.into()),
            Some(url::Host::Domain(d)) => is_private_name(d),
        };
        if private && !policy.allow_private {
            return Err(bad("must not point at a loopback, private, link-local or metadata address \
                 (accepted only when KEEL_WEBHOOKS_ALLOW_PRIVATE is set)"));
        }
        let normal = url.as_str();
        if normal.len() > MAX_URL {
            return Err(bad(&format!("must be at most {MAX_URL} characters")));
        }
        Ok(WebhookUrl(normal.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The event types an endpoint takes: 1 to `MAX_EVENT_TYPES` names of Keel's event types, or
/// `"*"` for all; duplicates are dropped, the order kept.
pub fn parse_event_types(field: &str, types: &[String]) -> Result<Vec<String>, Vec<FieldError>> {
    if types.is_empty() {
        return Err(vec![FieldError::new(field, "give at least one event type, or \"*\" for every event")]);
    }
    if types.len() > MAX_EVENT_TYPES {
        return Err(vec![FieldError::new(field, format!("must list at most {MAX_EVENT_TYPES} event types"))]);
    }
    let mut errors = Vec::new();
    let mut out: Vec<String> = Vec::new();
    for (i, t) in types.iter().enumerate() {
        let known = t == ALL_EVENTS || EventKind::parse(t).is_some();
        if !known {
            let shown: String = t.chars().take(64).collect();
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                format!("{shown:?} is not a Keel event type (see docs/integration.md), nor \"*\""),
            ));
        } else if !out.contains(t) {
            out.push(t.clone());
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Free text up to `MAX_DESCRIPTION` characters; blank means none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookDescription(String);

impl WebhookDescription {
    pub fn parse(field: &str, s: &str) -> Result<Option<WebhookDescription>, FieldError> {
        let t = storable(field, s)?.trim();
        if t.chars().count() > MAX_DESCRIPTION {
            return Err(FieldError::new(field, format!("must be at most {MAX_DESCRIPTION} characters")));
        }
        Ok(if t.is_empty() { None } else { Some(WebhookDescription(t.to_owned())) })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An endpoint's signing secret (Standard Webhooks: `whsec_` + base64 of the key bytes), made by
/// the command layer. In the log it is sealed (`enc:v1:...`) and is never revealed to a reader;
/// `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub const PREFIX: &'static str = "whsec_";

    /// A secret from its key bytes (at least 24: Standard Webhooks asks for 24 to 64).
    pub fn from_key(key: &[u8]) -> WebhookSecret {
        use base64::Engine as _;
        WebhookSecret(format!("{}{}", Self::PREFIX, base64::engine::general_purpose::STANDARD.encode(key)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// Where a replay starts: a time (events recorded at or after it) or a log position (events
/// after the consistency token `"<xid>.<position>"` a command answered with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayFrom {
    Time(DateTime<Utc>),
    Position { xid: u64, position: i64 },
}

impl ReplayFrom {
    /// An RFC 3339 time, or a position token `"<xid>.<position>"`.
    pub fn parse(field: &str, s: &str) -> Result<ReplayFrom, FieldError> {
        let s = storable(field, s)?.trim();
        if let Some((x, p)) = s.split_once('.')
            && let (Ok(xid), Ok(position)) = (x.parse::<u64>(), p.parse::<i64>())
        {
            if position < 0 {
                return Err(FieldError::new(field, "a position is not negative"));
            }
            return Ok(ReplayFrom::Position { xid, position });
        }
        DateTime::parse_from_rfc3339(s).map(|t| ReplayFrom::Time(t.with_timezone(&Utc))).map_err(|_| {
            FieldError::new(
                field,
                "must be an RFC 3339 time (2026-11-30T00:00:00Z) or a position token \"<xid>.<position>\"",
            )
        })
    }
}

/// Where an endpoint's deliveries have put it: `active`; `failing` while attempts fail;
/// `disabled` after the retry schedule ran out (set by the delivery worker, not by a command).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    Active,
    Failing,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreated {
    pub webhook_id: WebhookId,
    pub url: WebhookUrl,
    pub event_types: Vec<String>,
    pub description: Option<WebhookDescription>,
    /// Sealed in the log (see `WebhookSecret`).
    pub secret: WebhookSecret,
    pub at: DateTime<Utc>,
}

/// Only the fields that changed are present; `description: Some(None)` clears it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookUpdated {
    pub webhook_id: WebhookId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<WebhookUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::event::double_option")]
    pub description: Option<Option<WebhookDescription>>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDeleted {
    pub webhook_id: WebhookId,
    pub at: DateTime<Utc>,
}

/// A new secret signs from now on; the previous one signs too until `previous_valid_until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSecretRotated {
    pub webhook_id: WebhookId,
    /// Sealed in the log (see `WebhookSecret`).
    pub secret: WebhookSecret,
    pub previous_valid_until: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookReplayRequested {
    pub webhook_id: WebhookId,
    pub from: ReplayFrom,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: Option<WebhookId>,
    pub url: Option<WebhookUrl>,
    pub event_types: Vec<String>,
    pub description: Option<WebhookDescription>,
    pub deleted: bool,
}

impl Aggregate for Webhook {
    const STREAM_TYPE: StreamType = StreamType::Webhook;

    fn apply(mut self, event: &Event) -> Self {
        match event {
            Event::WebhookCreated(e) => {
                self.id = Some(e.webhook_id);
                self.url = Some(e.url.clone());
                self.event_types = e.event_types.clone();
                self.description = e.description.clone();
            }
            Event::WebhookUpdated(e) => {
                if let Some(u) = &e.url {
                    self.url = Some(u.clone());
                }
                if let Some(t) = &e.event_types {
                    self.event_types = t.clone();
                }
                if let Some(d) = &e.description {
                    self.description = d.clone();
                }
            }
            Event::WebhookDeleted(_) => self.deleted = true,
            _ => {}
        }
        self
    }
}

/// What a webhook command needs from outside its stream, read in its transaction.
#[derive(Debug, Clone, Copy)]
pub struct WebhookContext {
    pub suspended: bool,
    /// The tenant's endpoints that are not deleted, counted under the tenant row lock (creates).
    pub endpoints: u64,
    pub policy: UrlPolicy,
    /// How long a rotated-out secret still signs (`KEEL_WEBHOOKS_ROTATION_GRACE_SECS`).
    pub rotation_grace: TimeDelta,
}

#[derive(Debug, Clone)]
pub enum WebhookCommand {
    Create {
        webhook_id: WebhookId,
        url: String,
        event_types: Vec<String>,
        description: Option<String>,
        secret: WebhookSecret,
    },
    /// Absent fields stay as they are; `description: Some("")` clears it.
    Update {
        url: Option<String>,
        event_types: Option<Vec<String>>,
        description: Option<String>,
    },
    Delete,
    RotateSecret {
        secret: WebhookSecret,
    },
    Replay {
        from: String,
    },
}

/// The fields of a command, parsed under `policy`.
fn parse_fields(
    f: &mut Fields,
    url: Option<&str>,
    types: Option<&[String]>,
    description: Option<&str>,
    policy: UrlPolicy,
) -> (Option<WebhookUrl>, Option<Vec<String>>, Option<Option<WebhookDescription>>) {
    let url = url.and_then(|u| f.check(WebhookUrl::parse("url", u, policy)));
    let types = types.and_then(|t| match parse_event_types("event_types", t) {
        Ok(t) => Some(t),
        Err(errors) => {
            for e in errors {
                f.push(&e.field, &e.message);
            }
            None
        }
    });
    let description = description.and_then(|d| f.check(WebhookDescription::parse("description", d)));
    (url, types, description)
}

impl Decide for Webhook {
    type Command = WebhookCommand;
    type Context = WebhookContext;

    fn check_input(cmd: &WebhookCommand) -> Result<(), DomainError> {
        let mut f = Fields::default();
        match cmd {
            WebhookCommand::Create { url, event_types, description, .. } => {
                parse_fields(&mut f, Some(url), Some(event_types), description.as_deref(), UrlPolicy::ANY);
            }
            WebhookCommand::Update { url, event_types, description } => {
                parse_fields(&mut f, url.as_deref(), event_types.as_deref(), description.as_deref(), UrlPolicy::ANY);
            }
            WebhookCommand::Replay { from } => {
                f.check(ReplayFrom::parse("from", from));
            }
            WebhookCommand::Delete | WebhookCommand::RotateSecret { .. } => {}
        }
        f.finish()
    }

    fn decide(&self, cmd: WebhookCommand, ctx: &WebhookContext, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        if ctx.suspended {
            return Err(DomainError::TenantSuspended);
        }
        match cmd {
            WebhookCommand::Create { webhook_id, url, event_types, description, secret } => {
                if self.id.is_some() {
                    return Err(DomainError::AlreadyExists("webhook"));
                }
                let mut f = Fields::default();
                let (url, types, description) =
                    parse_fields(&mut f, Some(&url), Some(&event_types), description.as_deref(), ctx.policy);
                f.finish()?;
                if ctx.endpoints >= MAX_ENDPOINTS {
                    return Err(DomainError::LimitExceeded {
                        limit: Limit::WebhookEndpoints,
                        limit_value: MAX_ENDPOINTS,
                    });
                }
                Ok(vec![Event::WebhookCreated(WebhookCreated {
                    webhook_id,
                    url: url.expect("checked"),
                    event_types: types.expect("checked"),
                    description: description.flatten(),
                    secret,
                    at: now,
                })])
            }
            WebhookCommand::Update { url, event_types, description } => {
                let id = self.existing()?;
                if url.is_none() && event_types.is_none() && description.is_none() {
                    return Err(DomainError::field("url", "give at least one of url, event_types, description"));
                }
                let mut f = Fields::default();
                let (url, types, description) =
                    parse_fields(&mut f, url.as_deref(), event_types.as_deref(), description.as_deref(), ctx.policy);
                f.finish()?;
                // Only what changes is recorded; an update that changes nothing appends nothing.
                let url = url.filter(|u| Some(u) != self.url.as_ref());
                let event_types = types.filter(|t| *t != self.event_types);
                let description = description.filter(|d| *d != self.description);
                if url.is_none() && event_types.is_none() && description.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![Event::WebhookUpdated(WebhookUpdated {
                    webhook_id: id,
                    url,
                    event_types,
                    description,
                    at: now,
                })])
            }
            WebhookCommand::Delete => {
                let id = self.existing()?;
                Ok(vec![Event::WebhookDeleted(WebhookDeleted { webhook_id: id, at: now })])
            }
            WebhookCommand::RotateSecret { secret } => {
                let id = self.existing()?;
                Ok(vec![Event::WebhookSecretRotated(WebhookSecretRotated {
                    webhook_id: id,
                    secret,
                    previous_valid_until: now + ctx.rotation_grace,
                    at: now,
                })])
            }
            WebhookCommand::Replay { from } => {
                let id = self.existing()?;
                // A time still to come is recorded as given: it resends nothing that is not sent anyway.
                let from = ReplayFrom::parse("from", &from).map_err(|e| DomainError::Validation(vec![e]))?;
                Ok(vec![Event::WebhookReplayRequested(WebhookReplayRequested { webhook_id: id, from, at: now })])
            }
        }
    }
}

impl Webhook {
    /// The endpoint's id; a missing or deleted endpoint is not found (it takes no command).
    fn existing(&self) -> Result<WebhookId, DomainError> {
        match self.id {
            Some(id) if !self.deleted => Ok(id),
            _ => Err(DomainError::NotFound("webhook")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::testing::Scenario;
    use uuid::Uuid;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }
    fn wid() -> WebhookId {
        WebhookId(Uuid::from_u128(9))
    }
    fn secret(n: u8) -> WebhookSecret {
        WebhookSecret::from_key(&[n; 24])
    }
    fn ctx(endpoints: u64) -> WebhookContext {
        WebhookContext {
            suspended: false,
            endpoints,
            policy: UrlPolicy::default(),
            rotation_grace: TimeDelta::hours(24),
        }
    }
    fn url(s: &str) -> WebhookUrl {
        WebhookUrl::parse("url", s, UrlPolicy::default()).unwrap()
    }
    fn create(u: &str, types: &[&str]) -> WebhookCommand {
        WebhookCommand::Create {
            webhook_id: wid(),
            url: u.into(),
            event_types: types.iter().map(|t| t.to_string()).collect(),
            description: Some("billing".into()),
            secret: secret(1),
        }
    }
    fn created() -> Event {
        Event::WebhookCreated(WebhookCreated {
            webhook_id: wid(),
            url: url("https://hooks.example.com/keel"),
            event_types: vec!["TaskCreated".into()],
            description: WebhookDescription::parse("d", "billing").unwrap(),
            secret: secret(1),
            at: now(),
        })
    }
    fn deleted() -> Event {
        Event::WebhookDeleted(WebhookDeleted { webhook_id: wid(), at: now() })
    }
    fn field_of(r: Result<Vec<Event>, DomainError>) -> Vec<String> {
        match r {
            Err(DomainError::Validation(v)) => v.into_iter().map(|f| f.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn create_records_the_endpoint_with_its_secret() {
        Scenario::<Webhook>::given(vec![])
            .when(create("https://hooks.example.com/keel", &["TaskCreated", "TaskCreated"]), &ctx(0), now())
            .then(vec![created()]);
    }

    #[test]
    fn the_secret_has_the_standard_webhooks_form_and_never_prints() {
        let s = secret(7);
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(s.expose().len(), "whsec_".len() + 32);
        assert!(!format!("{:?}", created()).contains(s.expose()));
        assert!(!format!("{s:?}").contains("whsec_"));
    }

    #[test]
    fn a_url_must_be_https_unless_http_is_allowed() {
        let r = Scenario::<Webhook>::given(vec![]).when(create("http://hooks.example.com/", &["*"]), &ctx(0), now());
        assert_eq!(field_of(r.result()), ["url"]);
        let allow = WebhookContext { policy: UrlPolicy { allow_http: true, allow_private: false }, ..ctx(0) };
        assert!(
            Scenario::<Webhook>::given(vec![])
                .when(create("http://hooks.example.com/", &["*"]), &allow, now())
                .result()
                .is_ok()
        );
        for bad in [
            "ftp://hooks.example.com/",
            "hooks.example.com/x",
            "https://",
            "https://u:p@hooks.example.com/",
            "https://hooks.example.com/#x",
            "",
        ] {
            let r = Scenario::<Webhook>::given(vec![]).when(create(bad, &["*"]), &allow, now());
            assert_eq!(field_of(r.result()), ["url"], "{bad}");
        }
    }

    #[test]
    fn a_url_must_not_point_at_a_private_host_unless_allowed() {
        for bad in [
            "https://127.0.0.1/",
            "https://0x7f.1/",
            "https://2130706433/",
            "https://localhost:8443/",
            "https://10.0.0.5/",
            "https://172.20.1.1/",
            "https://192.168.0.10/",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.1.1/",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://0.0.0.0/",
            "https://metadata.google.internal/",
        ] {
            let r = Scenario::<Webhook>::given(vec![]).when(create(bad, &["*"]), &ctx(0), now());
            assert_eq!(field_of(r.result()), ["url"], "{bad}");
        }
        let allow = WebhookContext { policy: UrlPolicy { allow_http: false, allow_private: true }, ..ctx(0) };
        assert!(
            Scenario::<Webhook>::given(vec![])
                .when(create("https://127.0.0.1:9/", &["*"]), &allow, now())
                .result()
                .is_ok()
        );
    }

    #[test]
    fn a_url_is_bounded() {
        let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL));
        let r = Scenario::<Webhook>::given(vec![]).when(create(&long, &["*"]), &ctx(0), now());
        assert_eq!(field_of(r.result()), ["url"]);
        let nul =
            Scenario::<Webhook>::given(vec![]).when(create("https://hooks.example.com/\0", &["*"]), &ctx(0), now());
        assert_eq!(field_of(nul.result()), ["url"]);
    }

    #[test]
    fn event_types_are_known_names_or_star_and_bounded() {
        let r = Scenario::<Webhook>::given(vec![]).when(
            create("https://hooks.example.com/", &["TaskCreated", "Nope"]),
            &ctx(0),
            now(),
        );
        assert_eq!(field_of(r.result()), ["event_types[1]"]);
        let r = Scenario::<Webhook>::given(vec![]).when(create("https://hooks.example.com/", &[]), &ctx(0), now());
        assert_eq!(field_of(r.result()), ["event_types"]);
        let many: Vec<String> = (0..=MAX_EVENT_TYPES).map(|_| "*".to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let r = Scenario::<Webhook>::given(vec![]).when(create("https://hooks.example.com/", &many), &ctx(0), now());
        assert_eq!(field_of(r.result()), ["event_types"]);
        for kind in EventKind::ALL {
            assert!(parse_event_types("t", &[kind.as_str().to_owned()]).is_ok());
        }
    }

    #[test]
    fn the_description_is_bounded() {
        let c = WebhookCommand::Create {
            webhook_id: wid(),
            url: "https://hooks.example.com/".into(),
            event_types: vec!["*".into()],
            description: Some("x".repeat(MAX_DESCRIPTION + 1)),
            secret: secret(1),
        };
        assert_eq!(field_of(Scenario::<Webhook>::given(vec![]).when(c, &ctx(0), now()).result()), ["description"]);
    }

    #[test]
    fn a_tenant_has_at_most_twenty_endpoints() {
        Scenario::<Webhook>::given(vec![])
            .when(create("https://hooks.example.com/keel", &["*"]), &ctx(MAX_ENDPOINTS), now())
            .then_error(DomainError::LimitExceeded { limit: Limit::WebhookEndpoints, limit_value: MAX_ENDPOINTS });
        assert!(
            Scenario::<Webhook>::given(vec![])
                .when(create("https://hooks.example.com/keel", &["*"]), &ctx(19), now())
                .result()
                .is_ok()
        );
    }

    #[test]
    fn update_records_only_what_changed() {
        Scenario::<Webhook>::given(vec![created()])
            .when(
                WebhookCommand::Update {
                    url: Some("https://hooks.example.com/keel".into()),
                    event_types: Some(vec!["*".into()]),
                    description: Some("".into()),
                },
                &ctx(1),
                now(),
            )
            .then(vec![Event::WebhookUpdated(WebhookUpdated {
                webhook_id: wid(),
                url: None,
                event_types: Some(vec!["*".into()]),
                description: Some(None),
                at: now(),
            })]);
        Scenario::<Webhook>::given(vec![created()])
            .when(
                WebhookCommand::Update { url: None, event_types: None, description: Some("billing".into()) },
                &ctx(1),
                now(),
            )
            .then(vec![]);
        let r = Scenario::<Webhook>::given(vec![created()]).when(
            WebhookCommand::Update { url: Some("https://localhost/".into()), event_types: None, description: None },
            &ctx(1),
            now(),
        );
        assert_eq!(field_of(r.result()), ["url"]);
    }

    #[test]
    fn rotation_keeps_the_previous_secret_for_the_grace_period() {
        Scenario::<Webhook>::given(vec![created()])
            .when(WebhookCommand::RotateSecret { secret: secret(2) }, &ctx(1), now())
            .then(vec![Event::WebhookSecretRotated(WebhookSecretRotated {
                webhook_id: wid(),
                secret: secret(2),
                previous_valid_until: now() + TimeDelta::hours(24),
                at: now(),
            })]);
    }

    #[test]
    fn a_replay_starts_at_a_past_time_or_a_position() {
        let at = now() - TimeDelta::hours(1);
        Scenario::<Webhook>::given(vec![created()])
            .when(WebhookCommand::Replay { from: at.to_rfc3339() }, &ctx(1), now())
            .then(vec![Event::WebhookReplayRequested(WebhookReplayRequested {
                webhook_id: wid(),
                from: ReplayFrom::Time(at),
                at: now(),
            })]);
        Scenario::<Webhook>::given(vec![created()])
            .when(WebhookCommand::Replay { from: "812.40".into() }, &ctx(1), now())
            .then(vec![Event::WebhookReplayRequested(WebhookReplayRequested {
                webhook_id: wid(),
                from: ReplayFrom::Position { xid: 812, position: 40 },
                at: now(),
            })]);
        let future = now() + TimeDelta::hours(1);
        Scenario::<Webhook>::given(vec![created()])
            .when(WebhookCommand::Replay { from: future.to_rfc3339() }, &ctx(1), now())
            .then(vec![Event::WebhookReplayRequested(WebhookReplayRequested {
                webhook_id: wid(),
                from: ReplayFrom::Time(future),
                at: now(),
            })]);
        assert!(WebhookCommand::Replay { from: "yesterday".into() }.check_fails());
    }

    #[test]
    fn a_deleted_endpoint_takes_no_further_command() {
        for cmd in [
            WebhookCommand::Delete,
            WebhookCommand::RotateSecret { secret: secret(3) },
            WebhookCommand::Replay { from: "1.1".into() },
            WebhookCommand::Update { url: None, event_types: None, description: Some("x".into()) },
        ] {
            Scenario::<Webhook>::given(vec![created(), deleted()])
                .when(cmd.clone(), &ctx(0), now())
                .then_error(DomainError::NotFound("webhook"));
            Scenario::<Webhook>::given(vec![]).when(cmd, &ctx(0), now()).then_error(DomainError::NotFound("webhook"));
        }
    }

    #[test]
    fn suspended_tenants_cannot_manage_endpoints() {
        let c = WebhookContext { suspended: true, ..ctx(0) };
        Scenario::<Webhook>::given(vec![])
            .when(create("https://hooks.example.com/", &["*"]), &c, now())
            .then_error(DomainError::TenantSuspended);
    }

    impl WebhookCommand {
        fn check_fails(&self) -> bool {
            Webhook::check_input(self).is_err()
        }
    }
}
