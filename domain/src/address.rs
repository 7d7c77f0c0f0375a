//! Where a webhook may point: the one classification of hosts and addresses that are not a
//! public destination (loopback, private, link-local, unique-local, shared, metadata), used when
//! an endpoint's URL is given and, on the resolved address, when a delivery connects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names that name this machine or a cloud's metadata service whatever DNS says.
const PRIVATE_NAMES: &[&str] = &["localhost", "metadata", "metadata.google.internal"];

/// Whether `ip` is an address a webhook must not reach unless private destinations are allowed:
/// every class but `Public`.
pub fn is_private_ip(ip: IpAddr) -> bool {
    classify(ip) != AddressClass::Public
}

/// What kind of address an IP is; only `Public` is reached without `allow_private`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// RFC 1918: 10/8, 172.16/12, 192.168/16; and the deprecated IPv6 site-local fec0::/10.
    Private,
    /// 100.64.0.0/10 (carrier-grade NAT; also where some clouds put metadata services).
    SharedAddressSpace,
    /// 169.254.0.0/16 and fe80::/10.
    LinkLocal,
    /// 169.254.169.254 and fd00:ec2::254: cloud instance metadata.
    Metadata,
    /// fc00::/7.
    UniqueLocal,
    /// 224.0.0.0/4, 255.255.255.255, ff00::/8.
    Multicast,
    /// Documentation, benchmarking, protocol-assignment and future-use ranges
    /// (192.0.0/24, 192.0.2/24, 198.18/15, 198.51.100/24, 203.0.113/24, 240/4, 2001:db8::/32,
    /// 100::/64, the deprecated IPv4-compatible ::/96).
    Reserved,
}

impl AddressClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::SharedAddressSpace => "shared address space",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "cloud metadata",
            AddressClass::UniqueLocal => "unique local",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
        }
    }
}

/// The class of `ip`. An IPv6 address that carries an IPv4 one — IPv4-mapped `::ffff:a.b.c.d`,
/// NAT64 `64:ff9b::/96`, 6to4 `2002::/16` — is the class of the IPv4 address inside.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => AddressClass::Metadata,
        _ if ip.is_broadcast() => AddressClass::Multicast,
        (0, ..) => AddressClass::Unspecified,
        (127, ..) => AddressClass::Loopback,
        (10, ..) | (192, 168, _) => AddressClass::Private,
        (172, 16..=31, _) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::SharedAddressSpace,
        (169, 254, _) => AddressClass::LinkLocal,
        (224..=239, ..) => AddressClass::Multicast,
        (240..=255, ..) => AddressClass::Reserved,
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Reserved,
        (198, 18..=19, _) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded_v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return classify_v4(embedded_v4(s[1], s[2]));
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return AddressClass::Metadata;
    }
    match s[0] {
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_loopback() => AddressClass::Loopback,
        // The rest of ::/96: IPv4-compatible addresses, deprecated.
        0 if s[1..6] == [0; 5] => AddressClass::Reserved,
        0x0100 if s[1..4] == [0; 3] => AddressClass::Reserved,
        0x2001 if s[1] == 0x0db8 => AddressClass::Reserved,
        0xfc00..=0xfdff => AddressClass::UniqueLocal,
        0xfe80..=0xfebf => AddressClass::LinkLocal,
        0xfec0..=0xfeff => AddressClass::Private,
        0xff00..=0xffff => AddressClass::Multicast,
        _ => AddressClass::Public,
    }
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Whether a host name (not an address) names a private destination by itself: `localhost`,
/// anything under `.localhost`, the metadata services' names, and any single-label name
/// (`intranet`, `cz9`: resolved through the resolver's search domains, so an internal name).
/// Case and a trailing dot are ignored.
pub fn is_private_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    PRIVATE_NAMES.contains(&h.as_str()) || h.ends_with(".localhost") || !h.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_private() {
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_private_ip(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn public_addresses_are_not() {
        for a in ["93.184.216.34", "172.32.0.1", "100.128.0.1", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!is_private_ip(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn localhost_and_metadata_names_are_private() {
        for n in ["localhost", "LOCALHOST.", "api.localhost", "metadata.google.internal", "intranet", "cz9", "CZ9."] {
            assert!(is_private_name(n), "{n}");
        }
        assert!(!is_private_name("hooks.example.com"));
        assert!(!is_private_name("localhost.example.com"));
    }
}
