//! Usage units as they are stored (a RecordUsage command reads its months' counters and the
//! record ids seen before in its read call, `write_path`).

use crate::error::StoreError;
use std::collections::BTreeMap;

/// Adds `quantity` to the units under `key`, as the `bigint` they are stored as; a sum that does
/// not fit is an error, never a wrapped number. (The domain's bounds keep every sum far below.)
pub(crate) fn add_units<K: Ord>(sums: &mut BTreeMap<K, i64>, key: K, quantity: u64) -> Result<(), StoreError> {
    let units = sums.entry(key).or_default();
    *units = i64::try_from(quantity)
        .ok()
        .and_then(|q| units.checked_add(q))
        .ok_or_else(|| StoreError::UsageOverflow(quantity))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_that_do_not_fit_a_bigint_are_an_error_not_a_wrapped_sum() {
        let mut sums = BTreeMap::new();
        add_units(&mut sums, "m", i64::MAX as u64).unwrap();
        assert!(matches!(add_units(&mut sums, "m", 1), Err(StoreError::UsageOverflow(_))));
        assert!(matches!(add_units(&mut sums, "other", u64::MAX), Err(StoreError::UsageOverflow(_))));
        assert_eq!(sums.get("m"), Some(&i64::MAX));
        add_units(&mut sums, "other", 2).unwrap();
        add_units(&mut sums, "other", 3).unwrap();
        assert_eq!(sums.get("other"), Some(&5));
    }
}
