//! `:path` normalization. Rules match the normalized path, so anything that could make the
//! filter and the upstream disagree about which resource is meant is refused, not repaired
//! (SPEC "Rules": such a request is answered 400 before any rule runs).

use std::borrow::Cow;

/// Longest raw `:path` (query included) accepted; longer is refused rather than scanned.
pub const MAX_PATH_LEN: usize = 8192;

/// Why a path could not be normalized safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not origin-form (`/...`): absolute-form, authority-form, `*` or empty.
    NotAbsolute,
    /// A `..` would climb above `/`; clamping it would hide a traversal attempt.
    AboveRoot,
    /// `%2F`, `%5C` or a literal `\`: upstreams may treat them as separators after we match.
    EncodedSeparator,
    /// Literal or encoded NUL, which C-based upstreams may truncate at.
    Nul,
    /// `%` not followed by two hex digits.
    BadEncoding,
    /// Raw `:path` longer than [`MAX_PATH_LEN`].
    TooLong,
    /// A `;` parameter in a segment (refused by default), or a percent-encoded `;` (always):
    /// many upstreams drop `;...` from a segment and some read `..;` as `..`.
    Parameter,
    /// Overlong UTF-8 in escapes, such as `%C0%AE` for `.`, which lenient upstreams decode
    /// into dot segments or separators.
    InvalidUtf8,
}

/// What to do with `;` parameters in path segments (top-level `path_parameters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathParameters {
    /// Answer 400 (the default).
    Reject,
    /// Remove every segment's `;...` before normalization; that path goes upstream.
    Strip,
}

impl PathError {
    /// Short `snake_case` reason for logs and metrics.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            PathError::NotAbsolute => "not_absolute",
            PathError::AboveRoot => "above_root",
            PathError::EncodedSeparator => "encoded_separator",
            PathError::Nul => "nul",
            PathError::BadEncoding => "bad_encoding",
            PathError::TooLong => "too_long",
            PathError::Parameter => "path_parameter",
            PathError::InvalidUtf8 => "invalid_utf8",
        }
    }
}

/// A normalized request target, borrowing from the raw `:path` where nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath<'a> {
    /// Normalized path, always starting with `/`.
    pub path: Cow<'a, str>,
    /// Query verbatim, without the `?`; `Some("")` for a bare trailing `?`.
    pub query: Option<&'a str>,
    /// True iff `path` (plus `?query`) differs from the raw input, so the caller knows
    /// whether to rewrite `:path` before it goes upstream.
    pub changed: bool,
}

/// Normalizes a raw `:path`: drops the fragment, splits off the query, handles `;`
/// parameters, decodes percent-encoded unreserved characters, merges `//` and resolves dot
/// segments.
pub fn normalize(raw: &str, params: PathParameters) -> Result<RequestPath<'_>, PathError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    // A literal NUL is refused anywhere, query included: no legitimate client sends one.
    if raw.contains('\0') {
        return Err(PathError::Nul);
    }
    // RFC 3986: the fragment starts at the first `#`, even inside what looks like a query.
    let target = raw.split_once('#').map_or(raw, |(before, _)| before);
    let (path_part, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if !path_part.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let stripped = strip_parameters(path_part, params)?;
    let path = match &stripped {
        // Most paths: nothing to decode or resolve, so no copy on the request path.
        None if is_normal(path_part) => Cow::Borrowed(path_part),
        // Decoding first, so `%2E%2E` is a real `..` when dot segments are resolved.
        _ => {
            let decoded = decode_path(stripped.as_deref().unwrap_or(path_part))?;
            Cow::Owned(resolve_segments(&decoded)?)
        }
    };
    // The query is kept verbatim, so the rebuilt target equals `raw` exactly when the
    // path is unchanged and no fragment was dropped.
    let changed = path != path_part || target.len() != raw.len();
    Ok(RequestPath {
        path,
        query,
        changed,
    })
}

/// Refuses or removes `;` parameters. `Some` is the path without them, when there were any.
fn strip_parameters(path: &str, params: PathParameters) -> Result<Option<String>, PathError> {
    let bytes = path.as_bytes();
    // One pass for the common case: most paths have neither `;` nor `%`.
    if !bytes.iter().any(|&b| b == b';' || b == b'%') {
        return Ok(None);
    }
    // An encoded `;` is ambiguous in either mode: some upstreams decode it into a delimiter.
    if bytes
        .windows(3)
        .any(|w| matches!(w, [b'%', b'3', b'b' | b'B']))
    {
        return Err(PathError::Parameter);
    }
    if !path.contains(';') {
        return Ok(None);
    }
    if params == PathParameters::Reject {
        return Err(PathError::Parameter);
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|s| s.split_once(';').map_or(s, |(keep, _)| keep))
        .collect();
    Ok(Some(segments.join("/")))
}

/// Whether `path` (starting with `/`) is already what `decode_path` and `resolve_segments`
/// would make of it: no escape, no `\`, no empty segment but a trailing one, no dot segment.
/// One pass over the bytes: it runs on every request, and three passes cost a sixth of a
/// cache hit.
fn is_normal(path: &str) -> bool {
    let (mut len, mut dots, mut first) = (0usize, 0usize, true);
    let dot_segment = |len: usize, dots: usize| len == dots && (dots == 1 || dots == 2);
    for &b in path.as_bytes() {
        match b {
            b'%' | b'\\' => return false,
            b'/' => {
                if dot_segment(len, dots) || (len == 0 && !first) {
                    return false;
                }
                (len, dots, first) = (0, 0, false);
            }
            b'.' => (len, dots) = (len + 1, dots + 1),
            _ => len += 1,
        }
    }
    !dot_segment(len, dots)
}

/// Decodes `%XX` for unreserved characters and upper-cases the hex of every other escape.
fn decode_path(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => return Err(PathError::EncodedSeparator),
            b'%' => {
                let hi = bytes.get(i + 1).copied();
                let lo = bytes.get(i + 2).copied();
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEncoding);
                };
                let (Some(hv), Some(lv)) = (hex_value(hi), hex_value(lo)) else {
                    return Err(PathError::BadEncoding);
                };
                match (hv << 4) | lv {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    c if is_unreserved(c) => out.push(c),
                    _ => {
                        out.push(b'%');
                        out.push(hi.to_ascii_uppercase());
                        out.push(lo.to_ascii_uppercase());
                    }
                }
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    let out = String::from_utf8(out).map_err(|_| PathError::BadEncoding)?;
    check_escaped_utf8(&out)?;
    Ok(out)
}

/// Refuses overlong UTF-8 in escapes (`%C0%AE` is an overlong `.`, `%C0%AF` an overlong `/`):
/// a lenient upstream decodes them into the characters the filter never saw. Other bytes that
/// are not UTF-8 (`%FF`) stay escaped and allowed: they cannot become a separator.
fn check_escaped_utf8(path: &str) -> Result<(), PathError> {
    if !path.contains('%') {
        return Ok(());
    }
    let bytes = path.as_bytes();
    let escaped_at = |i: usize| -> Option<u8> {
        (*bytes.get(i)? == b'%')
            .then(|| Some((hex_value(*bytes.get(i + 1)?)? << 4) | hex_value(*bytes.get(i + 2)?)?))
            .flatten()
    };
    for i in 0..bytes.len() {
        let overlong = match (escaped_at(i), escaped_at(i + 3)) {
            (Some(0xC0 | 0xC1), _) => true,
            (Some(0xE0), Some(next)) => (0x80..=0x9F).contains(&next),
            (Some(0xF0), Some(next)) => (0x80..=0x8F).contains(&next),
            _ => false,
        };
        if overlong {
            return Err(PathError::InvalidUtf8);
        }
    }
    Ok(())
}

/// Merges empty segments and resolves `.`/`..` (RFC 3986 §5.2.4), refusing to climb
/// above the root. `path` starts with `/`.
fn resolve_segments(path: &str) -> Result<String, PathError> {
    let mut stack: Vec<&str> = Vec::new();
    // Whether the last segment processed leaves the path ending in `/`.
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                if stack.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            _ => {
                stack.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &stack {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || stack.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The value of one hex digit, for percent-decoding (shared with `query`).
pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3 unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {

    /// The three-pass definition `is_normal` replaced, as the oracle.
    fn is_normal_oracle(path: &str) -> bool {
        !path.bytes().any(|b| b == b'%' || b == b'\\')
            && !path.contains("//")
            && path.split('/').all(|s| s != "." && s != "..")
    }

    #[test]
    fn one_pass_is_normal_agrees_with_its_definition() {
        // Every string of up to 6 characters over the alphabet that matters.
        let alphabet = ['/', '.', 'a', '%', '\\'];
        let mut checked = 0;
        let mut stack = vec![String::new()];
        while let Some(s) = stack.pop() {
            for p in [format!("/{s}"), s.clone()] {
                assert_eq!(is_normal(&p), is_normal_oracle(&p), "{p:?}");
                checked += 1;
            }
            if s.chars().count() < 6 {
                for c in alphabet {
                    stack.push(format!("{s}{c}"));
                }
            }
        }
        assert!(checked > 10_000);
    }

    use super::*;

    fn ok(raw: &str) -> RequestPath<'_> {
        match normalize(raw, PathParameters::Reject) {
            Ok(p) => p,
            Err(e) => panic!("{raw:?} -> {e:?}"),
        }
    }

    fn path_of(raw: &str) -> String {
        ok(raw).path.into_owned()
    }

    fn err(raw: &str) -> PathError {
        match normalize(raw, PathParameters::Reject) {
            Ok(p) => panic!("{raw:?} -> {p:?}, expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn unchanged_simple_paths() {
        for raw in ["/", "/a", "/a/b", "/a/b/", "/api/orders/42", "/a-b_c~d.e"] {
            let p = ok(raw);
            assert_eq!(p.path, raw);
            assert_eq!(p.query, None);
            assert!(!p.changed, "{raw}");
        }
    }

    #[test]
    fn query_split_at_first_question_mark() {
        let p = ok("/a/b?x=1&y=2");
        assert_eq!(p.path, "/a/b");
        assert_eq!(p.query, Some("x=1&y=2"));
        assert!(!p.changed);

        let p = ok("/a?x=?y/../z");
        assert_eq!(p.path, "/a");
        assert_eq!(p.query, Some("x=?y/../z"));
        assert!(!p.changed);
    }

    #[test]
    fn query_is_verbatim() {
        // Encodings, backslashes and dot segments in the query are not touched.
        let p = ok("/a?q=%2f%2e%2E%5c\\&r=%zz&s=%00");
        assert_eq!(p.query, Some("q=%2f%2e%2E%5c\\&r=%zz&s=%00"));
        assert!(!p.changed);
    }

    #[test]
    fn empty_query_kept() {
        let p = ok("/a?");
        assert_eq!(p.path, "/a");
        assert_eq!(p.query, Some(""));
        assert!(!p.changed);
    }

    #[test]
    fn query_with_changed_path() {
        let p = ok("/a//b?x=1");
        assert_eq!(p.path, "/a/b");
        assert_eq!(p.query, Some("x=1"));
        assert!(p.changed);
    }

    #[test]
    fn fragment_dropped() {
        let p = ok("/a/b#frag");
        assert_eq!(p.path, "/a/b");
        assert_eq!(p.query, None);
        assert!(p.changed);

        let p = ok("/a?x=1#frag");
        assert_eq!(p.path, "/a");
        assert_eq!(p.query, Some("x=1"));
        assert!(p.changed);

        // A `?` after the `#` belongs to the fragment.
        let p = ok("/a#frag?x=1");
        assert_eq!(p.path, "/a");
        assert_eq!(p.query, None);
        assert!(p.changed);

        let p = ok("/#");
        assert_eq!(p.path, "/");
        assert!(p.changed);
    }

    #[test]
    fn fragment_contents_not_validated() {
        let p = ok("/a#%zz/../..\\%2f");
        assert_eq!(p.path, "/a");
        assert!(p.changed);
    }

    #[test]
    fn not_absolute() {
        for raw in [
            "",
            "a",
            "a/b",
            "*",
            "?x=1",
            "#x",
            "http://example.com/a",
            "%2F",
            "..",
        ] {
            assert_eq!(err(raw), PathError::NotAbsolute, "{raw:?}");
        }
    }

    #[test]
    fn merges_slash_runs() {
        assert_eq!(path_of("//"), "/");
        assert_eq!(path_of("///"), "/");
        assert_eq!(path_of("//a"), "/a");
        assert_eq!(path_of("/a//b"), "/a/b");
        assert_eq!(path_of("/a///b//"), "/a/b/");
        assert!(ok("//a").changed);
    }

    #[test]
    fn dot_segments() {
        assert_eq!(path_of("/."), "/");
        assert_eq!(path_of("/./"), "/");
        assert_eq!(path_of("/./a"), "/a");
        assert_eq!(path_of("/a/./b"), "/a/b");
        assert_eq!(path_of("/a/b/."), "/a/b/");
        assert_eq!(path_of("/a/b/./"), "/a/b/");
        assert_eq!(path_of("/a/b/.."), "/a/");
        assert_eq!(path_of("/a/b/../"), "/a/");
        assert_eq!(path_of("/a/.."), "/");
        assert_eq!(path_of("/a/../"), "/");
        assert_eq!(path_of("/a/b/../c"), "/a/c");
        assert_eq!(path_of("/a/b/../../c"), "/c");
        assert_eq!(path_of("/public/../admin"), "/admin");
        assert_eq!(path_of("/a/./../b/./c/."), "/b/c/");
        assert!(ok("/a/./b").changed);
    }

    #[test]
    fn rfc3986_examples() {
        // RFC 3986 §5.2.4 worked examples (both start below the root).
        assert_eq!(path_of("/a/b/c/./../../g"), "/a/g");
        assert_eq!(path_of("/mid/content=5/../6"), "/mid/6");
    }

    #[test]
    fn dots_that_are_not_dot_segments() {
        for raw in [
            "/...",
            "/a/.../b",
            "/.a",
            "/a.",
            "/..a",
            "/a..",
            "/a/.b/..c/",
        ] {
            let p = ok(raw);
            assert_eq!(p.path, raw);
            assert!(!p.changed);
        }
    }

    #[test]
    fn merge_happens_before_dot_resolution() {
        // SPEC order: `//` merged, then dot segments resolved.
        assert_eq!(path_of("/a//.."), "/");
        assert_eq!(path_of("/a/b//../c"), "/a/c");
        assert_eq!(path_of("/a/.//b"), "/a/b");
    }

    #[test]
    fn above_root() {
        for raw in [
            "/..",
            "/../",
            "/../a",
            "/a/../..",
            "/a/../../b",
            "/a/b/../../../c",
            "//..",
            "/./..",
            "/%2e%2e/x",
            "/%2E%2E",
            "/.%2e/x",
            "/%2e./x",
            "/a/%2e%2e/%2e%2e/b",
            "/..?x=1",
        ] {
            assert_eq!(err(raw), PathError::AboveRoot, "{raw:?}");
        }
    }

    #[test]
    fn encoded_dots_resolved_after_decoding() {
        assert_eq!(path_of("/a/%2e%2e/b"), "/b");
        assert_eq!(path_of("/a/%2E%2E/b"), "/b");
        assert_eq!(path_of("/a/%2e/b"), "/a/b");
        assert_eq!(path_of("/a/b/%2e"), "/a/b/");
        assert_eq!(path_of("/public/%2e%2e/admin"), "/admin");
        assert!(ok("/a/%2e%2e/b").changed);
    }

    #[test]
    fn decodes_unreserved() {
        assert_eq!(path_of("/%61%62%63"), "/abc");
        assert_eq!(path_of("/%41%5A%30%39"), "/AZ09");
        assert_eq!(path_of("/%2d%2E%5f%7e"), "/-._~");
        assert_eq!(path_of("/%7E%7e"), "/~~");
        assert_eq!(path_of("/a%62c/d"), "/abc/d");
        assert!(ok("/%61").changed);
    }

    #[test]
    fn keeps_reserved_encodings_uppercased() {
        let p = ok("/a%20b");
        assert_eq!(p.path, "/a%20b");
        assert!(!p.changed);

        let p = ok("/a%3ab%3Fc%23d%25e");
        assert_eq!(p.path, "/a%3Ab%3Fc%23d%25e");
        assert!(p.changed);

        assert_eq!(path_of("/%c3%a9"), "/%C3%A9");
        assert_eq!(path_of("/%ff%7f%01"), "/%FF%7F%01");
        assert_eq!(path_of("/%2b%40%3d"), "/%2B%40%3D");
    }

    #[test]
    fn no_double_decoding() {
        // `%25` stays `%25`; the following `2e` is literal text, not a second escape.
        assert_eq!(path_of("/%252e%252e/x"), "/%252e%252e/x");
        assert_eq!(path_of("/a/%252F/b"), "/a/%252F/b");
        assert_eq!(path_of("/%25%32%65"), "/%252e");
    }

    #[test]
    fn encoded_separators() {
        for raw in [
            "/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb", "/%2F", "/a\\b", "/\\", "/..\\", "/a/%2f..",
        ] {
            assert_eq!(err(raw), PathError::EncodedSeparator, "{raw:?}");
        }
        // Without a leading `/` the target is not origin-form at all.
        assert_eq!(err("\\a"), PathError::NotAbsolute);
    }

    #[test]
    fn nul() {
        for raw in ["/a%00b", "/%00", "/a\0b", "\0", "/a?x=\0", "/a#\0"] {
            assert_eq!(err(raw), PathError::Nul, "{raw:?}");
        }
        // Encoded NUL in the query is the query's business, not the path's.
        assert_eq!(ok("/a?x=%00").query, Some("x=%00"));
    }

    #[test]
    fn bad_encoding() {
        for raw in [
            "/%", "/a%", "/a%2", "/%zz", "/%g0", "/%0g", "/%%", "/%%41", "/%-1", "/%é0", "/%0é",
            "/% 1", "/%2?x=1",
        ] {
            assert_eq!(err(raw), PathError::BadEncoding, "{raw:?}");
        }
        // A bad escape in the query is fine.
        assert!(normalize("/a?%", PathParameters::Reject).is_ok());
    }

    #[test]
    fn first_problem_in_scan_order_wins() {
        assert_eq!(err("/%2F%00"), PathError::EncodedSeparator);
        assert_eq!(err("/%00%2F"), PathError::Nul);
        assert_eq!(err("/%zz%2F"), PathError::BadEncoding);
        // Encoding errors are found before dot segments are resolved.
        assert_eq!(err("/../%zz"), PathError::BadEncoding);
        assert_eq!(err("/../%2f"), PathError::EncodedSeparator);
    }

    #[test]
    fn non_ascii_kept_verbatim() {
        let p = ok("/caf\u{e9}/\u{1F600}");
        assert_eq!(p.path, "/caf\u{e9}/\u{1F600}");
        assert!(!p.changed);
        assert_eq!(path_of("/\u{e9}/../x"), "/x");
    }

    #[test]
    fn length_limit() {
        let max = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert_eq!(ok(&max).path, max);
        let over = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(err(&over), PathError::TooLong);
        // The query counts towards the limit.
        let over_q = format!("/a?{}", "b".repeat(MAX_PATH_LEN));
        assert_eq!(err(&over_q), PathError::TooLong);
        // Multi-byte characters count in bytes.
        let over_utf8 = format!("/{}", "\u{e9}".repeat(MAX_PATH_LEN / 2));
        assert_eq!(err(&over_utf8), PathError::TooLong);
    }

    #[test]
    fn as_str_values() {
        let all = [
            (PathError::NotAbsolute, "not_absolute"),
            (PathError::AboveRoot, "above_root"),
            (PathError::EncodedSeparator, "encoded_separator"),
            (PathError::Nul, "nul"),
            (PathError::BadEncoding, "bad_encoding"),
            (PathError::TooLong, "too_long"),
        ];
        for (e, s) in all {
            assert_eq!(e.as_str(), s);
        }
    }

    #[test]
    fn changed_flag_matches_rebuilt_target() {
        for raw in [
            "/",
            "/a",
            "/a/",
            "/a?",
            "/a?b",
            "//a?b",
            "/a#",
            "/%7e",
            "/%7E",
            "/%3a",
            "/%3A",
            "/a/.",
            "/a/..",
            "/a/b/../b",
        ] {
            let p = ok(raw);
            let rebuilt = match &p.query {
                Some(q) => format!("{}?{}", p.path, q),
                None => p.path.to_string(),
            };
            assert_eq!(p.changed, rebuilt != raw, "{raw:?}");
        }
    }

    /// Deterministic pseudo-random inputs built from tricky fragments: never panics, and
    /// every success is a fixed point with the expected shape.
    #[test]
    fn pseudo_random_inputs_are_safe_and_idempotent() {
        const PIECES: &[&str] = &[
            "/",
            "//",
            ".",
            "..",
            "%",
            "%2e",
            "%2E",
            "%2f",
            "%5C",
            "%00",
            "%41",
            "%3a",
            "%25",
            "%e",
            "%zz",
            "?",
            "#",
            "\\",
            "a",
            "b",
            "\u{e9}",
            "\u{1F600}",
            "~",
            "-",
            "\0",
            "&",
            "=",
            " ",
            "%c3%a9",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let mut raw = String::new();
            if next() % 8 != 0 {
                raw.push('/');
            }
            for _ in 0..len {
                let idx = (next() % PIECES.len() as u64) as usize;
                raw.push_str(PIECES.get(idx).copied().unwrap_or("a"));
            }
            let Ok(p) = normalize(&raw, PathParameters::Reject) else {
                continue;
            };
            assert!(p.path.starts_with('/'), "{raw:?} -> {p:?}");
            assert!(!p.path.contains("//"), "{raw:?} -> {p:?}");
            assert!(!p.path.contains('\\'), "{raw:?} -> {p:?}");
            assert!(!p.path.contains('?') && !p.path.contains('#'), "{raw:?}");
            assert!(p.path.len() <= raw.len(), "{raw:?} -> {p:?}");
            for seg in p.path.split('/') {
                assert!(seg != "." && seg != "..", "{raw:?} -> {p:?}");
            }
            let again = ok(&p.path);
            assert_eq!(again.path, p.path, "not idempotent for {raw:?}");
            assert!(!again.changed, "{raw:?}");
        }
    }
    /// The borrowed fast path must agree with full normalization on every path it takes.
    #[test]
    fn fast_path_agrees_with_full_normalization() {
        let parts = [
            "a", ".", "..", "", "b.c", ".x", "..y", "x..", "%41", "~", "A-_",
        ];
        let mut paths = vec![String::from("/")];
        for _ in 0..4 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| {
                    let base = if p == "/" { "" } else { p.as_str() };
                    parts.iter().map(move |s| format!("{base}/{s}"))
                })
                .collect();
            paths.extend(longer);
        }
        let mut fast = 0;
        for p in &paths {
            if is_normal(p) {
                fast += 1;
                let full = decode_path(p).and_then(|d| resolve_segments(&d));
                assert_eq!(full.as_deref(), Ok(p.as_str()), "{p}");
            }
        }
        assert!(fast > 100, "the corpus exercises the fast path ({fast})");
    }

    #[test]
    fn path_parameters_are_refused_by_default_and_stripped_on_request() {
        let reject = |p: &str| normalize(p, PathParameters::Reject).map(|r| r.path.into_owned());
        let strip = |p: &str| normalize(p, PathParameters::Strip).map(|r| r.path.into_owned());
        for p in [
            "/admin;x",
            "/admin;",
            "/a/..;/admin",
            "/public/..;/admin",
            "/x;jsessionid=1/y",
        ] {
            assert_eq!(reject(p), Err(PathError::Parameter), "{p}");
        }
        assert_eq!(strip("/admin;x").as_deref(), Ok("/admin"));
        assert_eq!(strip("/admin;x/").as_deref(), Ok("/admin/"));
        assert_eq!(strip("/x;jsessionid=1/y;v=2").as_deref(), Ok("/x/y"));
        // `..;` is `..` once stripped, and resolved like one.
        assert_eq!(strip("/public/..;/admin").as_deref(), Ok("/admin"));
        assert_eq!(strip("/..;/admin"), Err(PathError::AboveRoot));
        let changed = normalize("/admin;x", PathParameters::Strip).map(|r| r.changed);
        assert_eq!(changed, Ok(true));
        // Encoded `;` is refused in both modes; `;` in the query is not a path parameter.
        for p in ["/admin%3bx", "/admin%3Bx", "/a/..%3B/admin"] {
            assert_eq!(reject(p), Err(PathError::Parameter), "{p}");
            assert_eq!(strip(p), Err(PathError::Parameter), "{p}");
        }
        assert_eq!(reject("/a?x=1;y=2").as_deref(), Ok("/a"));
    }

    #[test]
    fn overlong_and_invalid_utf8_escapes_are_refused() {
        let reject = |p: &str| normalize(p, PathParameters::Reject).map(|r| r.path.into_owned());
        for p in [
            "/%C0%AE%C0%AE/admin",
            "/a%C0%AFb",
            "/%c1%9c",
            "/%E0%80%AE",
            "/%F0%80%80%AE",
        ] {
            assert_eq!(reject(p), Err(PathError::InvalidUtf8), "{p}");
        }
        // Real UTF-8 and other bytes stay encoded and allowed.
        assert_eq!(reject("/caf%C3%A9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(reject("/%E0%A0%80").as_deref(), Ok("/%E0%A0%80"));
        assert_eq!(reject("/%FF").as_deref(), Ok("/%FF"));
        // Backslash, encoded or not, is a separator for some upstreams.
        assert_eq!(reject("/a%5C..%5Cadmin"), Err(PathError::EncodedSeparator));
        assert_eq!(reject("/a\\admin"), Err(PathError::EncodedSeparator));
    }
}
