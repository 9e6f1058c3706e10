//! What the core sees of an HTTP request: borrowed views, so the shell fills it without copies.

use std::net::IpAddr;

/// Request headers as the host hands them over: lower-case names, in arrival order.
pub type Headers = [(String, String)];

#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The normalized path, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a Headers,
    /// The client address (see `client_address`), when an `ip` rule or key needs it.
    pub client_ip: Option<IpAddr>,
}

impl<'a> Request<'a> {
    /// The first value of a header; `name` must be lower-case.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, for those that may repeat (such as `cookie`).
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A CORS preflight: `OPTIONS` carrying `Origin` and `Access-Control-Request-Method`.
    pub fn is_cors_preflight(&self) -> bool {
        self.method == "OPTIONS"
            && self.header("origin").is_some()
            && self.header("access-control-request-method").is_some()
    }
}

/// The host part of an Envoy `source.address` (`1.2.3.4:5678`, `[::1]:5678`, or a bare
/// address), so that every connection of one client shares its `ip` bucket.
pub fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match address.rsplit_once(':') {
        // A single colon separates the port; several mean a bare IPv6 address.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("10.1.2.3:5678"), "10.1.2.3");
        assert_eq!(strip_port("[::1]:5678"), "::1");
        assert_eq!(strip_port("[2001:db8::1]:80"), "2001:db8::1");
        assert_eq!(strip_port("2001:db8::1"), "2001:db8::1");
        assert_eq!(strip_port("10.1.2.3"), "10.1.2.3");
        assert_eq!(strip_port(""), "");
        assert_eq!(strip_port("[broken"), "broken");
    }
}
