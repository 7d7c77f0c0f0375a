//! Read tables: how projections write them and how the query side reads them.

pub mod members;
pub mod projects;
pub mod tasks;
pub mod tenants;
pub mod throughput;
pub mod usage;

/// One decoded event of a projection batch.
pub type Item<'a> = (&'a crate::log::RecordedEvent, keel_domain::Event);

/// Splits a batch into maximal runs of events of the same type, in log order: a run of creations
/// can be written with one statement without reordering anything.
pub fn runs<'a, 'b>(items: &'b [Item<'a>]) -> impl Iterator<Item = &'b [Item<'a>]> {
    items.chunk_by(|a, b| std::mem::discriminant(&a.1) == std::mem::discriminant(&b.1))
}
