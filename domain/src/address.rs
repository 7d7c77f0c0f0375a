//! Where a webhook may point: the one classification of hosts and addresses that are not a
//! public destination (loopback, private, link-local, unique-local, shared, metadata), used when
//! an endpoint's URL is given and, on the resolved address, when a delivery connects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names that name this machine or a cloud's metadata service whatever DNS says.
const PRIVATE_NAMES: &[&str] = &["localhost", "metadata", "metadata.google.internal"];

/// Whether `ip` is an address a webhook must not reach unless private destinations are allowed:
/// 0.0.0.0/8, 127.0.0.0/8, 10/8, 172.16/12, 192.168/16, 169.254/16 (link-local and the metadata
/// address 169.254.169.254), 100.64/10 (shared), multicast and broadcast; ::, ::1, fc00::/7,
/// fe80::/10, multicast, and IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64) by the
/// IPv4 rule.
pub fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..=127).contains(&b))
        || ip.is_multicast()
        || ip.is_broadcast()
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_private_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || ip.is_multicast()
}

/// The IPv4 address an IPv6 address carries: `::ffff:a.b.c.d`, `::a.b.c.d`, `64:ff9b::a.b.c.d`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        _ => None,
    }
}

/// Whether a host name (not an address) names a private destination by itself: `localhost`,
/// anything under `.localhost`, and the metadata services' names. Case and a trailing dot are
/// ignored.
pub fn is_private_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    PRIVATE_NAMES.contains(&h.as_str()) || h.ends_with(".localhost")
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
        for n in ["localhost", "LOCALHOST.", "api.localhost", "metadata.google.internal"] {
            assert!(is_private_name(n), "{n}");
        }
        assert!(!is_private_name("hooks.example.com"));
        assert!(!is_private_name("localhost.example.com"));
    }
}
