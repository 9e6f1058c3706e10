//! Rule matching: path (prefix by whole segments, exact, template), methods and headers.

use crate::core::request::view::Request;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A path template such as `/users/{id}/profile`; each `{name}` binds one whole segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
}

/// Template parameters bound by a match, in template order.
pub type Params<'a> = Vec<(&'a str, &'a str)>;

impl PathTemplate {
    pub fn parse(template: &str) -> Result<PathTemplate, String> {
        let Some(rest) = template.strip_prefix('/') else {
            return Err("must start with \"/\"".into());
        };
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for raw in rest.split('/') {
            if let Some(inner) = raw.strip_prefix('{') {
                let Some(name) = inner.strip_suffix('}') else {
                    return Err(format!(
                        "segment {raw:?} opens a parameter it does not close"
                    ));
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!("parameter {raw:?} must be named with [A-Za-z0-9_]"));
                }
                if names.contains(&name) {
                    return Err(format!("parameter {name:?} appears twice"));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_owned()));
            } else if raw.contains(['{', '}']) {
                return Err(format!(
                    "segment {raw:?}: a parameter must be a whole segment"
                ));
            } else {
                segments.push(Segment::Literal(raw.to_owned()));
            }
        }
        Ok(PathTemplate { segments })
    }

    pub fn params(&self) -> Vec<String> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(p) => Some(p.clone()),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    pub fn bind<'a>(&'a self, path: &'a str) -> Option<Params<'a>> {
        let rest = path.strip_prefix('/')?;
        let mut params = Vec::new();
        let mut parts = rest.split('/');
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => params.push((name.as_str(), part)),
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(params)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatchKind {
    Exact(String),
    Prefix(String),
    Present(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub kind: HeaderMatchKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Match {
    pub prefix: Option<String>,
    pub exact: Option<String>,
    pub template: Option<PathTemplate>,
    pub methods: Vec<String>,
    pub headers: Vec<HeaderMatch>,
}

/// `prefix` matches whole segments: `/public` fits `/public` and `/public/x`, not `/publicity`.
pub fn prefix_fits(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

impl Match {
    /// `Some(params)` when every given part fits the request.
    pub fn matches<'a>(&'a self, req: &Request<'a>) -> Option<Params<'a>> {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method) {
            return None;
        }
        if let Some(p) = &self.prefix {
            if !prefix_fits(p, req.path) {
                return None;
            }
        }
        if let Some(e) = &self.exact {
            if e != req.path {
                return None;
            }
        }
        for h in &self.headers {
            let value = req.header(&h.name);
            let fits = match (&h.kind, value) {
                (HeaderMatchKind::Present(want), v) => *want == v.is_some(),
                (HeaderMatchKind::Exact(x), Some(v)) => x == v,
                (HeaderMatchKind::Prefix(x), Some(v)) => v.starts_with(x.as_str()),
                (_, None) => false,
            };
            if !fits {
                return None;
            }
        }
        match &self.template {
            Some(t) => t.bind(req.path),
            None => Some(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(method: &'a str, path: &'a str, headers: &'a [(String, String)]) -> Request<'a> {
        Request {
            method,
            path,
            query: None,
            headers,
            client_ip: None,
            raw_path: path,
            client_cert: crate::core::request::view::ClientCert::Unread,
        }
    }

    #[test]
    fn prefix_matches_whole_segments() {
        assert!(prefix_fits("/public", "/public"));
        assert!(prefix_fits("/public", "/public/"));
        assert!(prefix_fits("/public", "/public/x"));
        assert!(!prefix_fits("/public", "/publicity"));
        assert!(!prefix_fits("/public", "/"));
        assert!(prefix_fits("/public/", "/public/x"));
        assert!(!prefix_fits("/public/", "/public"));
        assert!(prefix_fits("/", "/anything"));
        assert!(prefix_fits("/api/v", "/api/v"));
        assert!(!prefix_fits("/api/v", "/api/v1"));
    }

    #[test]
    fn template_binds_whole_segments() {
        let t = PathTemplate::parse("/users/{id}/profile").unwrap();
        assert_eq!(t.params(), vec!["id".to_string()]);
        assert_eq!(t.bind("/users/42/profile"), Some(vec![("id", "42")]));
        assert_eq!(t.bind("/users//profile"), None);
        assert_eq!(t.bind("/users/42/profile/x"), None);
        assert_eq!(t.bind("/users/42/profile/"), None);
        assert_eq!(t.bind("/users/42"), None);
        assert_eq!(t.bind("/people/42/profile"), None);
        let two = PathTemplate::parse("/o/{org}/u/{user}").unwrap();
        assert_eq!(
            two.bind("/o/a/u/b"),
            Some(vec![("org", "a"), ("user", "b")])
        );
    }

    #[test]
    fn template_syntax_errors() {
        for bad in [
            "users/{id}",
            "/users/{id",
            "/users/x{id}",
            "/users/{}",
            "/{a}/{a}",
            "/{a-b}",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_and_headers_must_all_fit() {
        let m = Match {
            prefix: Some("/api".into()),
            methods: vec!["POST".into(), "PUT".into()],
            headers: vec![
                HeaderMatch {
                    name: "x-tenant".into(),
                    kind: HeaderMatchKind::Exact("acme".into()),
                },
                HeaderMatch {
                    name: "x-debug".into(),
                    kind: HeaderMatchKind::Present(false),
                },
            ],
            ..Match::default()
        };
        let good = [("x-tenant".to_string(), "acme".to_string())];
        assert!(m.matches(&req("POST", "/api/x", &good)).is_some());
        assert!(m.matches(&req("GET", "/api/x", &good)).is_none());
        assert!(m.matches(&req("POST", "/apix", &good)).is_none());
        let wrong = [("x-tenant".to_string(), "other".to_string())];
        assert!(m.matches(&req("POST", "/api/x", &wrong)).is_none());
        let debug = [
            ("x-tenant".to_string(), "acme".to_string()),
            ("x-debug".to_string(), "1".to_string()),
        ];
        assert!(m.matches(&req("POST", "/api/x", &debug)).is_none());
        assert!(Match::default()
            .matches(&req("DELETE", "/z", &[]))
            .is_some());
    }

    #[test]
    fn header_prefix_and_exact_path() {
        let m = Match {
            exact: Some("/a".into()),
            headers: vec![HeaderMatch {
                name: "x-v".into(),
                kind: HeaderMatchKind::Prefix("v2".into()),
            }],
            ..Match::default()
        };
        let h = [("x-v".to_string(), "v2.1".to_string())];
        assert!(m.matches(&req("GET", "/a", &h)).is_some());
        assert!(m.matches(&req("GET", "/a/", &h)).is_none());
        assert!(m.matches(&req("GET", "/a", &[])).is_none());
    }
}
