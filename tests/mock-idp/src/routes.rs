//! Request entry point and the Okta endpoints: discovery, keys, token (introspect and revoke
//! live in `introspect`), and client authentication, which they share.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::faults::Fault;
use crate::message::{Outcome, Received, Reply, Req};
use crate::state::{App, Issued, ORG_SERVER};
use crate::tokens::{self, Alg, OktaClaims};
use crate::{control, form, introspect, lock};

/// Built-in confidential clients (id, secret), valid on every server.
pub const CLIENTS: &[(&str, &str)] = &[
    ("0oa-demo-client", "demo-secret"),
    ("0oa-other-client", "other-secret"),
];

pub const SCOPES: &[&str] = &["orders:read", "orders:write", "profile", "admin"];

pub const AUDIENCE: &str = "api://default";

/// The endpoints Okta's org authorization server has at `/oauth2/v1/...` (no server id).
const ORG_ENDPOINTS: &[&str] = &["keys", "token", "introspect", "revoke"];

/// The `aud` of the server's access tokens: Okta's org server puts its own URL there.
pub fn audience(app: &App, id: &str) -> String {
    if App::is_org(id) {
        app.issuer(id)
    } else {
        AUDIENCE.to_string()
    }
}

/// Server entry: count (refused requests too), then dispatch.
pub fn serve(app: &Arc<App>, received: Received) -> Outcome {
    match received {
        Ok(req) => {
            app.counts.record(&req.method, &req.url);
            handle(app, &req)
        }
        Err(refused) => {
            app.counts.record(&refused.req.method, &refused.req.url);
            Outcome::Now(refused.reply)
        }
    }
}

/// Dispatches a request that has already been counted.
pub fn handle(app: &Arc<App>, req: &Req) -> Outcome {
    let path = req.path();
    if path == "/control" || path.starts_with("/control/") {
        return Outcome::Now(control::handle(app, req));
    }
    let Some((id, endpoint)) = route(path) else {
        return Outcome::Now(not_found(req));
    };
    let allowed = match endpoint {
        ".well-known/openid-configuration" | ".well-known/oauth-authorization-server" => "GET",
        "v1/keys" => "GET",
        "v1/token" | "v1/introspect" | "v1/revoke" => "POST",
        _ => return Outcome::Now(not_found(req)),
    };
    if !crate::state::valid_server_id(id) {
        return Outcome::Now(not_found(req));
    }
    if endpoint == "v1/introspect" {
        // Before any check, so a test sees the shape of a request the mock refused too.
        introspect::record(app, id, req);
    }
    if req.method != allowed {
        return Outcome::Now(
            Reply::error(
                405,
                "method_not_allowed",
                format!("{} {} is not supported", req.method, path),
            )
            .with_header("Allow", allowed),
        );
    }
    match endpoint {
        "v1/keys" => keys(app, id),
        "v1/token" => Outcome::Now(token(app, id, req)),
        "v1/introspect" => introspect::introspect(app, id, req),
        "v1/revoke" => Outcome::Now(introspect::revoke(app, id, req)),
        _ => Outcome::Now(discovery(app, id)),
    }
}

/// `(server id, endpoint)` of `/oauth2/{id}/{endpoint}`, or of the org server's own paths:
/// `/oauth2/v1/{keys,token,introspect,revoke}` and `/.well-known/...` at the root.
fn route(path: &str) -> Option<(&str, &str)> {
    if let Some(endpoint) = path
        .strip_prefix('/')
        .filter(|p| p.starts_with(".well-known/"))
    {
        return Some((ORG_SERVER, endpoint));
    }
    let rest = path.strip_prefix("/oauth2/")?;
    if rest
        .strip_prefix("v1/")
        .is_some_and(|e| ORG_ENDPOINTS.contains(&e))
    {
        return Some((ORG_SERVER, rest));
    }
    rest.split_once('/')
}

pub fn not_found(req: &Req) -> Reply {
    Reply::error(
        404,
        "not_found",
        format!("no route for {} {}", req.method, req.path()),
    )
}

pub(crate) fn server_error(e: String) -> Reply {
    Reply::error(500, "server_error", e)
}

fn discovery(app: &App, id: &str) -> Reply {
    if let Err(e) = app.server(id) {
        return server_error(e);
    }
    let base = app.endpoint_base(id);
    let auth_methods = ["client_secret_basic", "client_secret_post"];
    Reply::json(
        200,
        &json!({
            "issuer": app.issuer(id),
            "authorization_endpoint": format!("{base}/v1/authorize"),
            "token_endpoint": format!("{base}/v1/token"),
            "jwks_uri": format!("{base}/v1/keys"),
            "introspection_endpoint": format!("{base}/v1/introspect"),
            "revocation_endpoint": format!("{base}/v1/revoke"),
            "response_types_supported": ["code", "token", "id_token"],
            "grant_types_supported": ["client_credentials"],
            "scopes_supported": SCOPES,
            "token_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "id_token_signing_alg_values_supported": ["RS256"],
        }),
    )
}

fn keys(app: &Arc<App>, id: &str) -> Outcome {
    let server = match app.server(id) {
        Ok(s) => s,
        Err(e) => return Outcome::Now(server_error(e)),
    };
    let fault = lock(&server).fault;
    let cache = format!("max-age={}", app.max_age());
    let reply = match fault {
        Fault::None => jwks(app, id),
        Fault::Status500 => Reply::raw_json(
            500,
            r#"{"errorCode":"E0000009","errorSummary":"Internal Server Error (injected fault)"}"#,
        ),
        Fault::Malformed => {
            Reply::raw_json(200, r#"{"keys": ["#).with_header("Cache-Control", &cache)
        }
        Fault::Empty => Reply::raw_json(200, r#"{"keys":[]}"#).with_header("Cache-Control", &cache),
        Fault::Drop => return Outcome::Drop,
        // Introspect-only modes, refused for keys when set; answer normally if ever here.
        Fault::ActiveNotBool | Fault::Oversize => jwks(app, id),
        Fault::Slow { delay_ms } => {
            let app = app.clone();
            let id = id.to_string();
            // Built after the sleep so it reflects rotations made meanwhile.
            return Outcome::After(
                Duration::from_millis(delay_ms),
                Box::new(move || jwks(&app, &id)),
            );
        }
    };
    Outcome::Now(reply)
}

fn jwks(app: &App, id: &str) -> Reply {
    let server = match app.server(id) {
        Ok(s) => s,
        Err(e) => return server_error(e),
    };
    let keys: Vec<Value> = lock(&server).keys.iter().map(|k| k.jwk()).collect();
    Reply::json(200, &json!({ "keys": keys }))
        .with_header("Cache-Control", &format!("max-age={}", app.max_age()))
}

pub(crate) fn invalid_request(description: impl Into<String>) -> Reply {
    Reply::error(400, "invalid_request", description)
}

fn invalid_client(description: &str, basic: bool) -> Reply {
    let reply = Reply::error(401, "invalid_client", description);
    if basic {
        reply.with_header("WWW-Authenticate", "Basic realm=\"mock-idp\"")
    } else {
        reply
    }
}

/// The client credentials a request presents: how (`basic`, `form` or `none`), and the client
/// id and secret, or the 400/401 answer when they cannot be read.
pub(crate) struct Presented {
    pub via: &'static str,
    pub credentials: Result<(String, String), Reply>,
}

/// Basic wins over form fields (`client_id`, `client_secret`), as at Okta.
pub(crate) fn presented(req: &Req, fields: &[(String, String)]) -> Presented {
    match req.header("authorization").and_then(form::basic_auth) {
        Some(Ok(credentials)) => Presented {
            via: "basic",
            credentials: Ok(credentials),
        },
        Some(Err(e)) => Presented {
            via: "basic",
            credentials: Err(invalid_client(&e, true)),
        },
        None => {
            let field = |name: &str| form::single(fields, name).map_err(invalid_request);
            let credentials = match (field("client_id"), field("client_secret")) {
                (Err(e), _) | (_, Err(e)) => Err(e),
                (Ok(Some(id)), Ok(Some(secret))) => Ok((id.to_string(), secret.to_string())),
                (Ok(None), _) => Err(invalid_client(
                    "Client authentication failed: no client_id.",
                    false,
                )),
                (Ok(Some(_)), Ok(None)) => Err(invalid_client(
                    "The client secret supplied for a confidential client is invalid.",
                    false,
                )),
            };
            let via = if fields.iter().any(|(n, _)| n == "client_id") {
                "form"
            } else {
                "none"
            };
            Presented { via, credentials }
        }
    }
}

pub(crate) fn secret_ok(client_id: &str, secret: &str) -> bool {
    CLIENTS.iter().any(|(c, s)| *c == client_id && *s == secret)
}

/// The authenticated client's id, or the 400/401 answer.
pub(crate) fn authenticate(req: &Req, fields: &[(String, String)]) -> Result<String, Reply> {
    let presented = presented(req, fields);
    let used_basic = presented.via == "basic";
    let (client_id, secret) = presented.credentials?;
    match CLIENTS.iter().find(|(c, _)| *c == client_id) {
        None => Err(invalid_client(
            "Invalid value for 'client_id' parameter.",
            used_basic,
        )),
        Some((_, s)) if *s != secret => Err(invalid_client(
            "The client secret supplied for a confidential client is invalid.",
            used_basic,
        )),
        Some(_) => Ok(client_id),
    }
}

/// Refuses a body declared as anything but a form (a missing content type is let through).
pub(crate) fn form_body(req: &Req) -> Result<Vec<(String, String)>, Reply> {
    if let Some(ct) = req.header("content-type") {
        let media = ct.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(invalid_request(
                "content type must be application/x-www-form-urlencoded",
            ));
        }
    }
    form::parse_urlencoded(&req.body).map_err(invalid_request)
}

fn token(app: &App, id: &str, req: &Req) -> Reply {
    let fields = match form_body(req) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let field = |name: &str| form::single(&fields, name).map_err(invalid_request);
    let client_id = match authenticate(req, &fields) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let grant_type = match field("grant_type") {
        Ok(g) => g,
        Err(e) => return e,
    };
    match grant_type {
        None => return invalid_request("The 'grant_type' parameter is required."),
        Some("client_credentials") => {}
        Some(_) => {
            return Reply::error(
                400,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server. \
                 Configured grant types: [client_credentials].",
            )
        }
    }
    let scope = match field("scope") {
        Ok(s) => s.unwrap_or(""),
        Err(e) => return e,
    };
    let mut scp: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !scp.iter().any(|have| have == s) {
            scp.push(s.to_string());
        }
    }
    if scp.is_empty() {
        return invalid_request("The 'scope' parameter is required for client_credentials.");
    }
    if scp.iter().any(|s| !SCOPES.contains(&s.as_str())) {
        return Reply::error(
            400,
            "invalid_scope",
            "One or more scopes are not configured for the authorization server resource.",
        );
    }

    let server = match app.server(id) {
        Ok(s) => s,
        Err(e) => return server_error(e),
    };
    let key = match lock(&server).keys.first() {
        Some(k) => k.clone(),
        None => return server_error("server has no keys".into()),
    };
    let issuer = app.issuer(id);
    let audience = audience(app, id);
    let lifetime_s = app.config.lifetime_s;
    let claims = OktaClaims {
        issuer: &issuer,
        audience: &audience,
        lifetime_s,
        cid: &client_id,
        uid: None,
        sub: &client_id,
        scp: &scp,
    }
    .to_map();
    let access_token = if App::is_org(id) {
        // Okta's org server: a reference token, whose claims only introspection tells.
        let token = tokens::new_opaque();
        let issued = Issued {
            claims: Some(claims),
            extra: Default::default(),
        };
        app.remember(id, tokens::token_hash(&token), issued)
            .map(|()| token)
    } else {
        let mut header = serde_json::Map::new();
        header.insert("kid".into(), key.kid().into());
        header.insert("alg".into(), "RS256".into());
        tokens::encode(&header, &claims, Alg::Rs256, &key)
    };
    match access_token {
        Ok(access_token) => Reply::json(
            200,
            &json!({
                "token_type": "Bearer",
                "expires_in": lifetime_s,
                "access_token": access_token,
                "scope": scp.join(" "),
            }),
        )
        .with_header("Cache-Control", "no-store")
        .with_header("Pragma", "no-cache"),
        Err(e) => server_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{decode_part, test_app, verify_rsa};
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    const FORM: &str = "application/x-www-form-urlencoded";

    fn token_req(body: &str, basic: Option<(&str, &str)>) -> Req {
        let mut req = Req::new("POST", "/oauth2/default/v1/token")
            .with_header("Content-Type", FORM)
            .with_body(body);
        if let Some((id, secret)) = basic {
            let creds = STANDARD.encode(format!("{id}:{secret}"));
            req = req.with_header("Authorization", &format!("Basic {creds}"));
        }
        req
    }

    fn call(app: &Arc<App>, req: Req) -> Reply {
        handle(app, &req).wait()
    }

    #[test]
    fn client_credentials_with_basic_auth() {
        let app = test_app();
        let r = call(
            &app,
            token_req(
                "grant_type=client_credentials&scope=orders%3Aread+orders:write",
                Some(("0oa-other-client", "other-secret")),
            ),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let body = r.body_json();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["scope"], "orders:read orders:write");
        let token = body["access_token"].as_str().unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let (header, claims) = (decode_part(parts[0]), decode_part(parts[1]));
        let jwks = call(&app, Req::new("GET", "/oauth2/default/v1/keys")).body_json();
        assert_eq!(
            header,
            json!({"kid": jwks["keys"][0]["kid"], "alg": "RS256"})
        );
        assert!(verify_rsa(token, &jwks["keys"][0], "RS256"));
        assert_eq!(claims["sub"], "0oa-other-client");
        assert_eq!(claims["cid"], "0oa-other-client");
        assert!(claims.get("uid").is_none());
        assert_eq!(claims["scp"], json!(["orders:read", "orders:write"]));
        assert_eq!(claims["iss"], "http://idp.test/oauth2/default");
        assert_eq!(claims["aud"], "api://default");
        assert_eq!(claims["ver"], 1);
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );
    }

    #[test]
    fn client_credentials_with_form_secret() {
        let app = test_app();
        let r = call(
            &app,
            token_req(
                "grant_type=client_credentials&scope=admin&client_id=0oa-demo-client&client_secret=demo-secret",
                None,
            ),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body_json()["scope"], "admin");
    }

    #[test]
    fn token_errors() {
        let app = test_app();
        let good = "grant_type=client_credentials&scope=profile";
        let cases: Vec<(Req, u16, &str)> = vec![
            (
                token_req(good, Some(("0oa-demo-client", "wrong"))),
                401,
                "invalid_client",
            ),
            (
                token_req(good, Some(("0oa-nobody", "demo-secret"))),
                401,
                "invalid_client",
            ),
            (token_req(good, None), 401, "invalid_client"),
            (
                token_req(&format!("{good}&client_id=0oa-demo-client"), None),
                401,
                "invalid_client",
            ),
            (
                token_req(
                    "grant_type=client_credentials&scope=profile+email",
                    Some(("0oa-demo-client", "demo-secret")),
                ),
                400,
                "invalid_scope",
            ),
            (
                token_req(
                    "grant_type=client_credentials",
                    Some(("0oa-demo-client", "demo-secret")),
                ),
                400,
                "invalid_request",
            ),
            (
                token_req(
                    "grant_type=password&scope=profile",
                    Some(("0oa-demo-client", "demo-secret")),
                ),
                400,
                "unsupported_grant_type",
            ),
            (
                token_req(
                    "grant_type=client_credentials&scope=%zz",
                    Some(("0oa-demo-client", "demo-secret")),
                ),
                400,
                "invalid_request",
            ),
            (
                token_req(
                    &format!("{good}&scope=admin"),
                    Some(("0oa-demo-client", "demo-secret")),
                ),
                400,
                "invalid_request",
            ),
        ];
        for (req, status, error) in cases {
            let body = String::from_utf8_lossy(&req.body).to_string();
            let r = call(&app, req);
            assert_eq!(
                (r.status, r.body_json()["error"].as_str().unwrap()),
                (status, error),
                "{body}"
            );
        }
        let mut json_body = token_req(good, Some(("0oa-demo-client", "demo-secret")));
        json_body.headers[0].1 = "application/json".into();
        assert_eq!(
            call(&app, json_body).body_json()["error"],
            "invalid_request"
        );
        let wrong_method = call(&app, Req::new("GET", "/oauth2/default/v1/token"));
        assert_eq!(
            (wrong_method.status, wrong_method.header("allow")),
            (405, Some("POST"))
        );
    }

    #[test]
    fn discovery_documents() {
        let app = test_app();
        let a = call(
            &app,
            Req::new(
                "GET",
                "/oauth2/default/.well-known/openid-configuration?client_id=x",
            ),
        );
        let b = call(
            &app,
            Req::new(
                "GET",
                "/oauth2/default/.well-known/oauth-authorization-server",
            ),
        );
        assert_eq!(a.status, 200);
        let doc = a.body_json();
        assert_eq!(doc, b.body_json());
        assert_eq!(doc["issuer"], "http://idp.test/oauth2/default");
        assert_eq!(doc["jwks_uri"], "http://idp.test/oauth2/default/v1/keys");
        assert_eq!(
            doc["token_endpoint"],
            "http://idp.test/oauth2/default/v1/token"
        );
        for field in [
            "authorization_endpoint",
            "response_types_supported",
            "grant_types_supported",
            "scopes_supported",
            "token_endpoint_auth_methods_supported",
            "id_token_signing_alg_values_supported",
        ] {
            assert!(doc.get(field).is_some(), "{field}");
        }
    }

    #[test]
    fn unknown_paths_are_404() {
        let app = test_app();
        for path in [
            "/",
            "/oauth2",
            "/oauth2/default",
            "/oauth2/default/v1/nope",
            "/oauth2/a%20b/v1/keys",
        ] {
            let r = call(&app, Req::new("GET", path));
            assert_eq!(r.status, 404, "{path}");
            assert_eq!(r.body_json()["error"], "not_found");
        }
    }
}
