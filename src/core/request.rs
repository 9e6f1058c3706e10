//! What the core sees of an HTTP request: borrowed views, so the shell fills it without copies.

/// Request headers as the host hands them over: lower-case names, in arrival order.
pub type Headers = [(String, String)];

#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The normalized path, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a Headers,
}

impl<'a> Request<'a> {
    /// The first value of a header; `name` must be lower-case.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, for those that may repeat (such as `cookie`).
    pub fn header_values(&self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A CORS preflight: `OPTIONS` carrying `Origin` and `Access-Control-Request-Method`.
    pub fn is_cors_preflight(&self) -> bool {
        self.method == "OPTIONS"
            && self.header("origin").is_some()
            && self.header("access-control-request-method").is_some()
    }
}
