//! RFC 7662 introspection and RFC 7009 revocation, shaped like Okta's, and the record of the
//! last introspection request that tests read through `/control/introspect-last`.
//!
//! A token is active at server `{id}` when it is an opaque token that server minted, or a JWT
//! signed with one of its published keys whose `iss` is its issuer; and it is neither expired
//! (a numeric `exp` in the past) nor revoked there. Tokens are remembered by their SHA-256,
//! never as themselves, and nothing here logs one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::faults::Fault;
use crate::message::{Outcome, Reply, Req};
use crate::routes::{authenticate, form_body, invalid_request, presented, secret_ok, server_error};
use crate::state::{expired, App};
use crate::tokens::{self, hex, token_hash};
use crate::{form, lock};

/// The `padding` member of the `oversize` fault: the answer passes 64 KiB whatever the token.
pub const OVERSIZE_PADDING: usize = 70 * 1024;

/// Claims that the answer renames (`scp` to `scope`, `cid` to `client_id`) or drops (`ver`);
/// `active` is the answer's own.
const NOT_PASSED_THROUGH: &[&str] = &["ver", "scp", "cid", "active"];

/// Remembers the request's shape (never the token or the secret) as the last introspection.
pub fn record(app: &App, id: &str, req: &Req) {
    let parsed = form::parse_urlencoded(&req.body);
    let fields = parsed.as_deref().unwrap_or(&[]);
    let first = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let presented = presented(req, fields);
    let (client_id, secret_ok) = match &presented.credentials {
        Ok((client_id, secret)) => (Some(client_id.clone()), secret_ok(client_id, secret)),
        Err(_) => (None, false),
    };
    let scheme = req
        .header("authorization")
        .map(|h| h.trim().split(' ').next().unwrap_or("").to_string());
    let mut shape = json!({
        "server": id,
        "method": req.method,
        "path": req.path(),
        "has_query": req.url.contains('?'),
        "content_type": req.header("content-type"),
        "authorization_scheme": scheme,
        "auth": presented.via,
        "client_id": client_id,
        "secret_ok": secret_ok,
        "form_keys": fields.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "form_error": parsed.as_ref().err(),
        "token_type_hint": first("token_type_hint"),
        "token_sha256": first("token").map(|t| hex(&token_hash(t))),
    });
    let mut last = lock(&app.introspections);
    last.0 += 1;
    shape["seq"] = last.0.into();
    last.1 = Some(shape);
}

/// The token of a well-formed request from an authenticated client, or the error answer.
fn token_of(req: &Req) -> Result<String, Reply> {
    let fields = form_body(req)?;
    authenticate(req, &fields)?;
    // RFC 7662 lets the server ignore a hint it does not know; a repeated one is malformed.
    form::single(&fields, "token_type_hint").map_err(invalid_request)?;
    match form::single(&fields, "token").map_err(invalid_request)? {
        Some(token) if !token.is_empty() => Ok(token.to_string()),
        _ => Err(invalid_request("The 'token' parameter is required.")),
    }
}

fn answer(body: &Map<String, Value>) -> Reply {
    Reply::json(200, &Value::Object(body.clone()))
        .with_header("Cache-Control", "no-store")
        .with_header("Pragma", "no-cache")
}

/// `POST /v1/introspect`: 200 with the answer, unless the server's introspect fault says
/// otherwise (faults apply to well-formed, authenticated requests only).
pub fn introspect(app: &Arc<App>, id: &str, req: &Req) -> Outcome {
    let token = match token_of(req) {
        Ok(t) => t,
        Err(e) => return Outcome::Now(e),
    };
    let server = match app.server(id) {
        Ok(s) => s,
        Err(e) => return Outcome::Now(server_error(e)),
    };
    let fault = lock(&server).introspect_fault;
    let mut body = match fault {
        Fault::None => lookup(app, id, &token),
        Fault::Status500 => {
            return Outcome::Now(Reply::raw_json(
                500,
                r#"{"errorCode":"E0000009","errorSummary":"Internal Server Error (injected fault)"}"#,
            ))
        }
        Fault::Slow { delay_ms } => {
            let (app, id) = (app.clone(), id.to_string());
            // Looked up after the sleep, so a revocation made meanwhile shows.
            return Outcome::After(
                Duration::from_millis(delay_ms),
                Box::new(move || answer(&lookup(&app, &id, &token))),
            );
        }
        Fault::Malformed => return Outcome::Now(Reply::raw_json(200, r#"{"active": tr"#)),
        Fault::Empty => return Outcome::Now(answer(&Map::new())),
        Fault::Drop => return Outcome::Drop,
        Fault::ActiveNotBool => {
            let mut body = lookup(app, id, &token);
            if let Some(Value::Bool(active)) = body.get("active") {
                let text = active.to_string();
                body.insert("active".into(), text.into());
            }
            body
        }
        Fault::Oversize => {
            let mut body = lookup(app, id, &token);
            body.insert("padding".into(), "x".repeat(OVERSIZE_PADDING).into());
            body
        }
    };
    if body.is_empty() {
        body.insert("active".into(), false.into());
    }
    Outcome::Now(answer(&body))
}

/// The introspection answer for `token` at server `id`.
pub fn lookup(app: &App, id: &str, token: &str) -> Map<String, Value> {
    let mut inactive = Map::new();
    inactive.insert("active".into(), false.into());
    let Ok(server) = app.server(id) else {
        return inactive;
    };
    let hash = token_hash(token);
    let (issued, revoked, keys) = {
        let s = lock(&server);
        (
            s.issued.get(&hash).cloned(),
            s.revoked.contains(&hash),
            s.keys.clone(),
        )
    };
    let claims = match issued.as_ref().and_then(|i| i.claims.clone()) {
        Some(opaque) => Some(opaque),
        None => {
            let issuer = app.issuer(id);
            tokens::verify(token, &keys)
                .filter(|c| c.get("iss").and_then(Value::as_str) == Some(issuer.as_str()))
        }
    };
    let mut body = match claims {
        Some(c) if !revoked && !expired(&c, tokens::now_s()) => active_answer(&c),
        _ => inactive,
    };
    if let Some(issued) = issued {
        tokens::merge(&mut body, issued.extra);
    }
    body
}

/// Okta's answer for an active token with these claims, in Okta's order: `scp` becomes the
/// space-delimited `scope` (unless a `scope` claim is given), `cid` becomes `client_id` (unless
/// a `client_id` claim is given), `username` defaults to `sub`, `token_type` to `Bearer`;
/// `ver` is dropped and every other claim is passed through.
pub fn active_answer(claims: &Map<String, Value>) -> Map<String, Value> {
    let mut a = Map::new();
    a.insert("active".into(), true.into());
    let scope = claims.get("scope").cloned().or_else(|| {
        claims.get("scp").map(|scp| match scp {
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(" ")
                .into(),
            other => other.clone(),
        })
    });
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(v) = value {
            a.insert(name.into(), v);
        }
    };
    let claim = |name: &str| claims.get(name).cloned();
    put("scope", scope);
    put("username", claim("username").or_else(|| claim("sub")));
    for name in ["exp", "iat", "sub", "aud", "iss", "jti"] {
        put(name, claim(name));
    }
    put(
        "token_type",
        Some(claim("token_type").unwrap_or_else(|| "Bearer".into())),
    );
    put("client_id", claim("client_id").or_else(|| claim("cid")));
    put("uid", claim("uid"));
    for (name, value) in claims {
        if !NOT_PASSED_THROUGH.contains(&name.as_str()) && !a.contains_key(name) {
            a.insert(name.clone(), value.clone());
        }
    }
    a
}

/// `POST /v1/revoke` (RFC 7009): the token is revoked at this server whatever it is, and the
/// answer is 200 with an empty body, for unknown tokens too. The mock does not check that the
/// token was issued to the revoking client.
pub fn revoke(app: &App, id: &str, req: &Req) -> Reply {
    let token = match token_of(req) {
        Ok(t) => t,
        Err(e) => return e,
    };
    match app.revoke(id, token_hash(&token)) {
        Ok(()) => Reply::empty(200),
        Err(e) => server_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::handle;
    use crate::test_support::{test_app, test_keys};
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    const FORM: &str = "application/x-www-form-urlencoded";
    const DEMO: (&str, &str) = ("0oa-demo-client", "demo-secret");

    /// The test app plus an `org` server with the shared keys (no key generation).
    fn app() -> Arc<App> {
        let app = test_app();
        app.add_server("org", test_keys().to_vec());
        app
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    fn post_form(path: &str, body: &str, auth: Option<(&str, &str)>) -> Req {
        let mut req = Req::new("POST", path)
            .with_header("Content-Type", FORM)
            .with_body(body);
        if let Some((id, secret)) = auth {
            req = req.with_header("Authorization", &basic(id, secret));
        }
        req
    }

    fn form_token(token: &str) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish()
    }

    fn call(app: &Arc<App>, req: Req) -> Reply {
        handle(app, &req).wait()
    }

    fn introspect_at(app: &Arc<App>, server: &str, token: &str) -> Value {
        let path = format!("/oauth2/{server}/v1/introspect");
        let r = call(app, post_form(&path, &form_token(token), Some(DEMO)));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        r.body_json()
    }

    fn control(app: &Arc<App>, path: &str, body: Value) -> Value {
        let r = call(app, Req::new("POST", path).with_body(body.to_string()));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.body_json()
    }

    fn mint(app: &Arc<App>, body: Value) -> String {
        control(app, "/control/mint", body)["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn revoke_at(app: &Arc<App>, server: &str, token: &str) -> Reply {
        let path = format!("/oauth2/{server}/v1/revoke");
        call(app, post_form(&path, &form_token(token), Some(DEMO)))
    }

    #[test]
    fn minted_jwt_is_active_with_okta_shaped_answer() {
        let app = app();
        let token = mint(
            &app,
            json!({"claims": {"scp": ["orders:read", "admin"], "groups": ["g"]}}),
        );
        let claims = tokens::decode_unverified(&token).unwrap().1;
        let a = introspect_at(&app, "default", &token);
        let keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "active",
                "scope",
                "username",
                "exp",
                "iat",
                "sub",
                "aud",
                "iss",
                "jti",
                "token_type",
                "client_id",
                "uid",
                "groups"
            ]
        );
        assert_eq!(a["active"], true);
        assert_eq!(a["scope"], "orders:read admin");
        assert_eq!(a["username"], "alice@example.com");
        assert_eq!(a["sub"], "alice@example.com");
        assert_eq!(a["client_id"], "0oa-demo-client");
        assert_eq!(a["uid"], "00u-demo-user");
        assert_eq!(a["token_type"], "Bearer");
        assert_eq!(a["iss"], "http://idp.test/oauth2/default");
        assert_eq!(a["aud"], "api://default");
        assert_eq!((&a["exp"], &a["jti"]), (&claims["exp"], &claims["jti"]));
        assert_eq!(a["groups"], json!(["g"]));
    }

    #[test]
    fn inactive_tokens() {
        let app = app();
        let expired = mint(&app, json!({"lifetime_s": -1}));
        let forged = mint(&app, json!({"signing_key": "rogue"}));
        let unsigned = mint(&app, json!({"alg": "none"}));
        let hs256 = mint(&app, json!({"alg": "HS256"}));
        let other_iss = mint(&app, json!({"claims": {"iss": "http://elsewhere"}}));
        let expired_opaque = mint(&app, json!({"opaque": true, "lifetime_s": -5}));
        let good = mint(&app, json!({}));
        let mut tampered = good.clone();
        tampered.insert(tampered.len() - 5, 'A');
        for (what, token) in [
            ("expired", expired.as_str()),
            ("rogue key", &forged),
            ("alg none", &unsigned),
            ("HS256", &hs256),
            ("another issuer", &other_iss),
            ("expired opaque", &expired_opaque),
            ("tampered", &tampered),
            ("unknown opaque", &tokens::new_opaque()),
            ("garbage", "not a token"),
        ] {
            assert_eq!(
                introspect_at(&app, "default", token),
                json!({"active": false}),
                "{what}"
            );
        }
        // Another server's token is not this server's (different issuer, same keys here).
        assert_eq!(introspect_at(&app, "org", &good), json!({"active": false}));
        assert_eq!(introspect_at(&app, "default", &good)["active"], true);
    }

    #[test]
    fn revocation_makes_jwt_and_opaque_inactive() {
        let app = app();
        let jwt = mint(&app, json!({}));
        let opaque = mint(&app, json!({"server": "org", "opaque": true}));
        let other = mint(&app, json!({}));
        for (server, token) in [("default", &jwt), ("org", &opaque)] {
            assert_eq!(introspect_at(&app, server, token)["active"], true);
            let r = revoke_at(&app, server, token);
            assert_eq!((r.status, r.body.len()), (200, 0));
            assert_eq!(r.header("content-type"), None);
            assert_eq!(introspect_at(&app, server, token), json!({"active": false}));
        }
        assert_eq!(introspect_at(&app, "default", &other)["active"], true);
        // RFC 7009: unknown tokens are answered 200 too; the org server's own path works.
        let r = call(
            &app,
            post_form("/oauth2/v1/revoke", "token=nothing-known", Some(DEMO)),
        );
        assert_eq!((r.status, r.body.len()), (200, 0));
        // Revoking needs a client.
        for auth in [None, Some(("0oa-demo-client", "wrong"))] {
            let r = call(
                &app,
                post_form("/oauth2/default/v1/revoke", &form_token(&other), auth),
            );
            assert_eq!(r.status, 401);
            assert_eq!(r.body_json()["error"], "invalid_client");
        }
        assert_eq!(introspect_at(&app, "default", &other)["active"], true);
        let r = call(
            &app,
            post_form("/oauth2/default/v1/revoke", "token_type_hint=x", Some(DEMO)),
        );
        assert_eq!(r.body_json()["error"], "invalid_request");
    }

    #[test]
    fn client_authentication() {
        let app = app();
        let token = mint(&app, json!({}));
        let body = form_token(&token);
        let path = "/oauth2/default/v1/introspect";
        let status = |req: Req| {
            let r = call(&app, req);
            let error = r.body_json()["error"].as_str().map(str::to_string);
            (r.status, error)
        };
        let unauthorized = (401, Some("invalid_client".to_string()));
        for auth in [
            ("0oa-demo-client", "wrong"),
            ("0oa-nobody", "demo-secret"),
            ("0oa-demo-client", ""),
        ] {
            assert_eq!(status(post_form(path, &body, Some(auth))), unauthorized);
        }
        assert_eq!(status(post_form(path, &body, None)), unauthorized);
        let bad_basic = post_form(path, &body, None).with_header("Authorization", "Basic !!!");
        assert_eq!(status(bad_basic), unauthorized);
        let bearer =
            post_form(path, &body, None).with_header("Authorization", &format!("Bearer {token}"));
        assert_eq!(status(bearer), unauthorized);
        // The other client, by Basic; and form fields (client_secret_post), as Okta allows.
        let other = post_form(path, &body, Some(("0oa-other-client", "other-secret")));
        assert_eq!(status(other), (200, None));
        let in_form = format!("{body}&client_id=0oa-demo-client&client_secret=demo-secret");
        assert_eq!(status(post_form(path, &in_form, None)), (200, None));
        let wrong_in_form = format!("{body}&client_id=0oa-demo-client&client_secret=nope");
        assert_eq!(status(post_form(path, &wrong_in_form, None)), unauthorized);
        // Form-encoded before base64 (RFC 6749 section 2.3.1): `%2D` is `-`.
        let encoded = post_form(path, &body, Some(("0oa%2Ddemo%2Dclient", "demo%2Dsecret")));
        assert_eq!(status(encoded), (200, None));
    }

    #[test]
    fn malformed_requests_are_400() {
        let app = app();
        let path = "/oauth2/default/v1/introspect";
        for body in [
            "",
            "token=",
            "token=a&token=b",
            "token=%zz",
            "token=a&token_type_hint=x&token_type_hint=y",
        ] {
            let r = call(&app, post_form(path, body, Some(DEMO)));
            assert_eq!(r.status, 400, "{body}");
            assert_eq!(r.body_json()["error"], "invalid_request", "{body}");
        }
        let mut json_body = post_form(path, "token=a", Some(DEMO));
        json_body.headers[0].1 = "application/json".into();
        assert_eq!(call(&app, json_body).status, 400);
        let r = call(&app, Req::new("GET", path));
        assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
        // An unknown hint is ignored (RFC 7662 section 2.1).
        let token = mint(&app, json!({}));
        let body = format!("token={token}&token_type_hint=refresh_token");
        let r = call(&app, post_form(path, &body, Some(DEMO)));
        assert_eq!(r.body_json()["active"], true);
    }

    #[test]
    fn org_server_mints_opaque_tokens_at_its_token_endpoint() {
        let app = app();
        for path in ["/oauth2/v1/token", "/oauth2/org/v1/token"] {
            let r = call(
                &app,
                post_form(
                    path,
                    "grant_type=client_credentials&scope=orders:read+profile",
                    Some(("0oa-other-client", "other-secret")),
                ),
            );
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let body = r.body_json();
            let token = body["access_token"].as_str().unwrap();
            assert!(!token.contains('.') && token.len() >= 40, "{token}");
            assert_eq!(body["scope"], "orders:read profile");
            for introspect in ["/oauth2/v1/introspect", "/oauth2/org/v1/introspect"] {
                let r = call(&app, post_form(introspect, &form_token(token), Some(DEMO)));
                let a = r.body_json();
                assert_eq!(a["active"], true);
                assert_eq!(a["scope"], "orders:read profile");
                assert_eq!(a["client_id"], "0oa-other-client");
                assert_eq!(a["sub"], "0oa-other-client");
                assert_eq!(a["username"], "0oa-other-client");
                assert_eq!(a["iss"], "http://idp.test");
                assert_eq!(a["aud"], "http://idp.test");
                assert_eq!(
                    a["exp"].as_i64().unwrap() - a["iat"].as_i64().unwrap(),
                    3600
                );
                assert!(a.get("uid").is_none());
            }
            // The default server never minted it.
            assert_eq!(introspect_at(&app, "default", token)["active"], false);
        }
        // A custom server still mints JWTs.
        let r = call(
            &app,
            post_form(
                "/oauth2/default/v1/token",
                "grant_type=client_credentials&scope=profile",
                Some(DEMO),
            ),
        );
        assert_eq!(
            r.body_json()["access_token"]
                .as_str()
                .unwrap()
                .split('.')
                .count(),
            3
        );
        let doc = call(&app, Req::new("GET", "/.well-known/openid-configuration")).body_json();
        assert_eq!(doc["issuer"], "http://idp.test");
        assert_eq!(
            doc["introspection_endpoint"],
            "http://idp.test/oauth2/v1/introspect"
        );
        assert_eq!(
            doc["revocation_endpoint"],
            "http://idp.test/oauth2/v1/revoke"
        );
        assert_eq!(doc["jwks_uri"], "http://idp.test/oauth2/v1/keys");
        let keys = call(&app, Req::new("GET", "/oauth2/v1/keys")).body_json();
        assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn control_mint_opaque_with_claims_and_answer_overrides() {
        let app = app();
        let token = mint(
            &app,
            json!({
                "server": "org",
                "opaque": true,
                "lifetime_s": 120,
                "claims": {"sub": "bob", "scp": null, "scope": "a b", "uid": "00u-bob",
                           "username": "bob@example.com", "client_id": "0oa-x", "tier": "gold"},
            }),
        );
        assert!(!token.contains('.') && token.len() >= 40);
        let a = introspect_at(&app, "org", &token);
        assert_eq!(a["scope"], "a b");
        assert_eq!(
            (&a["sub"], &a["username"]),
            (&json!("bob"), &json!("bob@example.com"))
        );
        assert_eq!(
            (&a["uid"], &a["client_id"]),
            (&json!("00u-bob"), &json!("0oa-x"))
        );
        assert_eq!(a["tier"], "gold");
        assert_eq!(a["exp"].as_i64().unwrap() - a["iat"].as_i64().unwrap(), 120);
        assert!(a.get("ver").is_none() && a.get("scp").is_none());

        let faulty = mint(
            &app,
            json!({"opaque": true, "introspection_extra":
                   {"exp": "soon", "active": "true", "x-unknown": {"a": 1}, "iat": null}}),
        );
        let a = introspect_at(&app, "default", &faulty);
        assert_eq!(a["active"], "true");
        assert_eq!(a["exp"], "soon");
        assert_eq!(a["x-unknown"], json!({"a": 1}));
        assert!(a.get("iat").is_none());
        // Overrides work for JWTs too, and also apply once the token is inactive.
        let jwt = mint(&app, json!({"introspection_extra": {"exp": 1.5}}));
        assert_eq!(introspect_at(&app, "default", &jwt)["exp"], 1.5);
        assert_eq!(revoke_at(&app, "default", &jwt).status, 200);
        assert_eq!(
            introspect_at(&app, "default", &jwt),
            json!({"active": false, "exp": 1.5})
        );
        // mint-many makes distinct opaque tokens.
        let many = control(
            &app,
            "/control/mint-many",
            json!({"count": 3, "opaque": true}),
        );
        let many: Vec<&str> = many["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(many.len(), 3);
        assert!(many[0] != many[1] && many[1] != many[2]);
        for t in many {
            assert_eq!(introspect_at(&app, "default", t)["active"], true);
        }
        // Signing options make no sense for an opaque token.
        for body in [
            json!({"opaque": true, "alg": "RS256"}),
            json!({"opaque": true, "header": {}}),
            json!({"opaque": true, "signing_key": "rogue"}),
            json!({"opaque": "yes"}),
            json!({"introspection_extra": [1]}),
        ] {
            let r = call(
                &app,
                Req::new("POST", "/control/mint").with_body(body.to_string()),
            );
            assert_eq!(r.status, 400, "{body}");
        }
    }

    #[test]
    fn introspect_faults_are_separate_from_keys_faults() {
        let app = app();
        let token = mint(&app, json!({}));
        let path = "/oauth2/default/v1/introspect";
        let ask = || handle(&app, &post_form(path, &form_token(&token), Some(DEMO)));
        let set = |endpoint: &str, mode: &str| {
            control(
                &app,
                "/control/fault",
                json!({"endpoint": endpoint, "mode": mode, "delay_ms": 1}),
            )
        };
        assert_eq!(
            set("introspect", "500"),
            json!({"server": "default", "endpoint": "introspect", "mode": "500"})
        );
        assert_eq!(ask().wait().status, 500);
        let keys = call(&app, Req::new("GET", "/oauth2/default/v1/keys"));
        assert_eq!(keys.status, 200, "an introspect fault must not touch keys");

        set("introspect", "malformed");
        let r = ask().wait();
        assert_eq!(r.status, 200);
        assert!(serde_json::from_slice::<Value>(&r.body).is_err());

        set("introspect", "empty");
        assert_eq!(ask().wait().body_json(), json!({}));

        set("introspect", "active_not_bool");
        let a = ask().wait().body_json();
        assert_eq!(
            (&a["active"], &a["sub"]),
            (&json!("true"), &json!("alice@example.com"))
        );

        set("introspect", "oversize");
        let r = ask().wait();
        assert!(r.body.len() > 64 * 1024, "{}", r.body.len());
        let a = r.body_json();
        assert_eq!(a["active"], true, "the oversize answer is valid JSON");

        set("introspect", "drop");
        assert!(matches!(ask(), Outcome::Drop));

        assert_eq!(
            set("introspect", "slow"),
            json!({"server": "default", "endpoint": "introspect", "mode": "slow", "delay_ms": 1})
        );
        match ask() {
            Outcome::After(d, f) => {
                assert_eq!(d.as_millis(), 1);
                // Revoked during the delay: the late answer says so.
                assert_eq!(revoke_at(&app, "default", &token).status, 200);
                assert_eq!(f().body_json(), json!({"active": false}));
            }
            _ => panic!("slow fault answered immediately"),
        }

        // A keys fault leaves introspection alone, and a reset clears both.
        set("introspect", "none");
        set("keys", "500");
        assert_eq!(
            call(&app, Req::new("GET", "/oauth2/default/v1/keys")).status,
            500
        );
        assert_eq!(ask().wait().status, 200);
        set("introspect", "500");
        control(&app, "/control/reset", json!({}));
        assert_eq!(ask().wait().status, 200);
        assert_eq!(
            call(&app, Req::new("GET", "/oauth2/default/v1/keys")).status,
            200
        );
        // Introspect-only modes are refused for keys, unknown endpoints everywhere.
        for body in [
            json!({"mode": "oversize"}),
            json!({"endpoint": "keys", "mode": "active_not_bool"}),
            json!({"endpoint": "token", "mode": "500"}),
        ] {
            let r = call(
                &app,
                Req::new("POST", "/control/fault").with_body(body.to_string()),
            );
            assert_eq!(r.status, 400, "{body}");
        }
    }

    #[test]
    fn last_introspection_request_shape() {
        let app = app();
        let last = || call(&app, Req::new("GET", "/control/introspect-last")).body_json();
        assert_eq!(last(), Value::Null);
        let token = mint(&app, json!({"opaque": true}));
        let r = call(
            &app,
            post_form(
                "/oauth2/default/v1/introspect",
                &form_token(&token),
                Some(("0oa-other-client", "other-secret")),
            ),
        );
        assert_eq!(r.status, 200);
        let l = last();
        assert_eq!(
            l,
            json!({
                "server": "default",
                "method": "POST",
                "path": "/oauth2/default/v1/introspect",
                "has_query": false,
                "content_type": FORM,
                "authorization_scheme": "Basic",
                "auth": "basic",
                "client_id": "0oa-other-client",
                "secret_ok": true,
                "form_keys": ["token", "token_type_hint"],
                "form_error": null,
                "token_type_hint": "access_token",
                "token_sha256": hex(&token_hash(&token)),
                "seq": 1,
            })
        );
        let text = l.to_string();
        assert!(!text.contains(&token) && !text.contains("other-secret"));

        // Refused requests are recorded too: a wrong secret, a GET, form credentials.
        call(
            &app,
            post_form(
                "/oauth2/v1/introspect?x=1",
                "token=abc",
                Some(("0oa-demo-client", "bad")),
            ),
        );
        let l = last();
        assert_eq!(
            (&l["server"], &l["seq"], &l["has_query"]),
            (&json!("org"), &json!(2), &json!(true))
        );
        assert_eq!(
            (&l["client_id"], &l["secret_ok"]),
            (&json!("0oa-demo-client"), &json!(false))
        );
        assert_eq!(l["token_type_hint"], Value::Null);
        assert_eq!(l["token_sha256"], hex(&token_hash("abc")));
        assert!(!l.to_string().contains("\"bad\""));

        call(&app, Req::new("GET", "/oauth2/default/v1/introspect"));
        let l = last();
        assert_eq!(
            (&l["method"], &l["auth"], &l["secret_ok"]),
            (&json!("GET"), &json!("none"), &json!(false))
        );
        assert_eq!(
            (&l["content_type"], &l["authorization_scheme"]),
            (&Value::Null, &Value::Null)
        );

        let body = "token=t&client_id=0oa-demo-client&client_secret=demo-secret";
        call(&app, post_form("/oauth2/default/v1/introspect", body, None));
        let l = last();
        assert_eq!(
            (&l["auth"], &l["secret_ok"]),
            (&json!("form"), &json!(true))
        );
        assert_eq!(
            l["form_keys"],
            json!(["token", "client_id", "client_secret"])
        );

        call(
            &app,
            post_form("/oauth2/default/v1/introspect", "token=%zz", Some(DEMO)),
        );
        assert!(last()["form_error"].is_string());

        control(&app, "/control/reset", json!({}));
        assert_eq!(last(), Value::Null);
        // Introspect and revoke are counted like every endpoint, at the path used.
        for path in [
            "/oauth2/default/v1/introspect",
            "/oauth2/v1/introspect",
            "/oauth2/v1/revoke",
        ] {
            let req = post_form(path, &form_token(&token), Some(DEMO));
            assert_eq!(crate::routes::serve(&app, Ok(req)).wait().status, 200);
        }
        assert_eq!(app.counts.get("POST /oauth2/default/v1/introspect"), 1);
        assert_eq!(app.counts.get("POST /oauth2/v1/introspect"), 1);
        assert_eq!(app.counts.get("POST /oauth2/v1/revoke"), 1);
    }
}
