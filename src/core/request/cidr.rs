//! Address ranges for a rule's `ip` lists, matched on parsed `std::net` addresses, never on
//! strings. Parsing is std's (it refuses octal, hex and shortened IPv4 forms); what is added
//! here is the prefix length and the mask comparison. An IPv4-mapped IPv6 address
//! (`::ffff:10.0.0.1`) is the IPv4 address it maps, on either side.

use std::net::IpAddr;

/// One range: an address whose bits past `prefix` are zero, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A rule's `ip`: a client in `deny`, or outside a non-empty `allow`, is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

/// IPv4-mapped IPv6 addresses as IPv4, so that one address has one form.
pub fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

impl Cidr {
    /// `ADDRESS/PREFIX`, or a bare address for that one address. Refused: a prefix longer
    /// than the address, a prefix that is not plain decimal, bits set past the prefix (a
    /// typo of the range meant, such as `10.1.0.0/8`), zones, brackets, ports, spaces.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("{text:?} is not an IPv4 or IPv6 address or CIDR range"))?;
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => parse_prefix(p)
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        if masked(addr, prefix) != addr {
            return Err(format!(
                "{text:?} has bits set past the prefix (the range is {}/{prefix})",
                masked(addr, prefix)
            ));
        }
        Ok(Cidr::canonical_range(addr, prefix))
    }

    /// Whether `addr` is in this range (both sides in canonical form).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        addr.is_ipv4() == self.network.is_ipv4() && masked(addr, self.prefix) == self.network
    }

    /// `::ffff:a.b.c.d/96+n` is the IPv4 range `a.b.c.d/n`.
    fn canonical_range(addr: IpAddr, prefix: u8) -> Cidr {
        match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    network: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => Cidr {
                    network: addr,
                    prefix,
                },
            },
            _ => Cidr {
                network: addr,
                prefix,
            },
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl IpList {
    /// Deny wins over allow; an unknown client address is refused by any list (fail closed).
    pub fn permits(&self, client: Option<IpAddr>) -> bool {
        let Some(addr) = client else {
            return false;
        };
        if self.deny.iter().any(|c| c.contains(addr)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(addr))
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Plain decimal without sign or leading zeros (`u8::from_str` would take `+8` and `08`).
fn parse_prefix(p: &str) -> Option<u8> {
    let plain = !p.is_empty()
        && p.len() <= 3
        && p.bytes().all(|b| b.is_ascii_digit())
        && (p == "0" || !p.starts_with('0'));
    plain.then(|| p.parse().ok()).flatten()
}

/// `addr` with every bit past `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn list(allow: &[&str], deny: &[&str]) -> IpList {
        let p = |v: &[&str]| v.iter().map(|c| Cidr::parse(c).unwrap()).collect();
        IpList {
            allow: p(allow),
            deny: p(deny),
        }
    }

    #[test]
    fn parses_ranges_and_bare_addresses() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(
            Cidr::parse("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1/128");
        assert_eq!(Cidr::parse("::/0").unwrap().to_string(), "::/0");
        // Written with leading zeros in a group or upper case: the same range.
        assert_eq!(
            Cidr::parse("2001:0DB8:0000::/48").unwrap(),
            Cidr::parse("2001:db8::/48").unwrap()
        );
    }

    #[test]
    fn mapped_ranges_are_ipv4_ranges() {
        assert_eq!(
            Cidr::parse("::ffff:10.0.0.0/104").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap()
        );
        assert_eq!(
            Cidr::parse("::ffff:10.1.2.3").unwrap(),
            Cidr::parse("10.1.2.3/32").unwrap()
        );
        assert_eq!(
            Cidr::parse("::ffff:0:0/96").unwrap(),
            Cidr::parse("0.0.0.0/0").unwrap()
        );
        // Shorter than /96 it is an IPv6 range, and IPv4 clients (mapped or not) are IPv4.
        let wide = Cidr::parse("::/80").unwrap();
        assert_eq!(wide.to_string(), "::/80");
        assert!(!wide.contains(ip("::ffff:10.0.0.1")));
        assert!(wide.contains(ip("::1")));
    }

    #[test]
    fn refuses_what_is_not_a_range() {
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/08",
            "10.0.0.0/8/8",
            "10.0.0.0 /8",
            " 10.0.0.0/8",
            "10.0.0.0/ 8",
            "10.1.0.0/8",
            "10.0.0.1/31",
            "2001:db8::1/32",
            "2001:db8::/129",
            "2001:db8::/1000",
            "10.0.0",
            "10.0.0.0.0",
            "010.0.0.0/8",
            "0x0a.0.0.0/8",
            "10.0.0.256",
            "fe80::1%eth0",
            "fe80::%eth0/64",
            "[::1]",
            "[::1]/128",
            "10.0.0.1:80",
            "localhost",
            "2001:db8:::/48",
            "2001:db8::g/128",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = Cidr::parse("10.1.0.0/8").unwrap_err();
        assert!(e.contains("10.0.0.0/8"), "{e}");
    }

    #[test]
    fn matching_is_on_addresses() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.0.0.1")));
        assert!(c.contains(ip("10.255.255.255")));
        assert!(!c.contains(ip("11.0.0.0")));
        assert!(!c.contains(ip("9.255.255.255")));
        // IPv4-mapped IPv6 addresses match their IPv4 range ...
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        assert!(c.contains(ip("::FFFF:a00:1")));
        // ... but an IPv4-compatible (deprecated) or NAT64 address is another address.
        assert!(!c.contains(ip("::10.0.0.1")));
        assert!(!c.contains(ip("64:ff9b::a00:1")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(v6.contains(ip("2001:0db8::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all_v6 = Cidr::parse("::/0").unwrap();
        assert!(all_v6.contains(ip("::1")));
        assert!(!all_v6.contains(ip("::ffff:127.0.0.1")), "that is IPv4");
        let all_v4 = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all_v4.contains(ip("::ffff:127.0.0.1")));
        assert!(!all_v4.contains(ip("::1")));
        let host = Cidr::parse("::1").unwrap();
        assert!(host.contains(ip("0:0:0:0:0:0:0:1")));
        assert!(!host.contains(ip("::2")));
    }

    #[test]
    fn deny_wins_and_unknown_clients_are_refused() {
        let both = list(&["10.0.0.0/8", "2001:db8::/32"], &["10.0.0.13"]);
        assert!(both.permits(Some(ip("10.0.0.12"))));
        assert!(!both.permits(Some(ip("10.0.0.13"))));
        assert!(!both.permits(Some(ip("::ffff:10.0.0.13"))));
        assert!(both.permits(Some(ip("2001:db8::5"))));
        assert!(!both.permits(Some(ip("192.168.0.1"))));
        assert!(!both.permits(None));
        let deny_only = list(&[], &["192.0.2.0/24"]);
        assert!(deny_only.permits(Some(ip("198.51.100.1"))));
        assert!(!deny_only.permits(Some(ip("192.0.2.77"))));
        assert!(!deny_only.permits(None), "fail closed");
        let allow_only = list(&["::1"], &[]);
        assert!(allow_only.permits(Some(ip("::1"))));
        assert!(!allow_only.permits(Some(ip("127.0.0.1"))));
    }
}
