//! `keel subscribe`: runs one GraphQL subscription over `/graphql/ws` (graphql-transport-ws) and
//! prints each result as one JSON line, so a shell can watch changes the way GraphiQL does.

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// What to subscribe to, where, and when to stop.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Keel's base URL (`http://host:port`) or the WebSocket URL itself.
    pub url: String,
    pub token: String,
    pub query: String,
    pub variables: Option<Value>,
    /// Stop after this many results.
    pub count: Option<u64>,
    /// Give up (exit 1) when the results asked for have not all arrived by then.
    pub timeout: Option<Duration>,
}

/// The WebSocket endpoint for a base URL: `http://h:p` → `ws://h:p/graphql/ws`.
pub fn ws_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim_end_matches('/');
    let (scheme, rest) = url.split_once("://").context("the URL needs a scheme, e.g. http://localhost:8080")?;
    let scheme = match scheme {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => bail!("unsupported URL scheme {other:?} (http, https, ws or wss)"),
    };
    let path = if rest.ends_with("/graphql/ws") { "" } else { "/graphql/ws" };
    Ok(format!("{scheme}://{rest}{path}"))
}

/// Runs the subscription, writing each result (`{"data": ...}` or `{"errors": ...}`) to `out`.
pub async fn run(sub: &Subscription, out: &mut (impl std::io::Write + Send)) -> anyhow::Result<u64> {
    let work = receive(sub, out);
    match sub.timeout {
        Some(t) => tokio::time::timeout(t, work)
            .await
            .map_err(|_| anyhow::anyhow!("no {} within {}", wanted(sub.count), humantime::format_duration(t)))?,
        None => work.await,
    }
}

fn wanted(count: Option<u64>) -> String {
    match count {
        Some(1) => "result".into(),
        Some(n) => format!("{n} results"),
        None => "end of the subscription".into(),
    }
}

async fn receive(sub: &Subscription, out: &mut (impl std::io::Write + Send)) -> anyhow::Result<u64> {
    let url = ws_url(&sub.url)?;
    let mut req = url.as_str().into_client_request().context("the WebSocket URL")?;
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().expect("a valid header"));
    let (mut ws, _) =
        tokio_tungstenite::connect_async(req).await.with_context(|| format!("cannot connect to {url}"))?;
    let init = json!({"type": "connection_init", "payload": {"token": sub.token}});
    ws.send(Message::text(init.to_string())).await?;
    let mut payload = json!({"query": sub.query});
    if let Some(v) = &sub.variables {
        payload["variables"] = v.clone();
    }
    let mut received = 0u64;
    while let Some(msg) = ws.next().await {
        let text = match msg? {
            Message::Text(t) => t.to_string(),
            Message::Close(frame) => {
                let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                bail!("the server closed the subscription: {why}");
            }
            _ => continue,
        };
        let m: Value = serde_json::from_str(&text).context("the server sent something that is not JSON")?;
        match m["type"].as_str() {
            Some("connection_ack") => {
                let subscribe = json!({"id": "1", "type": "subscribe", "payload": payload});
                ws.send(Message::text(subscribe.to_string())).await?;
            }
            Some("ping") => ws.send(Message::text(json!({"type": "pong"}).to_string())).await?,
            Some("next") => {
                writeln!(out, "{}", m["payload"])?;
                out.flush()?;
                received += 1;
                if sub.count.is_some_and(|n| received >= n) {
                    ws.send(Message::text(json!({"id": "1", "type": "complete"}).to_string())).await?;
                    let _ = ws.close(None).await;
                    return Ok(received);
                }
            }
            Some("error") => bail!("the subscription was refused: {}", m["payload"]),
            Some("complete") => return Ok(received),
            _ => {}
        }
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::ws_url;

    #[test]
    fn a_base_url_becomes_the_subscription_endpoint() {
        assert_eq!(ws_url("http://localhost:8080").unwrap(), "ws://localhost:8080/graphql/ws");
        assert_eq!(ws_url("https://keel.example/").unwrap(), "wss://keel.example/graphql/ws");
        assert_eq!(ws_url("ws://h:1/graphql/ws").unwrap(), "ws://h:1/graphql/ws");
        assert!(ws_url("localhost:8080").is_err());
        assert!(ws_url("ftp://h").is_err());
    }
}
