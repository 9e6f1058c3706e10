//! Path normalization and rule matching (request/path.rs, matcher.rs).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use okta_jwt_filter::core::request::matcher::{
    prefix_fits, HeaderMatch, HeaderMatchKind, Match, PathTemplate,
};
use okta_jwt_filter::core::request::path::{normalize, PathError, PathParameters, MAX_PATH_LEN};
use okta_jwt_filter::core::request::view::{ClientCert, Request};
use okta_jwt_filter_fuzz::split_line;

/// The raw path is the input's first line (so attack paths seed the corpus as they are); the
/// rest of the input fills the other fields.
#[derive(Debug, Arbitrary)]
struct Rest<'a> {
    strip: bool,
    template: &'a str,
    /// Values for the template's parameters, to build a path it must match.
    values: Vec<&'a str>,
    prefix: &'a str,
    method: &'a str,
    methods: Vec<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    header_rule: Option<(&'a str, u8, &'a str)>,
}

#[derive(Debug)]
struct Input<'a> {
    raw: &'a str,
    strip: bool,
    template: &'a str,
    values: Vec<&'a str>,
    prefix: &'a str,
    method: &'a str,
    methods: Vec<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    header_rule: Option<(&'a str, u8, &'a str)>,
}

fn check_normal(path: &str) {
    assert!(path.starts_with('/'), "{path:?}");
    assert!(!path.contains("//"), "{path:?}");
    assert!(!path.contains('\\') && !path.contains('\0'), "{path:?}");
    assert!(
        path.split('/').all(|s| s != "." && s != ".."),
        "dot segment left in {path:?}"
    );
    // What an upstream that decodes every escape once sees: still no dot segment, separator
    // or NUL the filter did not see.
    let decoded = percent_decode(path);
    assert!(
        !decoded.contains(&0) && !decoded.contains(&b'\\'),
        "{path:?}"
    );
    assert!(
        decoded
            .split(|&b| b == b'/')
            .all(|s| s != b"." && s != b".."),
        "{path:?} decodes to a dot segment"
    );
    assert_eq!(
        decoded.iter().filter(|&&b| b == b'/').count(),
        path.matches('/').count(),
        "{path:?} decodes to another separator"
    );
    let upper = path.to_ascii_uppercase();
    assert!(
        !upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%00"),
        "{path:?}"
    );
}

/// Every `%XX` decoded, once.
fn percent_decode(path: &str) -> Vec<u8> {
    let b = path.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (line, rest) = split_line(data);
    let Ok(raw) = std::str::from_utf8(line) else {
        return;
    };
    let Ok(r) = Rest::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let input = Input {
        raw,
        strip: r.strip,
        template: r.template,
        values: r.values,
        prefix: r.prefix,
        method: r.method,
        methods: r.methods,
        headers: r.headers,
        header_rule: r.header_rule,
    };
    let params = if input.strip {
        PathParameters::Strip
    } else {
        PathParameters::Reject
    };
    match normalize(input.raw, params) {
        Ok(p) => {
            check_normal(&p.path);
            if params == PathParameters::Strip || !input.raw.contains(';') {
                // Reject mode never lets a parameter through; strip mode removes them all.
                assert!(!p.path.contains(';'), "{:?} -> {:?}", input.raw, p.path);
            }
            // Normalizing is idempotent: what goes upstream normalizes to itself, unchanged.
            let rebuilt = match p.query {
                Some(q) => format!("{}?{q}", p.path),
                None => p.path.to_string(),
            };
            if rebuilt.len() <= MAX_PATH_LEN {
                let again = normalize(&rebuilt, params)
                    .unwrap_or_else(|e| panic!("{:?} -> {rebuilt:?} -> {e:?}", input.raw));
                assert_eq!(again.path, p.path);
                assert_eq!(again.query, p.query);
                assert!(!again.changed, "{rebuilt:?} changed again");
            }
            if !p.changed {
                assert_eq!(rebuilt, input.raw);
            }
            match_rules(&input, &p.path, p.query);
        }
        Err(PathError::TooLong) => assert!(input.raw.len() > MAX_PATH_LEN),
        Err(e) => {
            let _ = e.as_str();
        }
    }
    // A template binds the values it was filled with.
    if let Ok(t) = PathTemplate::parse(input.template) {
        let names = t.params();
        let mut values = input
            .values
            .iter()
            .copied()
            .filter(|v| !v.is_empty() && !v.contains('/'));
        let mut filled = Vec::new();
        let mut path = String::new();
        let mut ok = true;
        for seg in input
            .template
            .strip_prefix('/')
            .unwrap_or_default()
            .split('/')
        {
            path.push('/');
            if seg.starts_with('{') {
                let Some(v) = values.next() else {
                    ok = false;
                    break;
                };
                filled.push(v);
                path.push_str(v);
            } else {
                path.push_str(seg);
            }
        }
        if ok {
            let bound = t.bind(&path).expect("a filled template binds");
            assert_eq!(bound.len(), names.len());
            for ((name, value), (want_name, want)) in bound.iter().zip(names.iter().zip(&filled)) {
                assert_eq!(name, want_name);
                assert_eq!(value, want);
            }
        }
        if let Some(bound) = t.bind(input.raw) {
            assert!(bound.iter().all(|(_, v)| !v.is_empty() && !v.contains('/')));
        }
    }
});

fn match_rules(input: &Input<'_>, path: &str, query: Option<&str>) {
    if prefix_fits(input.prefix, path) {
        assert!(path.starts_with(input.prefix));
    }
    let headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    let req = Request {
        method: input.method,
        path,
        query,
        headers: &headers,
        client_ip: None,
        raw_path: input.raw,
        client_cert: ClientCert::Unread,
    };
    let header_rule = input.header_rule.map(|(name, kind, value)| HeaderMatch {
        name: name.to_ascii_lowercase(),
        kind: match kind % 3 {
            0 => HeaderMatchKind::Exact(value.into()),
            1 => HeaderMatchKind::Prefix(value.into()),
            _ => HeaderMatchKind::Present(value.is_empty()),
        },
    });
    let m = Match {
        prefix: (!input.prefix.is_empty()).then(|| input.prefix.to_string()),
        exact: None,
        template: PathTemplate::parse(input.template).ok(),
        methods: input.methods.iter().map(|m| m.to_string()).collect(),
        headers: header_rule.into_iter().collect(),
    };
    if let Some(params) = m.matches(&req) {
        assert!(m.methods.is_empty() || m.methods.iter().any(|x| x == input.method));
        if let Some(p) = &m.prefix {
            assert!(prefix_fits(p, path));
        }
        assert_eq!(
            params.is_empty(),
            m.template.as_ref().is_none_or(|t| t.params().is_empty())
        );
    }
    let _ = req.is_cors_preflight();
}
