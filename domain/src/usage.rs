//! Usage recording: each call is a usage batch of its own stream; each record is idempotent by
//! its id, and a calendar month never goes over the plan's quota.

use crate::aggregate::{Aggregate, Decide, StreamType};
use crate::error::{DomainError, Fields, Limit};
use crate::event::{Event, UsageRecord, UsageRecorded};
use crate::ids::UsageBatchId;
use crate::plan::Plan;
use crate::values::{Metric, RecordId};
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use std::collections::{BTreeMap, HashSet};

pub const MAX_RECORDS: usize = 1000;
/// The most units one record may carry (10^12).
pub const MAX_QUANTITY: u64 = 1_000_000_000_000;
/// The most units a tenant may record in one calendar month, whatever its plan (10^15, the
/// ceiling of an "unlimited" plan): one full call of `MAX_RECORDS` records of `MAX_QUANTITY`
/// fits, and the totals of 9,000 months still fit in a PostgreSQL `bigint`, so no counter or
/// sum over them can overflow.
pub const MAX_MONTH_UNITS: u64 = 1_000_000_000_000_000;
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

/// One call's records, under an id the caller chose (so that `decide` stays deterministic).
#[derive(Debug, Clone)]
pub struct RecordUsage {
    pub batch_id: UsageBatchId,
    pub records: Vec<UsageInput>,
}

/// A usage batch: the stream of one call's `UsageRecorded`. Its rules are about the tenant's
/// months and record ids (the context), not about its own state, which is never loaded.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UsageBatch {
    pub id: Option<UsageBatchId>,
}

impl Aggregate for UsageBatch {
    const STREAM_TYPE: StreamType = StreamType::Usage;

    fn apply(mut self, event: &Event) -> Self {
        if let Event::UsageRecorded(e) = event {
            self.id = Some(e.batch_id);
        }
        self
    }
}

impl Decide for UsageBatch {
    type Command = RecordUsage;
    type Context = UsageContext;

    /// Validates every record, then decides which are new and whether they fit each month's quota.
    fn decide(&self, cmd: RecordUsage, ctx: &UsageContext, now: DateTime<Utc>) -> Result<Vec<Event>, DomainError> {
        record_usage(cmd.batch_id, cmd.records, ctx, now)
    }
}

/// The units a month may hold under `plan` (none: the ceiling any sum stays below).
pub fn month_limit(plan: Option<Plan>) -> u64 {
    plan.and_then(Plan::monthly_usage_limit).map_or(MAX_MONTH_UNITS, |l| l.min(MAX_MONTH_UNITS))
}

fn record_usage(
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
    let limit = month_limit(ctx.plan);
    let over = DomainError::LimitExceeded { limit: Limit::UsageUnits, limit_value: limit };
    let added = units_by_month(&fresh).ok_or_else(|| over.clone())?;
    for (month, units) in added {
        let before = ctx.month_units.get(&month).copied().unwrap_or(0);
        // A sum that does not fit in u64 is over any limit too.
        if before.checked_add(units).is_none_or(|total| total > limit) {
            return Err(over);
        }
    }
    Ok(vec![Event::UsageRecorded(UsageRecorded { batch_id, records: fresh, at: now })])
}

/// Units per calendar month of `records`; `None` if a sum does not fit in a `u64`.
pub fn units_by_month(records: &[UsageRecord]) -> Option<BTreeMap<NaiveDate, u64>> {
    let mut by_month: BTreeMap<NaiveDate, u64> = BTreeMap::new();
    for r in records {
        let units = by_month.entry(month_of(r.occurred_at)).or_default();
        *units = units.checked_add(r.quantity)?;
    }
    Some(by_month)
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
        } else if r.quantity.unsigned_abs() > MAX_QUANTITY {
            f.push(&format!("records[{i}].quantity"), &format!("must be at most {MAX_QUANTITY}"));
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
    use crate::aggregate::testing::Scenario;
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
    /// Records this call's `records` in a new batch.
    fn record(records: Vec<UsageInput>, ctx: &UsageContext) -> Result<Vec<Event>, DomainError> {
        Scenario::<UsageBatch>::given(vec![]).when(RecordUsage { batch_id: batch(), records }, ctx, now()).result()
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
        let r = record(vec![rec("a", 10, "2026-11-01T00:00:00Z")], &free(&[("2026-11-01", 9_990)], &[]));
        assert_eq!(r, Ok(vec![recorded(&[("a", 10, "2026-11-01T00:00:00Z")])]));
    }

    #[test]
    fn a_month_never_goes_over_its_quota() {
        let r = record(vec![rec("a", 11, "2026-11-30T23:59:59Z")], &free(&[("2026-11-01", 9_990)], &[]));
        assert_eq!(r, Err(DomainError::LimitExceeded { limit: Limit::UsageUnits, limit_value: 10_000 }));
        // Another month has its own quota.
        let r = record(vec![rec("a", 11, "2026-10-31T23:59:59Z")], &free(&[("2026-11-01", 9_990)], &[]));
        assert!(r.is_ok());
        let enterprise = UsageContext { plan: Some(Plan::Enterprise), ..free(&[("2026-11-01", 1_000_000)], &[]) };
        assert!(record(vec![rec("a", 1_000_000_000, "2026-11-02T00:00:00Z")], &enterprise).is_ok());
    }

    #[test]
    fn a_record_carries_at_most_the_maximum_quantity() {
        let enterprise = UsageContext { plan: Some(Plan::Enterprise), ..free(&[], &[]) };
        let at = "2026-11-02T00:00:00Z";
        assert!(record(vec![rec("a", MAX_QUANTITY as i64, at)], &enterprise).is_ok());
        for too_many in [MAX_QUANTITY as i64 + 1, i64::MAX] {
            let err = record(vec![rec("a", too_many, at)], &enterprise).unwrap_err();
            assert_eq!(
                err,
                DomainError::Validation(vec![FieldError::new("records[0].quantity", "must be at most 1000000000000")])
            );
        }
    }

    #[test]
    fn an_unlimited_plan_still_stops_at_the_monthly_ceiling() {
        let at = "2026-11-02T00:00:00Z";
        let ceiling = Err(DomainError::LimitExceeded { limit: Limit::UsageUnits, limit_value: MAX_MONTH_UNITS });
        // A full call of the largest records fits an empty month exactly ...
        let full: Vec<_> = (0..MAX_RECORDS).map(|i| rec(&format!("r{i}"), MAX_QUANTITY as i64, at)).collect();
        let enterprise =
            |units: u64| UsageContext { plan: Some(Plan::Enterprise), ..free(&[("2026-11-01", units)], &[]) };
        assert!(record(full.clone(), &enterprise(0)).is_ok());
        // ... and one unit more does not.
        assert_eq!(record(full, &enterprise(1)), ceiling);
        assert_eq!(record(vec![rec("a", 1, at)], &enterprise(MAX_MONTH_UNITS)), ceiling);
    }

    #[test]
    fn a_monthly_total_that_would_overflow_is_refused_not_wrapped() {
        let at = "2026-11-02T00:00:00Z";
        // A counter near u64::MAX (never written by Keel, but read from the store): the total
        // would wrap to a small number under the quota; it is refused instead.
        for plan in [Plan::Free, Plan::Enterprise] {
            let c = UsageContext { plan: Some(plan), ..free(&[("2026-11-01", u64::MAX - 1)], &[]) };
            let err = record(vec![rec("a", 2, at), rec("b", 2, at)], &c).unwrap_err();
            assert!(matches!(err, DomainError::LimitExceeded { limit: Limit::UsageUnits, .. }), "{plan:?}: {err:?}");
        }
        // A batch whose own sum does not fit in u64.
        let huge = |id: &str| UsageRecord {
            id: RecordId::parse("id", id).unwrap(),
            metric: Metric::parse("m", "api.calls").unwrap(),
            quantity: u64::MAX / 2 + 1,
            occurred_at: at.parse().unwrap(),
        };
        assert_eq!(units_by_month(&[huge("a"), huge("b")]), None);
        assert_eq!(units_by_month(&[huge("a")]).unwrap().into_values().collect::<Vec<_>>(), vec![u64::MAX / 2 + 1]);
    }

    #[test]
    fn records_seen_before_are_skipped_not_counted() {
        let r = record(
            vec![rec("old", 5_000, "2026-11-01T00:00:00Z"), rec("new", 5, "2026-11-01T00:00:00Z")],
            &free(&[("2026-11-01", 9_995)], &["old"]),
        );
        assert_eq!(r, Ok(vec![recorded(&[("new", 5, "2026-11-01T00:00:00Z")])]));
        let r = record(vec![rec("old", 5, "2026-11-01T00:00:00Z")], &free(&[], &["old"]));
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
        let err = record(bad, &free(&[], &[])).unwrap_err();
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
        let err = record(vec![], &free(&[], &[])).unwrap_err();
        assert_eq!(err, DomainError::Validation(vec![FieldError::new("records", "must hold 1 to 1000 records")]));
        let many = (0..1001).map(|i| rec(&format!("r{i}"), 1, "2026-11-01T00:00:00Z")).collect();
        assert!(record(many, &free(&[], &[])).is_err());
    }

    #[test]
    fn suspended_tenants_cannot_record_usage() {
        let c = UsageContext { suspended: true, ..free(&[], &[]) };
        assert_eq!(record(vec![rec("a", 1, "2026-11-01T00:00:00Z")], &c), Err(DomainError::TenantSuspended));
    }
}
