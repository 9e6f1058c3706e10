//! Token extraction: the configured sources are tried in order, and the first one present in
//! the request gives the token.

use std::borrow::Cow;

use crate::core::request::cookie;
use crate::core::request::query;
use crate::core::request::view::Request;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `name` is lower-case; `prefix` is compared without regard to ASCII case.
    Header {
        name: String,
        prefix: String,
    },
    Query(String),
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted<'c, 'r> {
    /// Borrowed from the request unless it had to be decoded (a query parameter).
    pub token: Cow<'r, str>,
    pub source: &'c Source,
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

fn from_source<'r>(source: &Source, req: &Request<'r>) -> Option<Cow<'r, str>> {
    let token = match source {
        Source::Header { name, prefix } => req
            .header_values(name)
            .find_map(|v| strip_prefix_ignore_case(v, prefix))
            .map(|t| Cow::Borrowed(t.trim())),
        Source::Query(name) => req
            .query
            .and_then(|q| query::get_param(q, name))
            .map(Cow::Owned),
        Source::Cookie(name) => req
            .header_values("cookie")
            .find_map(|h| cookie::get(h, name))
            .map(Cow::Borrowed),
    }?;
    // An empty credential is no credential.
    (!token.is_empty()).then_some(token)
}

/// What the sources hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<'c, 'r> {
    Nothing,
    One(Extracted<'c, 'r>),
    /// More than one token, across sources or within one (two `Authorization` headers):
    /// RFC 6750 section 3.1 `invalid_request`, never a guess at which one counts.
    Several,
}

/// How many tokens `source` holds (counting stops at two).
fn count(source: &Source, req: &Request<'_>) -> usize {
    match source {
        // Repeated headers that Envoy joined into one value are found by `holds_several`.
        Source::Header { name, prefix } => req
            .header_values(name)
            .filter(|v| strip_prefix_ignore_case(v, prefix).is_some_and(|t| !t.trim().is_empty()))
            .take(2)
            .count(),
        Source::Query(name) => req.query.map_or(0, |q| query::count_param(q, name, 2)),
        Source::Cookie(name) => req
            .header_values("cookie")
            .map(|h| cookie::count(h, name, 2))
            .sum(),
    }
}

/// The one token the sources hold, if exactly one.
pub fn extract_one<'c, 'r>(sources: &'c [Source], req: &Request<'r>) -> Found<'c, 'r> {
    let mut total = 0;
    let mut found = None;
    for source in sources {
        // Headers in one pass: the common source, on every request.
        if let Source::Header { name, prefix } = source {
            for value in req.header_values(name) {
                let Some(token) = strip_prefix_ignore_case(value, prefix).map(str::trim) else {
                    continue;
                };
                if token.is_empty() {
                    continue;
                }
                total += 1;
                if total > 1 {
                    return Found::Several;
                }
                found = Some(Extracted {
                    token: Cow::Borrowed(token),
                    source,
                });
            }
            continue;
        }
        let n = count(source, req);
        if n == 0 {
            continue;
        }
        total += n;
        if total > 1 {
            return Found::Several;
        }
        found = from_source(source, req).map(|token| Extracted { token, source });
    }
    found.map_or(Found::Nothing, Found::One)
}

/// Whether a token taken from a header is really several: Envoy joins repeated headers with
/// `,` (no token contains one), so `Bearer a,Bearer b` is two. Asked only of a token that is
/// not a good JWS, so the common request never scans its token for commas.
pub fn holds_several(source: &Source, token: &str) -> bool {
    match source {
        Source::Header { prefix, .. } => token
            .split(',')
            .skip(1)
            .any(|part| strip_prefix_ignore_case(part.trim_start(), prefix).is_some()),
        Source::Query(_) | Source::Cookie(_) => false,
    }
}

pub fn extract<'c, 'r>(
    sources: impl IntoIterator<Item = &'c Source>,
    req: &Request<'r>,
) -> Option<Extracted<'c, 'r>> {
    sources
        .into_iter()
        .find_map(|source| from_source(source, req).map(|token| Extracted { token, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(query: Option<&'a str>, headers: &'a [(String, String)]) -> Request<'a> {
        Request {
            method: "GET",
            path: "/",
            query,
            headers,
            client_ip: None,
            raw_path: "/",
            client_cert: crate::core::request::view::ClientCert::Unread,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn bearer() -> Source {
        Source::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }
    }

    #[test]
    fn header_prefix_is_case_insensitive() {
        let sources = [bearer()];
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "Bearer  abc "] {
            let headers = h(&[("authorization", value)]);
            let got = extract(&sources, &req(None, &headers)).unwrap();
            assert_eq!(got.token, "abc", "{value}");
        }
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "é"] {
            let headers = h(&[("authorization", value)]);
            assert_eq!(extract(&sources, &req(None, &headers)), None, "{value}");
        }
    }

    #[test]
    fn sources_are_tried_in_order() {
        let sources = [
            bearer(),
            Source::Query("access_token".into()),
            Source::Cookie("at".into()),
        ];
        let headers = h(&[("cookie", "x=1; at=from-cookie")]);
        let got = extract(
            &sources,
            &req(Some("a=1&access_token=from-query"), &headers),
        )
        .unwrap();
        assert_eq!(got.token, "from-query");
        assert_eq!(got.source, &sources[1]);
        let got = extract(&sources, &req(Some("a=1"), &headers)).unwrap();
        assert_eq!(got.token, "from-cookie");
        let both = h(&[("authorization", "Bearer from-header"), ("cookie", "at=c")]);
        assert_eq!(
            extract(&sources, &req(None, &both)).unwrap().token,
            "from-header"
        );
        assert_eq!(extract(&sources, &req(None, &[])), None);
    }

    #[test]
    fn second_cookie_header_is_searched() {
        let sources = [Source::Cookie("at".into())];
        let headers = h(&[("cookie", "a=1"), ("cookie", "at=tok")]);
        assert_eq!(
            extract(&sources, &req(None, &headers)).unwrap().token,
            "tok"
        );
    }
}
