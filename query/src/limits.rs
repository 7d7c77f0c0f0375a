//! What a GraphQL document may cost before Keel parses, validates or runs it: bracket nesting
//! (checked on the raw text, so the recursive parser never sees a deep value), fields after
//! fragments are expanded, depth, complexity, body size and time.

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Name, ServerError, ServerResult, Variables};
use keel_gateway::Code;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The limits of one GraphQL request; every one is a setting (`KEEL_GRAPHQL_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphqlLimits {
    /// Selection depth of a data query (introspection is counted apart).
    pub max_depth: usize,
    /// Complexity: one per field, a connection's children times its `first`.
    pub max_complexity: usize,
    /// Brackets (`{ [ (`) open at once anywhere in the document, input values included.
    pub max_nesting: usize,
    /// Fields in the operation once every fragment spread is replaced by the fragment.
    pub max_fields: u64,
    /// Largest body of `POST /graphql`, in bytes.
    pub body_limit: usize,
    /// Deadline of one query (a subscription's each push).
    pub timeout: Duration,
}

impl Default for GraphqlLimits {
    fn default() -> Self {
        GraphqlLimits {
            max_depth: 10,
            max_complexity: 10_000,
            max_nesting: 32,
            max_fields: 2_000,
            body_limit: 256 * 1024,
            timeout: Duration::from_secs(10),
        }
    }
}

pub(crate) fn limit_error(message: String) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", Code::QueryTooComplex.graphql());
    e.extensions = Some(ext);
    e
}

/// Whether brackets nest deeper than `max` anywhere outside strings and comments. Linear, with
/// no recursion, so it is safe on any input.
pub fn nesting_exceeds(query: &str, max: usize) -> bool {
    let b = query.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    i += if b[i..].starts_with(b"\\\"\"\"") { 4 } else { 1 };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Selections (fields and fragment spreads) of every operation once fragment spreads are
/// expanded, saturating. Each fragment is counted once (memoised), so a document that would
/// expand to billions costs its own size.
pub fn expanded_fields(doc: &ExecutableDocument) -> u64 {
    fn count(
        doc: &ExecutableDocument,
        set: &SelectionSet,
        memo: &mut HashMap<Name, u64>,
        visiting: &mut Vec<Name>,
    ) -> u64 {
        let mut n = 0u64;
        for s in &set.items {
            let add = match &s.node {
                Selection::Field(f) => 1u64.saturating_add(count(doc, &f.node.selection_set.node, memo, visiting)),
                Selection::InlineFragment(f) => count(doc, &f.node.selection_set.node, memo, visiting),
                Selection::FragmentSpread(spread) => 1u64.saturating_add({
                    let name = &spread.node.fragment_name.node;
                    if let Some(&c) = memo.get(name) {
                        c
                    } else if visiting.contains(name) {
                        // A cycle: validation refuses it; count nothing here.
                        0
                    } else if let Some(fragment) = doc.fragments.get(name) {
                        visiting.push(name.clone());
                        let c = count(doc, &fragment.node.selection_set.node, memo, visiting);
                        visiting.pop();
                        memo.insert(name.clone(), c);
                        c
                    } else {
                        0
                    }
                }),
            };
            n = n.saturating_add(add);
        }
        n
    }
    let mut memo = HashMap::new();
    let mut visiting = Vec::new();
    doc.operations
        .iter()
        .map(|(_, op)| count(doc, &op.node.selection_set.node, &mut memo, &mut visiting))
        .fold(0u64, u64::saturating_add)
}

/// Whether the operation that would run reads only the schema (`__schema`, `__type`,
/// `__typename` at its root): such a query is held to the field limit, not to depth and complexity,
/// so standard tools can load the schema.
pub fn is_introspection(doc: &ExecutableDocument, operation_name: Option<&str>) -> bool {
    fn only_meta(doc: &ExecutableDocument, set: &SelectionSet, hops: usize) -> bool {
        hops < 8
            && set.items.iter().all(|s| match &s.node {
                Selection::Field(f) => f.node.name.node.starts_with("__"),
                Selection::InlineFragment(f) => only_meta(doc, &f.node.selection_set.node, hops + 1),
                Selection::FragmentSpread(spread) => doc
                    .fragments
                    .get(&spread.node.fragment_name.node)
                    .is_some_and(|f| only_meta(doc, &f.node.selection_set.node, hops + 1)),
            })
    }
    let op = match (&doc.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        _ => None,
    };
    op.is_some_and(|op| !op.node.selection_set.node.items.is_empty() && only_meta(doc, &op.node.selection_set.node, 0))
}

/// The document, when it passes the limits that must hold before anything recursive runs:
/// bracket nesting (before the parser), then expanded selections (before async-graphql's own
/// recursion-depth check, which walks every expanded fragment).
pub fn vet(query: &str, limits: &GraphqlLimits) -> ServerResult<ExecutableDocument> {
    if nesting_exceeds(query, limits.max_nesting) {
        return Err(limit_error(format!(
            "the document nests brackets deeper than {} levels (KEEL_GRAPHQL_MAX_NESTING)",
            limits.max_nesting
        )));
    }
    let doc = async_graphql::parser::parse_query(query).map_err(ServerError::from)?;
    if expanded_fields(&doc) > limits.max_fields {
        return Err(limit_error(format!(
            "the document has more than {} fields once its fragments are expanded (KEEL_GRAPHQL_MAX_FIELDS)",
            limits.max_fields
        )));
    }
    Ok(doc)
}

/// Marks a request whose document `POST /graphql` or `GET /graphql` has already vetted (and
/// parsed), so the guard does not parse it a second time.
pub(crate) struct Vetted;

/// Vets every document before async-graphql parses and checks it. Installed in the schema, so
/// `/graphql` and `/graphql/ws` share it.
pub(crate) struct Guard(pub(crate) GraphqlLimits);

impl ExtensionFactory for Guard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(GuardExtension(self.0))
    }
}

struct GuardExtension(GraphqlLimits);

#[async_graphql::async_trait::async_trait]
impl Extension for GuardExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if ctx.data_opt::<Vetted>().is_none() {
            vet(query, &self.0)?;
        }
        next.run(ctx, query, variables).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    #[test]
    fn nesting_counts_brackets_outside_strings_and_comments() {
        assert!(!nesting_exceeds("{ a { b { c } } }", 3));
        assert!(nesting_exceeds("{ a { b { c { d } } } }", 3));
        assert!(!nesting_exceeds(r#"{ a(s: "[[[[[[[[[[") }"#, 3));
        assert!(!nesting_exceeds("{ a # [[[[[[[[[\n }", 3));
        assert!(!nesting_exceeds("{ a(s: \"\"\" [[[[[[ \\\"\"\" [[[[ \"\"\") }", 3));
        assert!(nesting_exceeds(&format!("{{ p(id: {}1{}) }}", "[".repeat(100_000), "]".repeat(100_000)), 32));
    }

    #[test]
    fn expansion_is_counted_without_expanding() {
        // Ten fragments each spreading the next level's ten times, eight levels: 10^8 fields.
        let mut q = String::from("{ ...F0 }\n");
        for level in 0..8 {
            let spreads = (0..10).map(|_| format!("...F{}", level + 1)).collect::<Vec<_>>().join(" ");
            q.push_str(&format!("fragment F{level} on Query {{ a: __typename {spreads} }}\n"));
        }
        q.push_str("fragment F8 on Query { __typename }\n");
        let doc = parse_query(&q).unwrap();
        assert!(expanded_fields(&doc) > 100_000_000);
        assert_eq!(expanded_fields(&parse_query("{ a { b c } d }").unwrap()), 4);
    }

    #[test]
    fn introspection_is_recognised_only_at_the_root() {
        let intro = parse_query("query Q { __schema { types { name } } __typename }").unwrap();
        assert!(is_introspection(&intro, None));
        let mixed = parse_query("{ __schema { types { name } } projects { totalCount } }").unwrap();
        assert!(!is_introspection(&mixed, None));
        let two = parse_query("query A { __typename } query B { me { userId } }").unwrap();
        assert!(is_introspection(&two, Some("A")));
        assert!(!is_introspection(&two, Some("B")));
        assert!(!is_introspection(&two, None));
    }
}
