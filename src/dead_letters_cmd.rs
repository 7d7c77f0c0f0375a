//! `keel projections dead-letters`: list the events projections parked, `retry` one through its
//! projection after a fix (`keel_runner::dead_letters`), `skip` one, and the `history` of those
//! actions, each done as the operator `cli:<os user>` and recorded (`store::dead_letter`). A
//! platform tool: it shows every tenant's ids, which no tenant API does.

use crate::cli::{DeadLettersArgs, DeadLettersCmd};
use anyhow::{Context, bail};
use keel_projections::Projection;
use keel_runner::dead_letters::{self, Retried};
use keel_store::Store;
use keel_store::dead_letter::{self as store_dl, DeadLetter, Skipped};

pub async fn run(store: &Store, args: DeadLettersArgs) -> anyhow::Result<()> {
    let pool = store.projector();
    match args.command {
        None => {
            let name = args.name.as_deref().map(projection_name).transpose()?;
            let list = store_dl::list(pool, name, args.acknowledged).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_list(&list);
            }
        }
        Some(DeadLettersCmd::Retry { id: Some(id), .. }) => {
            let dl = store_dl::get(pool, id).await?.with_context(|| format!("there is no dead letter {id}"))?;
            let projection = consumer(&dl.projection)?;
            if !report(dead_letters::retry(store, &projection, id, &operator()).await?) {
                bail!("dead letter {id} failed again: still parked");
            }
        }
        Some(DeadLettersCmd::Retry { id: None, all }) => {
            let name = projection_name(all.as_deref().context("an ID or --all NAME")?)?;
            let projection = consumer(name)?;
            let ids = store_dl::active_ids(pool, name).await?;
            let actor = operator();
            let mut failed = 0;
            for id in &ids {
                if !report(dead_letters::retry(store, &projection, *id, &actor).await?) {
                    failed += 1;
                }
            }
            println!("{name}: {} of {} dead letters applied", ids.len() - failed, ids.len());
            if failed > 0 {
                bail!("{failed} failed again: still parked");
            }
        }
        Some(DeadLettersCmd::Skip { id }) => match store_dl::skip(pool, id, &operator()).await? {
            Skipped::Acknowledged(dl) => println!(
                "dead letter {id} ({} position {}, {} of tenant {}): acknowledged by {}",
                dl.projection,
                dl.position,
                dl.event_type,
                dl.tenant_id,
                dl.acknowledged_by.as_deref().unwrap_or("-")
            ),
            Skipped::Already(dl) => bail!(
                "dead letter {id} was acknowledged before, by {} at {}",
                dl.acknowledged_by.as_deref().unwrap_or("-"),
                dl.acknowledged_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            ),
            Skipped::NotFound => bail!("there is no dead letter {id}"),
        },
        Some(DeadLettersCmd::History { name, json }) => {
            let name = name.as_deref().map(projection_name).transpose()?;
            let actions = store_dl::actions(pool, name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&actions)?);
            } else {
                println!(
                    "{:>6} {:>6} {:<12} {:>10} {:<36} {:<20} {:<6} {:<12} {:<20} {:<25} error",
                    "action", "letter", "projection", "position", "tenant", "type", "what", "outcome", "by", "at"
                );
                for a in actions {
                    println!(
                        "{:>6} {:>6} {:<12} {:>10} {:<36} {:<20} {:<6} {:<12} {:<20} {:<25} {}",
                        a.id,
                        a.dead_letter_id,
                        a.projection,
                        a.position,
                        a.tenant_id,
                        a.event_type,
                        a.action,
                        a.outcome,
                        a.actor,
                        a.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        a.error.as_deref().unwrap_or("-")
                    );
                }
            }
        }
    }
    Ok(())
}

/// Prints how a retry ended; true when it applied.
fn report(r: Retried) -> bool {
    match r {
        Retried::Applied { dead_letter: dl, later_in_stream } => {
            println!(
                "dead letter {} ({} position {}, {} of tenant {}): applied",
                dl.id, dl.projection, dl.position, dl.event_type, dl.tenant_id
            );
            if later_in_stream > 0 {
                println!(
                    "  note: {later_in_stream} later event(s) of its stream were applied while it was parked; \
                     for {} to show them after it, run `keel projections rebuild {}`",
                    dl.projection, dl.projection
                );
            }
            true
        }
        Retried::Failed(dl) => {
            println!(
                "dead letter {} ({} position {}, {} of tenant {}): failed again (attempt {}): {}",
                dl.id, dl.projection, dl.position, dl.event_type, dl.tenant_id, dl.attempts, dl.error
            );
            false
        }
    }
}

fn print_list(list: &[DeadLetter]) {
    println!(
        "{:>6} {:<12} {:>10} {:<36} {:<20} {:<36} {:>8} {:<25} error",
        "id", "projection", "position", "event", "type", "tenant", "attempts", "parked at"
    );
    for d in list {
        println!(
            "{:>6} {:<12} {:>10} {:<36} {:<20} {:<36} {:>8} {:<25} {}",
            d.id,
            d.projection,
            d.position,
            d.event_id,
            d.event_type,
            d.tenant_id,
            d.attempts,
            d.parked_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            d.error
        );
        if let (Some(by), Some(at)) = (&d.acknowledged_by, d.acknowledged_at) {
            println!("{:>6} acknowledged by {by} at {}", "", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
    }
}

/// `name` when it is a projection of this binary.
fn projection_name(name: &str) -> anyhow::Result<&str> {
    if keel_projections::names().any(|n| n == name) {
        Ok(name)
    } else {
        bail!("no projection {name} (one of: {})", keel_projections::names().collect::<Vec<_>>().join(", "))
    }
}

fn consumer(name: &str) -> anyhow::Result<Projection> {
    Projection::named(name).with_context(|| format!("no consumer named {name} in this binary to re-apply it"))
}

fn operator() -> String {
    crate::tenant_cmd::operator()
}
