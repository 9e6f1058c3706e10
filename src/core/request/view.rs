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
    /// `:path` as received, query included (DPoP's `htu` is compared with it).
    pub raw_path: &'a str,
    /// The downstream TLS client certificate's SHA-256 thumbprint (base64url of the DER's
    /// digest, RFC 8705 section 3.1), when the connection presented one.
    pub client_cert: ClientCert<'a>,
}

/// The client certificate, as far as the shell read it: reading it is a host call, made only
/// when a token turns out to be certificate-bound (the decision then asks for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCert<'a> {
    #[default]
    Unread,
    /// No TLS, or no client certificate.
    Absent,
    Thumbprint(&'a str),
}

impl<'a> ClientCert<'a> {
    pub fn from_option(t: Option<&'a str>) -> ClientCert<'a> {
        t.map_or(ClientCert::Absent, ClientCert::Thumbprint)
    }
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

/// RFC 8705's `x5t#S256` form (base64url of the 32-byte digest) of Envoy's
/// `connection.sha256_peer_certificate_digest` (the same digest in hex). `None` unless it is
/// exactly 64 hex digits.
pub fn cert_thumbprint_from_hex(hex: &str) -> Option<String> {
    use base64::Engine;
    if hex.len() != 64 {
        return None;
    }
    let nibble = |b: u8| (b as char).to_digit(16);
    let mut digest = Vec::with_capacity(32);
    for pair in hex.as_bytes().chunks_exact(2) {
        let (hi, lo) = (nibble(*pair.first()?)?, nibble(*pair.get(1)?)?);
        digest.push(u8::try_from(hi * 16 + lo).ok()?);
    }
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_digests_become_x5t_s256() {
        // SHA-256 of the empty string, hex and base64url.
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let want = Some("47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU".to_owned());
        assert_eq!(cert_thumbprint_from_hex(hex), want);
        assert_eq!(cert_thumbprint_from_hex(&hex.to_uppercase()), want);
        for bad in [
            "",
            "e3",
            &hex[1..],
            &format!("{}zz", &hex[2..]),
            &format!("{hex}00"),
        ] {
            assert_eq!(cert_thumbprint_from_hex(bad), None, "{bad}");
        }
    }

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
