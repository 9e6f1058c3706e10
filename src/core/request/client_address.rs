//! The client address that `ip` rules and `ip` rate-limit keys see: the downstream address,
//! or with `client_ip.xff_trusted_hops` = N the Nth `X-Forwarded-For` entry from the right.
//! Entries further left are whatever the client sent, so they are never used: with too few
//! entries, or no address in the Nth one, the downstream address is used instead.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cidr::canonical;
use super::view::Headers;

const XFF: &str = "x-forwarded-for";
/// RFC 6874 zone identifiers are interface names or numbers; longer ones are not addresses.
const MAX_ZONE: usize = 64;

/// The address to decide on, in canonical form (IPv4-mapped IPv6 as IPv4); `None` when
/// neither the chosen entry nor the downstream address is an address.
pub fn choose(
    downstream: Option<&str>,
    headers: &Headers,
    trusted_hops: Option<u32>,
) -> Option<IpAddr> {
    let forwarded = trusted_hops
        .and_then(|n| nth_from_right(headers, n))
        .and_then(parse);
    forwarded.or_else(|| downstream.and_then(parse))
}

/// Entry `n` (1 = the last) of every `X-Forwarded-For` header taken as one list, in order.
fn nth_from_right(headers: &Headers, n: u32) -> Option<&str> {
    let skip = usize::try_from(n).ok()?.checked_sub(1)?;
    headers
        .iter()
        .rev()
        .filter(|(name, _)| name == XFF)
        .flat_map(|(_, value)| value.rsplit(','))
        .nth(skip)
}

/// One address as proxies and Envoy write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`, `fe80::1%eth0`; surrounding spaces ignored. A port
/// or zone says nothing about who the client is and is dropped. Anything else is `None`.
pub fn parse(text: &str) -> Option<IpAddr> {
    let text = text.trim_matches([' ', '\t']);
    let addr = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(is_port) {
            return None;
        }
        IpAddr::V6(ipv6_with_zone(inside)?)
    } else if let Ok(addr) = text.parse::<IpAddr>() {
        addr
    } else if let Some(v4) = ipv4_with_port(text) {
        IpAddr::V4(v4)
    } else {
        IpAddr::V6(ipv6_with_zone(text)?)
    };
    Some(canonical(addr))
}

fn ipv4_with_port(text: &str) -> Option<Ipv4Addr> {
    let (host, port) = text.split_once(':')?;
    is_port(port).then(|| host.parse().ok()).flatten()
}

/// An IPv6 address, with or without a `%zone` suffix.
fn ipv6_with_zone(text: &str) -> Option<Ipv6Addr> {
    let addr = match text.split_once('%') {
        Some((addr, zone)) => {
            let ok_zone = !zone.is_empty()
                && zone.len() <= MAX_ZONE
                && zone
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            ok_zone.then_some(addr)?
        }
        None => text,
    };
    addr.parse().ok()
}

fn is_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> Vec<(String, String)> {
        let mut h = vec![("host".to_string(), "api".to_string())];
        h.extend(values.iter().map(|v| (XFF.to_string(), v.to_string())));
        h
    }

    #[test]
    fn parses_addresses_with_ports_brackets_and_zones() {
        let cases = [
            ("10.1.2.3", "10.1.2.3"),
            (" 10.1.2.3 ", "10.1.2.3"),
            ("10.1.2.3:5678", "10.1.2.3"),
            ("[::1]:5678", "::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("fe80::1%eth0", "fe80::1"),
            ("[fe80::1%25]:80", "fe80::1"),
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("[::ffff:10.0.0.1]:80", "10.0.0.1"),
            ("::ffff:a00:1", "10.0.0.1"),
            // Many colons are an IPv6 address, never an address and a port.
            ("::1:80", "::1:80"),
            ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Some(ip(want)), "{text:?}");
        }
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            " ",
            "unknown",
            "_hidden",
            "10.1.2",
            "10.1.2.3.4",
            "010.1.2.3",
            "0x0a.1.2.3",
            "10.1.2.3:",
            "10.1.2.3:99999",
            "10.1.2.3:80:80",
            "10.1.2.3:+80",
            "10.1.2.3/8",
            "[10.1.2.3]",
            "[::1",
            "[::1]x",
            "[::1]:",
            "::1]",
            "fe80::1%",
            "fe80::1%eth 0",
            "fe80::1%eth0%1",
            "10.1.2.3%eth0",
            "::1 ::2",
            "2001:db8::1:80:80:80:80:80:80",
            "\"10.1.2.3\"",
            "for=10.1.2.3",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let long_zone = format!("fe80::1%{}", "a".repeat(MAX_ZONE + 1));
        assert_eq!(parse(&long_zone), None);
    }

    #[test]
    fn without_hops_the_downstream_address_is_used() {
        let h = xff(&["10.9.9.9"]);
        assert_eq!(choose(Some("127.0.0.1"), &h, None), Some(ip("127.0.0.1")));
        assert_eq!(choose(Some("[::1]:4000"), &h, None), Some(ip("::1")));
        assert_eq!(choose(None, &h, None), None);
        assert_eq!(choose(Some("pipe"), &h, None), None);
    }

    #[test]
    fn the_nth_entry_from_the_right() {
        let h = xff(&["203.0.113.9, 198.51.100.7, 10.0.0.2"]);
        let d = Some("127.0.0.1");
        assert_eq!(choose(d, &h, Some(1)), Some(ip("10.0.0.2")));
        assert_eq!(choose(d, &h, Some(2)), Some(ip("198.51.100.7")));
        assert_eq!(choose(d, &h, Some(3)), Some(ip("203.0.113.9")));
        // Several headers are one list, in order.
        let split = xff(&["203.0.113.9", "198.51.100.7,10.0.0.2"]);
        assert_eq!(choose(d, &split, Some(2)), Some(ip("198.51.100.7")));
        assert_eq!(choose(d, &split, Some(3)), Some(ip("203.0.113.9")));
        // Spaces and ports around an entry do not matter.
        let spaced = xff(&["  203.0.113.9:1234 ,\t[2001:db8::7]:443 "]);
        assert_eq!(choose(d, &spaced, Some(1)), Some(ip("2001:db8::7")));
        assert_eq!(choose(d, &spaced, Some(2)), Some(ip("203.0.113.9")));
    }

    #[test]
    fn a_client_can_never_choose_the_address() {
        let d = Some("127.0.0.1");
        // The trusted proxy appended 198.51.100.7; whatever the client put before it (in
        // the same header or in headers of its own) stays to the left of it.
        for spoofed in [
            xff(&["10.0.0.1, 198.51.100.7"]),
            xff(&["10.0.0.1, 10.0.0.1, 10.0.0.1, 198.51.100.7"]),
            xff(&["10.0.0.1", "198.51.100.7"]),
            xff(&["10.0.0.1,", "198.51.100.7"]),
        ] {
            assert_eq!(choose(d, &spoofed, Some(1)), Some(ip("198.51.100.7")));
        }
        // Too few entries: never a value further left, but the downstream address.
        assert_eq!(
            choose(d, &xff(&["10.0.0.1"]), Some(2)),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(choose(d, &xff(&[]), Some(1)), Some(ip("127.0.0.1")));
        assert_eq!(choose(d, &xff(&[""]), Some(1)), Some(ip("127.0.0.1")));
        // Garbage in the chosen entry: the downstream address, not a neighbour.
        for garbage in [
            "10.0.0.1, junk",
            "10.0.0.1, ",
            "10.0.0.1,unknown",
            "10.0.0.1, 10.0.0.300",
        ] {
            assert_eq!(
                choose(d, &xff(&[garbage]), Some(1)),
                Some(ip("127.0.0.1")),
                "{garbage:?}"
            );
        }
        assert_eq!(
            choose(d, &xff(&["10.0.0.1, junk, 198.51.100.7"]), Some(2)),
            Some(ip("127.0.0.1"))
        );
        // An absurd hop count is just "too few entries".
        assert_eq!(
            choose(d, &xff(&["10.0.0.1"]), Some(u32::MAX)),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(
            choose(d, &xff(&["10.0.0.1"]), Some(0)),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let h = xff(&["::ffff:192.0.2.1"]);
        assert_eq!(choose(None, &h, Some(1)), Some(ip("192.0.2.1")));
        assert_eq!(
            choose(Some("[::ffff:127.0.0.1]:3000"), &[], None),
            Some(ip("127.0.0.1"))
        );
    }
}
