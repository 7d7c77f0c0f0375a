//! Usage recording: each record is idempotent by its id, and a calendar month never goes over
//! the plan's quota.

use crate::error::{DomainError, Fields, Limit};
use crate::event::{Event, UsageRecord, UsageRecorded};
use crate::ids::UsageBatchId;
use crate::plan::Plan;
use crate::values::{Metric, RecordId};
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use std::collections::{BTreeMap, HashSet};

pub const MAX_RECORDS: usize = 1000;
/// A record may be stamped a little ahead of the server's clock, not more.
pub const FUTURE_TOLERANCE_SECONDS: i64 = 300;

#[derive(Debug, Clone)]
pub struct UsageInput {
    pub id: String,
    pub metric: String,
    pub quantity: i64,
    pub occurred_at: DateTime<Utc>,
}

/// The calendar month (UTC) a moment falls in, as its first day.
pub fn month_of(t: DateTime<Utc>) -> NaiveDate {
    NaiveDate::from_ymd_opt(t.year(), t.month(), 1).expect("the first of a month exists")
}

/// What the store knows, read in the command's transaction with the months' counters locked.
#[derive(Debug, Clone, Default)]
pub struct UsageContext {
    pub plan: Option<Plan>,
    pub suspended: bool,
    /// Units already recorded in each month the records fall in.
    pub month_units: BTreeMap<NaiveDate, u64>,
    /// Ids of these records that were recorded before (they are skipped, not counted again).
    pub already_recorded: HashSet<String>,
}

/// Validates every record, then decides which are new and whether they fit each month's quota.
pub fn record_usage(
    batch_id: UsageBatchId,
    records: Vec<UsageInput>,
    ctx: &UsageContext,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, DomainError> {
    if ctx.suspended {
        return Err(DomainError::TenantSuspended);
    }
    let parsed = validate(records, now)?;
    let fresh: Vec<UsageRecord> =
        parsed.into_iter().filter(|r| !ctx.already_recorded.contains(r.id.as_str())).collect();
    if fresh.is_empty() {
        return Ok(vec![]);
    }
    if let Some(limit) = ctx.plan.and_then(Plan::monthly_usage_limit) {
        let mut added: BTreeMap<NaiveDate, u64> = BTreeMap::new();
        for r in &fresh {
            *added.entry(month_of(r.occurred_at)).or_default() += r.quantity;
        }
        for (month, units) in added {
            let before = ctx.month_units.get(&month).copied().unwrap_or(0);
            if before.saturating_add(units) > limit {
                return Err(DomainError::LimitExceeded { limit: Limit::UsageUnits, limit_value: limit });
            }
        }
    }
    Ok(vec![Event::UsageRecorded(UsageRecorded { batch_id, records: fresh, at: now })])
}

/// The months a set of records falls in (for the store to lock their counters).
pub fn months(records: &[UsageInput]) -> Vec<NaiveDate> {
    let mut m: Vec<NaiveDate> = records.iter().map(|r| month_of(r.occurred_at)).collect();
    m.sort();
    m.dedup();
    m
}

fn validate(records: Vec<UsageInput>, now: DateTime<Utc>) -> Result<Vec<UsageRecord>, DomainError> {
    if records.is_empty() || records.len() > MAX_RECORDS {
        return Err(DomainError::field("records", format!("must hold 1 to {MAX_RECORDS} records")));
    }
    let mut f = Fields::default();
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        let id = f.check(RecordId::parse(&format!("records[{i}].id"), &r.id));
        if id.is_some() && !seen.insert(r.id.clone()) {
            f.push(&format!("records[{i}].id"), "appears more than once in this call");
        }
        let metric = f.check(Metric::parse(&format!("records[{i}].metric"), &r.metric));
        if r.quantity <= 0 {
            f.push(&format!("records[{i}].quantity"), "must be greater than 0");
        }
        if r.occurred_at > now + TimeDelta::seconds(FUTURE_TOLERANCE_SECONDS) {
            f.push(&format!("records[{i}].occurred_at"), "must not be in the future");
        }
        if let (Some(id), Some(metric)) = (id, metric) {
            out.push(UsageRecord { id, metric, quantity: r.quantity.max(0) as u64, occurred_at: r.occurred_at });
        }
    }
    f.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldError;
    use uuid::Uuid;

    fn now() -> DateTime<Utc> {
        "2026-12-15T12:00:00Z".parse().unwrap()
    }
    fn rec(id: &str, qty: i64, at: &str) -> UsageInput {
        UsageInput { id: id.into(), metric: "api.calls".into(), quantity: qty, occurred_at: at.parse().unwrap() }
    }
    fn free(units: &[(&str, u64)], recorded: &[&str]) -> UsageContext {
        UsageContext {
            plan: Some(Plan::Free),
            suspended: false,
            month_units: units.iter().map(|(m, u)| (m.parse().unwrap(), *u)).collect(),
            already_recorded: recorded.iter().map(|s| s.to_string()).collect(),
        }
    }
    fn batch() -> UsageBatchId {
        UsageBatchId(Uuid::from_u128(5))
    }
    fn recorded(ids: &[(&str, u64, &str)]) -> Event {
        Event::UsageRecorded(UsageRecorded {
            batch_id: batch(),
            records: ids
                .iter()
                .map(|(id, q, at)| UsageRecord {
                    id: RecordId::parse("id", id).unwrap(),
                    metric: Metric::parse("m", "api.calls").unwrap(),
                    quantity: *q,
                    occurred_at: at.parse().unwrap(),
                })
                .collect(),
            at: now(),
        })
    }

    #[test]
    fn records_within_the_quota_are_recorded() {
        let r = record_usage(
            batch(),
            vec![rec("a", 10, "2026-11-01T00:00:00Z")],
            &free(&[("2026-11-01", 9_990)], &[]),
            now(),
        );
        assert_eq!(r, Ok(vec![recorded(&[("a", 10, "2026-11-01T00:00:00Z")])]));
    }

    #[test]
    fn a_month_never_goes_over_its_quota() {
        let r = record_usage(
            batch(),
            vec![rec("a", 11, "2026-11-30T23:59:59Z")],
            &free(&[("2026-11-01", 9_990)], &[]),
            now(),
        );
        assert_eq!(r, Err(DomainError::LimitExceeded { limit: Limit::UsageUnits, limit_value: 10_000 }));
        // Another month has its own quota.
        let r = record_usage(
            batch(),
            vec![rec("a", 11, "2026-10-31T23:59:59Z")],
            &free(&[("2026-11-01", 9_990)], &[]),
            now(),
        );
        assert!(r.is_ok());
        let enterprise = UsageContext { plan: Some(Plan::Enterprise), ..free(&[("2026-11-01", u64::MAX / 2)], &[]) };
        assert!(
            record_usage(batch(), vec![rec("a", 1_000_000_000, "2026-11-02T00:00:00Z")], &enterprise, now()).is_ok()
        );
    }

    #[test]
    fn records_seen_before_are_skipped_not_counted() {
        let r = record_usage(
            batch(),
            vec![rec("old", 5_000, "2026-11-01T00:00:00Z"), rec("new", 5, "2026-11-01T00:00:00Z")],
            &free(&[("2026-11-01", 9_995)], &["old"]),
            now(),
        );
        assert_eq!(r, Ok(vec![recorded(&[("new", 5, "2026-11-01T00:00:00Z")])]));
        let r = record_usage(batch(), vec![rec("old", 5, "2026-11-01T00:00:00Z")], &free(&[], &["old"]), now());
        assert_eq!(r, Ok(vec![]));
    }

    #[test]
    fn each_bad_record_field_is_named() {
        let bad = vec![
            rec("ok", 1, "2026-11-01T00:00:00Z"),
            UsageInput {
                id: "".into(),
                metric: "API Calls".into(),
                quantity: 0,
                occurred_at: "2027-01-01T00:00:00Z".parse().unwrap(),
            },
            rec("ok", 1, "2026-11-01T00:00:00Z"),
        ];
        let err = record_usage(batch(), bad, &free(&[], &[]), now()).unwrap_err();
        let DomainError::Validation(f) = err else { panic!("{err:?}") };
        let names: Vec<_> = f.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "records[1].id",
                "records[1].metric",
                "records[1].quantity",
                "records[1].occurred_at",
                "records[2].id"
            ]
        );
    }

    #[test]
    fn a_call_holds_one_to_a_thousand_records() {
        let err = record_usage(batch(), vec![], &free(&[], &[]), now()).unwrap_err();
        assert_eq!(err, DomainError::Validation(vec![FieldError::new("records", "must hold 1 to 1000 records")]));
        let many = (0..1001).map(|i| rec(&format!("r{i}"), 1, "2026-11-01T00:00:00Z")).collect();
        assert!(record_usage(batch(), many, &free(&[], &[]), now()).is_err());
    }

    #[test]
    fn suspended_tenants_cannot_record_usage() {
        let c = UsageContext { suspended: true, ..free(&[], &[]) };
        assert_eq!(
            record_usage(batch(), vec![rec("a", 1, "2026-11-01T00:00:00Z")], &c, now()),
            Err(DomainError::TenantSuspended)
        );
    }
}
