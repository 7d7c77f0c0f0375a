//! Where a webhook may be sent: the classification of an IP address (one pure function,
//! `classify`, kept in `keel_domain::address` so an endpoint's creation uses the same one) and the URL rules (`https`, no private address) that `safe_client` applies at
//! connect time and an endpoint's creation applies up front (docs/integration.md).

use std::net::IpAddr;

// The one classification of addresses, shared with the URL rules of an endpoint's creation.
pub use keel_domain::address::{AddressClass, classify};

/// What a destination may be: `https` only unless `allow_http` (`KEEL_WEBHOOKS_ALLOW_HTTP`),
/// public addresses only unless `allow_private` (`KEEL_WEBHOOKS_ALLOW_PRIVATE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    pub allow_http: bool,
    pub allow_private: bool,
}

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a webhook URL is https (http only where KEEL_WEBHOOKS_ALLOW_HTTP is set), not {0}")]
    Scheme(String),
    #[error("a webhook URL names a host")]
    NoHost,
    #[error("a webhook URL has no user name or password")]
    Credentials,
    #[error("{host} is a {} address ({ip}): webhooks go to public addresses only", class.as_str())]
    Address { host: String, ip: IpAddr, class: AddressClass },
    #[error("{0} does not resolve to any address")]
    Unresolved(String),
}

impl DestinationPolicy {
    /// Whether an address may be connected to.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        match classify(ip) {
            AddressClass::Public => Ok(()),
            _ if self.allow_private => Ok(()),
            class => Err(Refusal::Address { host: host.to_owned(), ip, class }),
        }
    }

    /// The rules that need no DNS: the scheme, a host, no credentials, and a literal IP's
    /// class. A host name's addresses are checked when it is resolved, at connect time.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(Refusal::Scheme(other.to_owned())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        match url.host() {
            None => Err(Refusal::NoHost),
            Some(url::Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(&ip.to_string(), IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn every_non_public_range_is_named() {
        let cases = [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedAddressSpace),
            ("100.100.100.200", SharedAddressSpace),
            ("100.127.255.255", SharedAddressSpace),
            ("169.254.0.1", LinkLocal),
            ("169.254.169.254", Metadata),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Multicast),
            ("240.0.0.1", Reserved),
            ("192.0.2.10", Reserved),
            ("198.18.0.1", Reserved),
            ("203.0.113.5", Reserved),
            ("::", Unspecified),
            ("::1", Loopback),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fd00:ec2::254", Metadata),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Private),
            ("ff02::1", Multicast),
            ("2001:db8::1", Reserved),
            ("::127.0.0.1", Reserved),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:169.254.169.254", Metadata),
            ("64:ff9b::a9fe:a9fe", Metadata),
            ("2002:7f00:1::", Loopback),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_public_including_the_edges_of_private_ranges() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "192.169.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "2002:0808:0808::",
            "fbff::1",
        ] {
            assert_eq!(class(ip), Public, "{ip}");
        }
    }

    #[test]
    fn urls_need_https_a_host_no_credentials_and_a_public_literal_ip() {
        let strict = DestinationPolicy::default();
        let open = DestinationPolicy { allow_http: true, allow_private: true };
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(strict.check_url(&url("https://hooks.example.com/x")), Ok(()));
        assert_eq!(strict.check_url(&url("http://hooks.example.com/x")), Err(Refusal::Scheme("http".into())));
        assert_eq!(open.check_url(&url("http://hooks.example.com/x")), Ok(()));
        assert_eq!(open.check_url(&url("ftp://hooks.example.com/x")), Err(Refusal::Scheme("ftp".into())));
        assert_eq!(open.check_url(&url("https://u:p@hooks.example.com/")), Err(Refusal::Credentials));
        for literal in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::ffff:a9fe:a9fe]/",
            "https://2130706433/", // 127.0.0.1 as one number: the URL parser makes it an IPv4
            "https://0x7f.1/",
            "https://10.0.0.1:8443/",
        ] {
            assert!(matches!(strict.check_url(&url(literal)), Err(Refusal::Address { .. })), "{literal}");
            assert_eq!(open.check_url(&url(literal)), Ok(()), "{literal}");
        }
        assert_eq!(strict.check_url(&url("https://1.1.1.1/")), Ok(()));
    }
}
