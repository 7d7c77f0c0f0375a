//! `DATABASE_URL` as a secret: it may carry a password, so it never prints one.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// A PostgreSQL connection URL. `Debug` shows where it points (scheme, user, host, port,
/// database) with the password and the query (which may hold `password=` too) masked; a URL
/// that does not parse prints as redacted. There is no `Display`: `expose_secret` is the way in.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl ExposeSecret<str> for DatabaseUrl {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        DatabaseUrl(url.into())
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        DatabaseUrl(url.into())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(self.0.expose_secret()) {
            Ok(mut u) => {
                if u.password().is_some() && u.set_password(Some("***")).is_err() {
                    return f.write_str("DatabaseUrl([REDACTED])");
                }
                if u.query().is_some() {
                    u.set_query(Some("***"));
                }
                u.set_fragment(None);
                f.debug_tuple("DatabaseUrl").field(&u.as_str()).finish()
            }
            Err(_) => f.write_str("DatabaseUrl([REDACTED])"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_the_password_and_the_query_and_keeps_the_place() {
        let url = DatabaseUrl::from("postgres://keel:hunter2-pw@db.example:5433/keel?sslpassword=s3cr3t-q");
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2-pw") && !shown.contains("s3cr3t-q"), "{shown}");
        assert_eq!(shown, r#"DatabaseUrl("postgres://keel:***@db.example:5433/keel?***")"#);
        assert_eq!(url.expose_secret(), "postgres://keel:hunter2-pw@db.example:5433/keel?sslpassword=s3cr3t-q");
    }

    #[test]
    fn a_url_that_does_not_parse_prints_redacted() {
        let url = DatabaseUrl::from("host=db password=hunter2-pw");
        assert_eq!(format!("{url:?}"), "DatabaseUrl([REDACTED])");
    }

    #[test]
    fn a_url_without_a_password_prints_whole() {
        let url = DatabaseUrl::from("postgres://postgres@127.0.0.1:5432/postgres");
        assert_eq!(format!("{url:?}"), r#"DatabaseUrl("postgres://postgres@127.0.0.1:5432/postgres")"#);
    }
}
