//! Header and cookie names in the configuration: valid HTTP tokens, lower-cased, and never a
//! header that changes routing, framing or authentication when the filter writes it.

use crate::core::config::error::{err, ConfigError};

/// Headers a claim may never be written to: they change routing, framing or authentication.
const RESERVED_HEADERS: [&str; 10] = [
    "authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-request-id",
];

pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A lower-cased header name that the filter reads.
pub fn header_name_any(field: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return err(field, format!("{name:?} is not a valid header name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// A lower-cased header name that the filter writes.
pub fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let lower = header_name_any(field, name)?;
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return err(
            field,
            format!("{name:?} is reserved and cannot carry claims"),
        );
    }
    Ok(lower)
}
