//! `keel outbound status`: where every publisher and webhook endpoint stands
//! (docs/integration.md "Operating").

use anyhow::Context;
use keel_store::{MasterKey, PoolSizes, Store};

pub async fn status(url: &str, key: Option<MasterKey>, publishers: &[&str]) -> anyhow::Result<()> {
    let store = Store::connect(url, PoolSizes { writer: 1, reader: 1, projector: 2 }, key)
        .await
        .context("cannot connect (is the database migrated? run keel migrate)")?;
    println!(
        "{:<20} {:>12} {:>10} {:>9} {:<12} {:<34}",
        "publisher", "checkpoint", "lag", "lag (s)", "state", "lease holder"
    );
    for name in publishers {
        let st = keel_store::checkpoint::status(store.projector(), name).await?;
        println!(
            "{:<20} {:>12} {:>10} {:>9.1} {:<12} {:<34}",
            st.name,
            st.checkpoint.position,
            st.lag_events,
            st.lag_seconds,
            st.state,
            st.lease_holder.as_deref().unwrap_or("-")
        );
        if let Some(e) = st.last_error {
            println!("{:<20} last error: {e}", "");
        }
    }
    let endpoints = keel_store::webhook_delivery::statuses(store.projector()).await?;
    println!();
    println!(
        "{:<36} {:<36} {:<9} {:>8} {:>9} {:>5} {:>12} {:<20} {:<34} url",
        "tenant", "webhook", "state", "lag", "lag (s)", "fails", "delivered", "next attempt", "lease holder"
    );
    for e in &endpoints {
        println!(
            "{:<36} {:<36} {:<9} {:>8} {:>9.1} {:>5} {:>12} {:<20} {:<34} {}",
            e.tenant_id,
            e.webhook_id,
            e.state,
            e.pending,
            e.lag_seconds,
            e.consecutive_failures,
            e.delivered.map_or("-".to_owned(), |p| p.position.to_string()),
            e.next_attempt_at.map_or("-".to_owned(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            e.lease_holder.as_deref().unwrap_or("-"),
            e.url
        );
        if e.dropped > 0 {
            println!(
                "{:<36} {} events not queued (the queue was full, KEEL_WEBHOOKS_QUEUE_MAX): replay to resend",
                "", e.dropped
            );
        }
        if let Some(err) = &e.last_error {
            println!("{:<36} last error: {err}", "");
        }
    }
    if endpoints.is_empty() {
        println!("(no webhook endpoints)");
    }
    store.close().await;
    Ok(())
}
