//! Every error code a client can see, in one table: its HTTP status, title, problem `type` URI
//! and GraphQL `extensions.code`. REST problems and GraphQL errors both take a `Code`, and the
//! OpenAPI document lists the table (`x-keel-error-codes`), so a code is written once.

use axum::http::StatusCode;

/// Where a code is answered: in a problem+json body, in a GraphQL error, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Rest,
    Graphql,
    Both,
}

impl Surface {
    pub const fn as_str(self) -> &'static str {
        match self {
            Surface::Rest => "rest",
            Surface::Graphql => "graphql",
            Surface::Both => "both",
        }
    }
}

/// The table: `Variant = STATUS, "code", "Title", "GRAPHQL_CODE", Surface;`. The code is the
/// problem's `code` and the tail of its `type` (`urn:keel:problem:<code>`); the GraphQL code is
/// its `extensions.code`. Codes are stable: clients match on them.
macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $status:ident, $code:literal, $title:literal, $graphql:literal, $surface:ident; )*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $( $(#[$doc])* $name, )*
        }

        impl Code {
            /// Every code, in table order.
            pub const ALL: &'static [Code] = &[$( Code::$name, )*];

            pub fn status(self) -> StatusCode {
                match self {
                    $( Code::$name => StatusCode::$status, )*
                }
            }

            /// The problem's `code`, kebab-case.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Code::$name => $code, )*
                }
            }

            pub const fn title(self) -> &'static str {
                match self {
                    $( Code::$name => $title, )*
                }
            }

            /// The GraphQL `extensions.code`, upper snake case.
            pub const fn graphql(self) -> &'static str {
                match self {
                    $( Code::$name => $graphql, )*
                }
            }

            pub const fn surface(self) -> Surface {
                match self {
                    $( Code::$name => Surface::$surface, )*
                }
            }
        }
    };
}

codes! {
    // Requests the edge refuses before any handler runs.
    Unauthorized = UNAUTHORIZED, "unauthorized", "Unauthorized", "UNAUTHORIZED", Rest;
    BadRequest = BAD_REQUEST, "bad-request", "Bad request", "BAD_REQUEST", Both;
    MalformedJson = BAD_REQUEST, "malformed-json", "Malformed JSON", "MALFORMED_JSON", Rest;
    UnsupportedMediaType = UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type", "UNSUPPORTED_MEDIA_TYPE", Both;
    PayloadTooLarge = PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large", "PAYLOAD_TOO_LARGE", Both;
    MethodNotAllowed = METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", "METHOD_NOT_ALLOWED", Both;
    /// GraphQL only: an `Accept` that names neither GraphQL response type.
    NotAcceptable = NOT_ACCEPTABLE, "not-acceptable", "Not acceptable", "NOT_ACCEPTABLE", Graphql;
    BadIfMatch = BAD_REQUEST, "bad-if-match", "Bad request", "BAD_IF_MATCH", Rest;
    BadIdempotencyKey = BAD_REQUEST, "bad-idempotency-key", "Bad request", "BAD_IDEMPOTENCY_KEY", Rest;
    UnexpectedBody = BAD_REQUEST, "unexpected-body", "Bad request", "UNEXPECTED_BODY", Rest;
    BadConsistencyToken = BAD_REQUEST, "bad-consistency-token", "Bad consistency token", "BAD_CONSISTENCY_TOKEN", Rest;
    // GraphQL documents refused before they run (400 under application/graphql-response+json).
    GraphqlParseFailed = BAD_REQUEST, "graphql-parse-failed", "GraphQL parse failed", "GRAPHQL_PARSE_FAILED", Graphql;
    GraphqlValidationFailed = BAD_REQUEST, "graphql-validation-failed", "GraphQL validation failed", "GRAPHQL_VALIDATION_FAILED", Graphql;
    QueryTooComplex = BAD_REQUEST, "query-too-complex", "Query too complex", "QUERY_TOO_COMPLEX", Graphql;
    // What the domain, the store and the request's own state say.
    Validation = UNPROCESSABLE_ENTITY, "validation", "Invalid input", "BAD_USER_INPUT", Both;
    LimitExceeded = UNPROCESSABLE_ENTITY, "limit-exceeded", "Plan limit reached", "LIMIT_EXCEEDED", Rest;
    Forbidden = FORBIDDEN, "forbidden", "Forbidden", "FORBIDDEN", Both;
    NotFound = NOT_FOUND, "not-found", "Not found", "NOT_FOUND", Rest;
    AlreadyExists = CONFLICT, "already-exists", "Already exists", "ALREADY_EXISTS", Rest;
    Taken = CONFLICT, "taken", "Already taken", "TAKEN", Rest;
    RuleViolated = CONFLICT, "rule-violated", "Rule violated", "RULE_VIOLATED", Rest;
    Conflict = CONFLICT, "conflict", "Conflict", "CONFLICT", Rest;
    IdempotencyKeyReused = CONFLICT, "idempotency-key-reused", "Idempotency-Key reused", "IDEMPOTENCY_KEY_REUSED", Rest;
    PreconditionFailed = PRECONDITION_FAILED, "precondition-failed", "Precondition failed", "PRECONDITION_FAILED", Rest;
    /// Too many requests for this tenant (or platform operator) in the rate limit's window.
    RateLimited = TOO_MANY_REQUESTS, "rate-limited", "Rate limited", "RATE_LIMITED", Both;
    TenantSuspended = LOCKED, "tenant-suspended", "Tenant suspended", "TENANT_SUSPENDED", Rest;
    // The server's side.
    Internal = INTERNAL_SERVER_ERROR, "internal", "Internal error", "INTERNAL", Both;
    Timeout = SERVICE_UNAVAILABLE, "timeout", "Deadline exceeded", "TIMEOUT", Both;
    /// The database cancelled a statement at its role's `statement_timeout`.
    DependencyTimeout = GATEWAY_TIMEOUT, "dependency-timeout", "Dependency timed out", "DEPENDENCY_TIMEOUT", Both;
    ShuttingDown = SERVICE_UNAVAILABLE, "shutting-down", "Shutting down", "SHUTTING_DOWN", Rest;
    /// Shed: too much work in flight (for the service, or for the tenant on the command path).
    Overloaded = SERVICE_UNAVAILABLE, "overloaded", "Overloaded", "OVERLOADED", Both;
    /// The database cannot be reached (the availability breaker is open): nothing was written.
    DatabaseUnavailable = SERVICE_UNAVAILABLE, "database-unavailable", "Database unavailable", "UNAVAILABLE", Both;
    /// A command's `COMMIT` lost its connection and the database could not be asked whether it
    /// landed: a repeat with the same `Idempotency-Key` is safe.
    OutcomeUnknown = SERVICE_UNAVAILABLE, "outcome-unknown", "Outcome unknown", "OUTCOME_UNKNOWN", Rest;
    NotReady = SERVICE_UNAVAILABLE, "not-ready", "Not ready", "NOT_READY", Rest;
}

impl Code {
    /// The problem's `type`: `urn:keel:problem:<code>`.
    pub fn type_uri(self) -> String {
        format!("urn:keel:problem:{}", self.as_str())
    }

    /// The table as JSON, for the OpenAPI document's `x-keel-error-codes`.
    pub fn table() -> serde_json::Value {
        Code::ALL
            .iter()
            .map(|c| {
                serde_json::json!({
                    "code": c.as_str(),
                    "status": c.status().as_u16(),
                    "title": c.title(),
                    "type": c.type_uri(),
                    "graphql": c.graphql(),
                    "surface": c.surface().as_str(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Code;
    use std::collections::HashSet;

    #[test]
    fn no_two_codes_share_a_code_or_a_graphql_code() {
        let codes: HashSet<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        let graphql: HashSet<_> = Code::ALL.iter().map(|c| c.graphql()).collect();
        assert_eq!((codes.len(), graphql.len()), (Code::ALL.len(), Code::ALL.len()));
    }

    #[test]
    fn codes_are_kebab_and_graphql_codes_upper_snake() {
        for c in Code::ALL {
            let (k, g) = (c.as_str(), c.graphql());
            assert!(k.chars().all(|x| x.is_ascii_lowercase() || x == '-'), "{k}");
            assert!(g.chars().all(|x| x.is_ascii_uppercase() || x == '_'), "{g}");
            assert!(c.status().is_client_error() || c.status().is_server_error(), "{k}");
            assert_eq!(c.type_uri(), format!("urn:keel:problem:{k}"));
        }
    }
}
