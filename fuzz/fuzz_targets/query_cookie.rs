//! Query and cookie parsing and token removal (request/query.rs, cookie.rs, extract.rs): what
//! the filter reads as the token is exactly what it removes, and nothing else changes.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use okta_jwt_filter::core::request::extract::{self, Found, Source};
use okta_jwt_filter::core::request::view::{ClientCert, Request};
use okta_jwt_filter::core::request::{cookie, query};
use okta_jwt_filter_fuzz::split_line;

/// The query is the input's first line and the cookie header its second; the rest fills the
/// other fields.
#[derive(Debug, Arbitrary)]
struct Input<'a> {
    name: &'a str,
    other: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    sources: Vec<(u8, &'a str, &'a str)>,
}

fuzz_target!(|data: &[u8]| {
    let (q, rest) = split_line(data);
    let (c, rest) = split_line(rest);
    let (Ok(q), Ok(c)) = (std::str::from_utf8(q), std::str::from_utf8(c)) else {
        return;
    };
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let (name, other) = (input.name, input.other);

    // Query: the removed parameter is gone under every spelling; the others are untouched.
    let rest = query::remove_param(q, name);
    assert_eq!(query::get_param(&rest, name), None);
    assert_eq!(query::count_param(&rest, name, usize::MAX), 0);
    if other != name {
        assert_eq!(query::get_param(&rest, other), query::get_param(q, other));
        assert_eq!(
            query::count_param(&rest, other, usize::MAX),
            query::count_param(q, other, usize::MAX)
        );
    }
    assert!(query::count_param(q, name, 2) <= 2);
    if query::get_param(q, name).is_some() {
        assert!(query::count_param(q, name, usize::MAX) >= 1);
    }
    assert!(rest.len() <= q.len());

    // Cookie: the same for one header.
    match cookie::remove(c, name) {
        Some(rest) => {
            assert_eq!(cookie::get(&rest, name), None);
            assert_eq!(cookie::count(&rest, name, usize::MAX), 0);
            if other != name {
                assert_eq!(cookie::get(&rest, other), cookie::get(c, other));
                assert_eq!(
                    cookie::count(&rest, other, usize::MAX),
                    cookie::count(c, other, usize::MAX)
                );
            }
        }
        None => assert!(other == name || cookie::get(c, other).is_none()),
    }
    if cookie::count(c, name, usize::MAX) > 0 {
        assert!(cookie::get(c, name).is_some());
    }

    // Extraction over a request built from the input.
    let headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .chain(std::iter::once(("cookie".to_string(), c.to_string())))
        .collect();
    let sources: Vec<Source> = input
        .sources
        .iter()
        .take(4)
        .map(|(kind, a, b)| match kind % 3 {
            0 => Source::Header {
                name: a.to_ascii_lowercase(),
                prefix: b.to_string(),
            },
            1 => Source::Query(a.to_string()),
            _ => Source::Cookie(a.to_string()),
        })
        .collect();
    let req = Request {
        method: "GET",
        path: "/",
        query: Some(q),
        headers: &headers,
        client_ip: None,
        raw_path: "/",
        client_cert: ClientCert::Unread,
    };
    match extract::extract_one(&sources, &req) {
        Found::One(e) => {
            assert!(!e.token.is_empty());
            let _ = extract::holds_several(e.source, &e.token);
            let _ = extract::extract(&sources, &req);
            // The token is in its source, and removing that source's pairs leaves none there.
            match e.source {
                Source::Query(n) => {
                    assert_eq!(query::get_param(q, n).as_deref(), Some(&*e.token));
                    assert_eq!(query::get_param(&query::remove_param(q, n), n), None)
                }
                Source::Cookie(n) => {
                    let all: Vec<&str> = req.header_values("cookie").collect();
                    assert!(all.iter().any(|h| cookie::get(h, n) == Some(&*e.token)));
                    let joined = all.join("; ");
                    if let Some(rest) = cookie::remove(&joined, n) {
                        assert_eq!(cookie::get(&rest, n), None);
                    }
                }
                Source::Header { name, prefix } => {
                    assert_eq!(e.token.trim(), &*e.token);
                    assert!(req.header_values(name).any(|v| {
                        v.len() >= prefix.len()
                            && v.get(..prefix.len())
                                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
                            && v.get(prefix.len()..).map(str::trim) == Some(&*e.token)
                    }));
                }
            }
        }
        Found::Nothing | Found::Several => {}
    }
});
