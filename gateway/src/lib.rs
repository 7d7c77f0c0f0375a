//! The HTTP edge shared by the REST and GraphQL services: authentication, request context,
//! problem+json errors, JSON bodies, and request metrics.

pub mod auth;
pub mod codes;
pub mod context;
pub mod deadline;
pub mod json;
pub mod jwks;
pub mod limits;
pub mod metrics;
pub mod not_allowed;
pub mod problem;

pub use auth::{AuthError, Authenticator, Claims, JwtConfig, KeySource, Principal, Signer};
pub use codes::Code;
pub use json::JsonBody;
pub use jwks::RemoteJwksConfig;
pub use problem::{FieldError, Problem};
