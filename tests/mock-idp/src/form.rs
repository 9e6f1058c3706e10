//! `application/x-www-form-urlencoded` bodies and HTTP Basic credentials.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Parses `a=b&c=d` with `form_urlencoded` (`+` is a space, `%XX` an escaped byte). That crate
/// passes a bad escape through and decodes bytes that are not UTF-8 lossily; a token request
/// with either is malformed here, so both are refused (a decoded U+FFFD counts as undecodable:
/// no OAuth parameter holds one).
pub fn parse_urlencoded(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let escapes_ok = body.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || body
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_ok {
        return Err("bad percent-escape in form body".to_string());
    }
    let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    if fields
        .iter()
        .any(|(n, v)| n.contains('\u{FFFD}') || v.contains('\u{FFFD}'))
    {
        return Err("form body is not UTF-8".to_string());
    }
    Ok(fields)
}

/// The value of a field that must appear at most once (RFC 6749 §3.1).
pub fn single<'a>(fields: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, String> {
    let mut found = fields.iter().filter(|(n, _)| n == name);
    let first = found.next();
    if found.next().is_some() {
        return Err(format!("parameter `{name}` given more than once"));
    }
    Ok(first.map(|(_, v)| v.as_str()))
}

/// One form-encoded value (`+` is a space, `%XX` a byte), refused when a `%` escape is bad or
/// the bytes are not UTF-8.
pub fn form_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let escapes_ok = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_ok {
        return Err("bad percent-escape".to_string());
    }
    percent_encoding::percent_decode_str(&value.replace('+', " "))
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "not UTF-8 once decoded".to_string())
}

/// `Authorization: Basic base64(id:secret)`, id and secret each form-encoded first (RFC 6749
/// section 2.3.1) and decoded here. `None` if the header is not Basic at all, `Some(Err)` if it
/// is Basic but undecodable.
pub fn basic_auth(header: &str) -> Option<Result<(String, String), String>> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD
        .decode(rest.trim())
        .map_err(|_| "Basic credentials are not base64".to_string())
        .and_then(|raw| {
            String::from_utf8(raw).map_err(|_| "Basic credentials are not UTF-8".to_string())
        });
    Some(decoded.and_then(|s| {
        let (id, secret) = s
            .split_once(':')
            .ok_or_else(|| "Basic credentials lack `:`".to_string())?;
        let decode = |v: &str| form_decode(v).map_err(|e| format!("Basic credentials: {e}"));
        Ok((decode(id)?, decode(secret)?))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn decodes_percent_and_plus() {
        let got = parse_urlencoded(b"grant_type=client_credentials&scope=orders%3Aread+orders%3awrite&x=a%2Bb%20c&flag&&e=").unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("grant_type", "client_credentials"),
                ("scope", "orders:read orders:write"),
                ("x", "a+b c"),
                ("flag", ""),
                ("e", ""),
            ])
        );
        assert_eq!(
            parse_urlencoded(b"k%3D=v%3D%26").unwrap(),
            pairs(&[("k=", "v=&")])
        );
        assert_eq!(parse_urlencoded(b"u=%C3%A9").unwrap(), pairs(&[("u", "é")]));
    }

    #[test]
    fn rejects_bad_escapes() {
        assert!(parse_urlencoded(b"a=%zz").is_err());
        assert!(parse_urlencoded(b"a=%4").is_err());
        assert!(parse_urlencoded(b"a=%").is_err());
        assert!(parse_urlencoded(b"a=%FF").is_err());
        assert!(parse_urlencoded(b"a=\xff").is_err());
    }

    #[test]
    fn single_rejects_duplicates() {
        let f = pairs(&[("a", "1"), ("b", "2"), ("a", "3")]);
        assert!(single(&f, "a").is_err());
        assert_eq!(single(&f, "b").unwrap(), Some("2"));
        assert_eq!(single(&f, "c").unwrap(), None);
    }

    #[test]
    fn parses_basic_auth() {
        let h = format!("Basic {}", STANDARD.encode("0oa-demo-client:demo:secret"));
        assert_eq!(
            basic_auth(&h).unwrap().unwrap(),
            ("0oa-demo-client".to_string(), "demo:secret".to_string())
        );
        // Each part is form-decoded: `%3A` is a colon inside the id, `+` a space.
        let h = format!("Basic {}", STANDARD.encode("a%3Ab+c:s%25%2B+x"));
        assert_eq!(
            basic_auth(&h).unwrap().unwrap(),
            ("a:b c".to_string(), "s%+ x".to_string())
        );
        for bad in ["id:%zz", "%FF:secret", "id:%4"] {
            let h = format!("Basic {}", STANDARD.encode(bad));
            assert!(basic_auth(&h).unwrap().is_err(), "{bad}");
        }
        assert!(basic_auth("Bearer abc").is_none());
        assert!(basic_auth("basic !!!").unwrap().is_err());
        assert!(basic_auth(&format!("Basic {}", STANDARD.encode("nocolon")))
            .unwrap()
            .is_err());
    }
}
