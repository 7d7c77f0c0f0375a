//! A span for each GraphQL resolver that can read the database: every field whose type is an
//! object, an interface or a union (or a list of them), the root fields included. Fields of a
//! scalar or an enum are read off an object already loaded and get none, nor do a connection's
//! edges and nodes (read with their page), nor introspection.

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo};
use async_graphql::{ServerResult, Value};
use std::sync::Arc;
use tracing::Instrument;

pub(crate) struct ResolverSpans;

impl ExtensionFactory for ResolverSpans {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ResolverSpans)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ResolverSpans {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let named = info.return_type.trim_matches(|c| matches!(c, '[' | ']' | '!'));
        let composite = ctx.schema_env.registry.types.get(named).is_some_and(|t| t.is_composite());
        // A connection's edges and an edge's node were read with the page: no database there.
        let in_memory = info.parent_type.ends_with("Connection") || info.parent_type.ends_with("Edge");
        if !composite || in_memory || info.parent_type.starts_with("__") || info.name.starts_with("__") {
            return next.run(ctx, info).await;
        }
        let span = tracing::info_span!(
            "resolver",
            graphql.field = %format_args!("{}.{}", info.parent_type, info.name),
            graphql.path = %info.path_node,
        );
        next.run(ctx, info).instrument(span).await
    }
}
