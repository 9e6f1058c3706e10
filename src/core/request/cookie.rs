//! `Cookie` request-header access (RFC 6265 §4.2 / §5.4) for the `from: [{ "cookie": NAME }]`
//! token source and for stripping that cookie before the request goes upstream.
//!
//! [`remove`] uses the same name comparison as [`get`], so the cookie the filter read as the
//! token is always the one that is removed.

/// Value of the first `name=value` pair whose name is exactly `name`.
///
/// Whitespace around pairs, names and values is ignored; a value wrapped in double quotes is
/// returned without them. Pairs without `=` have no name and never match.
#[must_use]
pub fn get<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header.split(';').find_map(|pair| {
        let (pair_name, value) = pair.split_once('=')?;
        (trim_ws(pair_name) == name).then(|| unquote(trim_ws(value)))
    })
}

/// How many pairs are named `name` with a non-empty value, counting no further than `max`.
#[must_use]
pub fn count(cookie_header: &str, name: &str, max: usize) -> usize {
    cookie_header
        .split(';')
        .filter(|pair| has_name(pair, name) && get(pair, name).is_some_and(|v| !v.is_empty()))
        .take(max)
        .count()
}

/// The header without every pair named `name`; the remaining pairs (trimmed) are joined with
/// `"; "` and empty ones dropped. `None` when nothing remains, so the caller removes the header.
#[must_use]
pub fn remove(cookie_header: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = cookie_header
        .split(';')
        .map(trim_ws)
        .filter(|pair| !pair.is_empty() && !has_name(pair, name))
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("; "))
    }
}

fn has_name(pair: &str, name: &str) -> bool {
    pair.split_once('=')
        .is_some_and(|(pair_name, _)| trim_ws(pair_name) == name)
}

/// RFC 6265 whitespace is SP and HTAB only; other characters are part of the cookie.
fn trim_ws(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_cookie() {
        assert_eq!(get("access_token=abc", "access_token"), Some("abc"));
        assert_eq!(get("access_token=abc", "other"), None);
    }

    #[test]
    fn several_cookies() {
        let h = "a=1; access_token=abc.def.ghi; b=2";
        assert_eq!(get(h, "a"), Some("1"));
        assert_eq!(get(h, "access_token"), Some("abc.def.ghi"));
        assert_eq!(get(h, "b"), Some("2"));
        assert_eq!(get(h, "c"), None);
    }

    #[test]
    fn empty_header() {
        assert_eq!(get("", "a"), None);
        assert_eq!(get(";;", "a"), None);
        assert_eq!(get(" ; ", ""), None);
    }

    #[test]
    fn whitespace_trimmed() {
        let h = "  a = 1 ;\tb=2\t;c=3  ";
        assert_eq!(get(h, "a"), Some("1"));
        assert_eq!(get(h, "b"), Some("2"));
        assert_eq!(get(h, "c"), Some("3"));
        assert_eq!(get("a=1;b=2", "b"), Some("2"));
    }

    #[test]
    fn whitespace_inside_value_kept() {
        assert_eq!(get("a= x y ", "a"), Some("x y"));
    }

    #[test]
    fn only_sp_and_htab_are_whitespace() {
        assert_eq!(get("\u{a0}a=1", "a"), None);
        assert_eq!(get("a=1\r", "a"), Some("1\r"));
    }

    #[test]
    fn exact_case_sensitive_name() {
        let h = "Access_Token=1; access_token_x=2; xaccess_token=3";
        assert_eq!(get(h, "access_token"), None);
        assert_eq!(get(h, "Access_Token"), Some("1"));
    }

    #[test]
    fn first_match_wins() {
        assert_eq!(get("t=1; t=2", "t"), Some("1"));
        assert_eq!(get("t=; t=2", "t"), Some(""));
    }

    #[test]
    fn value_keeps_equals_signs() {
        assert_eq!(get("t=a=b==", "t"), Some("a=b=="));
    }

    #[test]
    fn pair_without_equals_never_matches() {
        assert_eq!(get("t; t=2", "t"), Some("2"));
        assert_eq!(get("t", "t"), None);
    }

    #[test]
    fn empty_name_matches_only_explicit_empty_name() {
        assert_eq!(get("=v; a=1", ""), Some("v"));
        assert_eq!(get("a=1", ""), None);
    }

    #[test]
    fn quoted_values() {
        assert_eq!(get("t=\"abc\"", "t"), Some("abc"));
        assert_eq!(get("t= \"abc\" ", "t"), Some("abc"));
        assert_eq!(get("t=\"\"", "t"), Some(""));
        // Not wrapped: returned as is.
        assert_eq!(get("t=\"", "t"), Some("\""));
        assert_eq!(get("t=\"abc", "t"), Some("\"abc"));
        assert_eq!(get("t=abc\"", "t"), Some("abc\""));
        assert_eq!(get("t=a\"b\"", "t"), Some("a\"b\""));
        // Only one level of quotes is removed.
        assert_eq!(get("t=\"\"x\"\"", "t"), Some("\"x\""));
    }

    #[test]
    fn non_ascii() {
        assert_eq!(get("\u{e9}=\u{1F600}", "\u{e9}"), Some("\u{1F600}"));
    }

    #[test]
    fn remove_middle_first_last() {
        assert_eq!(remove("a=1; t=x; b=2", "t").as_deref(), Some("a=1; b=2"));
        assert_eq!(remove("t=x; a=1", "t").as_deref(), Some("a=1"));
        assert_eq!(remove("a=1; t=x", "t").as_deref(), Some("a=1"));
    }

    #[test]
    fn remove_everything_is_none() {
        assert_eq!(remove("t=x", "t"), None);
        assert_eq!(remove("t=1; t=2", "t"), None);
        assert_eq!(remove("", "t"), None);
        assert_eq!(remove(" ; ;", "t"), None);
    }

    #[test]
    fn remove_all_occurrences_and_spellings() {
        assert_eq!(
            remove("t=1;a=1;  t = 2 ;\tt=\"3\"; b=2", "t").as_deref(),
            Some("a=1; b=2")
        );
    }

    #[test]
    fn remove_normalizes_separators_of_kept_pairs() {
        assert_eq!(remove("a=1;b=2", "t").as_deref(), Some("a=1; b=2"));
        assert_eq!(remove(" a = 1 ;;b=2 ", "t").as_deref(), Some("a = 1; b=2"));
    }

    #[test]
    fn remove_keeps_pairs_without_equals_and_other_case() {
        assert_eq!(remove("t; T=1; t=2", "t").as_deref(), Some("t; T=1"));
    }

    #[test]
    fn get_after_remove_finds_nothing() {
        let h = "t=1; a=\"q\"; t = 2;t=;x";
        let rest = remove(h, "t");
        assert_eq!(rest.as_deref(), Some("a=\"q\"; x"));
        assert_eq!(get(rest.as_deref().unwrap_or(""), "t"), None);
        assert_eq!(get(rest.as_deref().unwrap_or(""), "a"), Some("q"));
    }

    /// Deterministic pseudo-random inputs: never panics, and nothing `get` finds survives
    /// `remove`.
    #[test]
    fn pseudo_random_inputs() {
        const PIECES: &[&str] = &[
            "t", "=", ";", " ", "\t", "\"", "a", "\u{e9}", "; ", "==", "T", "",
        ];
        let mut seed: u64 = 0xD1B5_4A32_D192_ED03;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut h = String::new();
            for _ in 0..(next() % 10) {
                let idx = (next() % PIECES.len() as u64) as usize;
                h.push_str(PIECES.get(idx).copied().unwrap_or(""));
            }
            let _ = get(&h, "t");
            match remove(&h, "t") {
                Some(rest) => {
                    assert!(!rest.is_empty());
                    assert_eq!(get(&rest, "t"), None, "{h:?} -> {rest:?}");
                    assert_eq!(remove(&rest, "t").as_deref(), Some(rest.as_str()));
                }
                None => assert!(
                    h.split(';')
                        .map(trim_ws)
                        .all(|p| p.is_empty() || has_name(p, "t")),
                    "{h:?}"
                ),
            }
        }
    }
}
