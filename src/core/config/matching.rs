//! Compiling a rule's `match`: at most one path form, methods and header conditions.

use crate::core::config::error::{err, ConfigError};
use crate::core::config::names::header_name_any;
use crate::core::config::raw::{RawHeaderMatch, RawMatch};
use crate::core::request::matcher::{HeaderMatch, HeaderMatchKind, Match, PathTemplate};

pub fn compile_match(at: &str, m: RawMatch) -> Result<Match, ConfigError> {
    let paths = [m.prefix.is_some(), m.exact.is_some(), m.template.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if paths > 1 {
        return err(
            at,
            "use at most one of \"prefix\", \"exact\" and \"template\"",
        );
    }
    for (name, value) in [("prefix", &m.prefix), ("exact", &m.exact)] {
        if let Some(v) = value {
            if !v.starts_with('/') {
                return err(format!("{at}.{name}"), "must start with \"/\"");
            }
        }
    }
    let template = match m.template {
        None => None,
        Some(t) => Some(PathTemplate::parse(&t).map_err(|problem| ConfigError {
            field: format!("{at}.template"),
            problem,
        })?),
    };
    let methods = match m.methods {
        None => Vec::new(),
        Some(list) => {
            if list.is_empty() {
                return err(format!("{at}.methods"), "must not be empty");
            }
            if let Some(i) = list
                .iter()
                .position(|x| x.is_empty() || !x.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return err(
                    format!("{at}.methods[{i}]"),
                    "methods are upper-case, like \"GET\"",
                );
            }
            list
        }
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.unwrap_or_default().into_iter().enumerate() {
        headers.push(header_match(&format!("{at}.headers[{i}]"), h)?);
    }
    Ok(Match {
        prefix: m.prefix,
        exact: m.exact,
        template,
        methods,
        headers,
    })
}

fn header_match(field: &str, h: RawHeaderMatch) -> Result<HeaderMatch, ConfigError> {
    let name = header_name_any(&format!("{field}.name"), &h.name)?;
    let kind = match (h.exact, h.prefix, h.present) {
        (Some(v), None, None) => HeaderMatchKind::Exact(v),
        (None, Some(v), None) => HeaderMatchKind::Prefix(v),
        (None, None, Some(p)) => HeaderMatchKind::Present(p),
        _ => {
            return err(
                field,
                "exactly one of \"exact\", \"prefix\" or \"present\" is required",
            )
        }
    };
    Ok(HeaderMatch { name, kind })
}
