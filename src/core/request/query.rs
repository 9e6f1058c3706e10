//! Query-string access for the `from: [{ "query": NAME }]` token source and for removing
//! that parameter before the request goes upstream (`forward_token: false`).
//!
//! Names are compared after `application/x-www-form-urlencoded` decoding, and
//! [`remove_param`] uses the same comparison as [`get_param`], so a parameter the filter
//! read as the token can never be left in the forwarded query under another spelling.

/// Value of the first `name=value` pair whose decoded name equals `name`.
///
/// The value is percent-decoded with `+` as space; a bare `name` yields `Some("")`.
/// A matching pair whose value is not valid encoding (or not UTF-8) is skipped.
use crate::core::request::path::hex_value;

#[must_use]
pub fn get_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| name_matches(pair, name))
        .find_map(|pair| {
            let raw_value = pair.split_once('=').map_or("", |(_, value)| value);
            form_decode(raw_value).and_then(|bytes| String::from_utf8(bytes).ok())
        })
}

/// How many pairs are named `name`, counting no further than `max`.
#[must_use]
pub fn count_param(query: &str, name: &str, max: usize) -> usize {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && name_matches(pair, name))
        .take(max)
        .count()
}

/// The query without every pair named `name` (whatever its value); the other pairs are
/// kept byte for byte and in order, empty pairs are dropped.
#[must_use]
pub fn remove_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !name_matches(pair, name))
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether the (decoded) name of `pair` is exactly `name`.
fn name_matches(pair: &str, name: &str) -> bool {
    let raw_name = pair.split_once('=').map_or(pair, |(n, _)| n);
    // Cheap reject before allocating: decoding never makes a name longer.
    if raw_name.len() < name.len() {
        return false;
    }
    form_decode(raw_name).is_some_and(|decoded| decoded == name.as_bytes())
}

/// `application/x-www-form-urlencoded` decoding; `None` on a `%` without two hex digits.
fn form_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value)?;
                let lo = bytes.get(i + 2).copied().and_then(hex_value)?;
                out.push((hi << 4) | lo);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(q: &str, n: &str) -> Option<String> {
        get_param(q, n)
    }

    #[test]
    fn simple_lookup() {
        let q = "a=1&access_token=abc.def.ghi&b=2";
        assert_eq!(get(q, "access_token").as_deref(), Some("abc.def.ghi"));
        assert_eq!(get(q, "a").as_deref(), Some("1"));
        assert_eq!(get(q, "b").as_deref(), Some("2"));
        assert_eq!(get(q, "c"), None);
    }

    #[test]
    fn empty_query_and_name() {
        assert_eq!(get("", "a"), None);
        assert_eq!(get("&&", "a"), None);
        assert_eq!(get("", ""), None);
        // An explicitly empty name matches `=v`.
        assert_eq!(get("=v", "").as_deref(), Some("v"));
    }

    #[test]
    fn first_match_wins() {
        assert_eq!(get("t=1&t=2", "t").as_deref(), Some("1"));
        assert_eq!(get("x=0&t=&t=2", "t").as_deref(), Some(""));
    }

    #[test]
    fn exact_case_sensitive_name() {
        assert_eq!(get("Token=1", "token"), None);
        assert_eq!(get("token_x=1&xtoken=2", "token"), None);
        assert_eq!(get("token =1", "token"), None);
        assert_eq!(get("token=1", "Token"), None);
    }

    #[test]
    fn bare_name_and_empty_value() {
        assert_eq!(get("flag", "flag").as_deref(), Some(""));
        assert_eq!(get("a=1&flag&b=2", "flag").as_deref(), Some(""));
        assert_eq!(get("flag=", "flag").as_deref(), Some(""));
    }

    #[test]
    fn value_keeps_later_equals_signs() {
        assert_eq!(get("t=a=b==", "t").as_deref(), Some("a=b=="));
    }

    #[test]
    fn value_decoding() {
        assert_eq!(get("t=a%20b", "t").as_deref(), Some("a b"));
        assert_eq!(get("t=a+b", "t").as_deref(), Some("a b"));
        assert_eq!(get("t=a%2Bb", "t").as_deref(), Some("a+b"));
        assert_eq!(get("t=a%2bb", "t").as_deref(), Some("a+b"));
        assert_eq!(get("t=%C3%A9", "t").as_deref(), Some("\u{e9}"));
        assert_eq!(get("t=%26%3D", "t").as_deref(), Some("&="));
        assert_eq!(get("t=%25", "t").as_deref(), Some("%"));
        assert_eq!(get("t=%2525", "t").as_deref(), Some("%25"));
    }

    #[test]
    fn name_decoding() {
        assert_eq!(
            get("access%5Ftoken=x", "access_token").as_deref(),
            Some("x")
        );
        assert_eq!(get("%61=x", "a").as_deref(), Some("x"));
        assert_eq!(get("a+b=x", "a b").as_deref(), Some("x"));
        assert_eq!(get("a%20b=x", "a b").as_deref(), Some("x"));
        assert_eq!(get("a%3Db=x", "a=b").as_deref(), Some("x"));
    }

    #[test]
    fn invalid_encoding_skips_pair() {
        assert_eq!(get("t=%zz", "t"), None);
        assert_eq!(get("t=%", "t"), None);
        assert_eq!(get("t=%4", "t"), None);
        assert_eq!(get("t=%zz&t=ok", "t").as_deref(), Some("ok"));
        // Invalid UTF-8 after decoding is also invalid for a String value.
        assert_eq!(get("t=%FF&t=ok", "t").as_deref(), Some("ok"));
        assert_eq!(get("t=%FF", "t"), None);
        // An undecodable name never matches.
        assert_eq!(get("t%zz=1", "t%zz"), None);
    }

    #[test]
    fn non_ascii_literal_value() {
        assert_eq!(get("t=\u{e9}", "t").as_deref(), Some("\u{e9}"));
    }

    #[test]
    fn remove_basic() {
        assert_eq!(remove_param("a=1&t=x&b=2", "t"), "a=1&b=2");
        assert_eq!(remove_param("t=x&a=1", "t"), "a=1");
        assert_eq!(remove_param("a=1&t=x", "t"), "a=1");
        assert_eq!(remove_param("t=x", "t"), "");
        assert_eq!(remove_param("", "t"), "");
    }

    #[test]
    fn remove_all_occurrences() {
        assert_eq!(remove_param("t=1&a=1&t=2&t&b=2&t=", "t"), "a=1&b=2");
        assert_eq!(remove_param("t=1&t=2", "t"), "");
    }

    #[test]
    fn remove_keeps_others_verbatim() {
        let q = "a=%7e+x&b=%zz&c&d=%2F";
        assert_eq!(remove_param(q, "t"), q);
        assert_eq!(
            remove_param("a=%7e+x&t=1&b=%zz&c&d=%2F", "t"),
            "a=%7e+x&b=%zz&c&d=%2F"
        );
    }

    #[test]
    fn remove_matches_encoded_names_and_bad_values() {
        // Every spelling get_param would accept, and a value it would reject, is removed.
        assert_eq!(remove_param("access%5ftoken=x&a=1", "access_token"), "a=1");
        assert_eq!(remove_param("t=%zz&a=1", "t"), "a=1");
        assert_eq!(remove_param("%74=1&a=1", "t"), "a=1");
    }

    #[test]
    fn remove_drops_empty_pairs() {
        assert_eq!(remove_param("a=1&&b=2", "t"), "a=1&b=2");
        assert_eq!(remove_param("&t=1&", "t"), "");
        assert_eq!(remove_param("&&", "t"), "");
    }

    #[test]
    fn remove_is_case_sensitive() {
        assert_eq!(remove_param("T=1&t=2", "t"), "T=1");
    }

    #[test]
    fn get_after_remove_finds_nothing() {
        let q = "t=%zz&x=1&%74=2&t+=3&t";
        let rest = remove_param(q, "t");
        assert_eq!(rest, "x=1&t+=3");
        assert_eq!(get(&rest, "t"), None);
    }

    /// Deterministic pseudo-random inputs: never panics, and nothing `get_param` can find
    /// survives `remove_param`.
    #[test]
    fn pseudo_random_inputs() {
        const PIECES: &[&str] = &[
            "t", "=", "&", "%", "%74", "%7", "%zz", "+", "a", "%FF", "%C3%A9", "\u{e9}", "%26",
            "%3D", "",
        ];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut q = String::new();
            for _ in 0..(next() % 10) {
                let idx = (next() % PIECES.len() as u64) as usize;
                q.push_str(PIECES.get(idx).copied().unwrap_or(""));
            }
            let _ = get(&q, "t");
            let rest = remove_param(&q, "t");
            assert_eq!(get(&rest, "t"), None, "{q:?} -> {rest:?}");
            assert!(rest.len() <= q.len());
            assert_eq!(remove_param(&rest, "t"), rest);
        }
    }
}
