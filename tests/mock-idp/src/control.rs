//! `/control/*`: test-only endpoints to mint tokens, rotate keys, inject faults and see the
//! last introspection request.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::faults::{Endpoint, Fault};
use crate::keys::SigningKey;
use crate::lock;
use crate::message::{Reply, Req};
use crate::routes::{audience, not_found};
use crate::state::{App, Issued, DEFAULT_SERVER};
use crate::tokens::{self, Alg, OktaClaims};

type Handler = fn(&App, &Req) -> Result<Reply, Reply>;

pub fn handle(app: &Arc<App>, req: &Req) -> Reply {
    let (method, run): (&str, Handler) = match req.path() {
        "/control/mint" => ("POST", mint),
        "/control/mint-many" => ("POST", mint_many),
        "/control/rotate" => ("POST", rotate),
        "/control/fault" => ("POST", fault),
        "/control/max-age" => ("POST", max_age),
        "/control/reset" => ("POST", reset),
        "/control/counts" => ("GET", counts),
        "/control/introspect-last" => ("GET", introspect_last),
        _ => return not_found(req),
    };
    if req.method != method {
        return Reply::error(
            405,
            "method_not_allowed",
            format!("{} {} is not supported", req.method, req.path()),
        )
        .with_header("Allow", method);
    }
    run(app, req).unwrap_or_else(|e| e)
}

fn bad(description: impl Into<String>) -> Reply {
    Reply::error(400, "invalid_request", description)
}

/// Unknown fields are rejected so that a typo in a test fails loudly instead of being ignored.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| bad(format!("bad JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintReq {
    server: Option<String>,
    claims: Option<Map<String, Value>>,
    header: Option<Map<String, Value>>,
    alg: Option<String>,
    lifetime_s: Option<i64>,
    signing_key: Option<String>,
    /// An opaque token (random, remembered by the server) instead of a JWT.
    opaque: Option<bool>,
    /// Merged into the token's introspection answers (`null` removes a member).
    introspection_extra: Option<Map<String, Value>>,
}

fn mint(app: &App, req: &Req) -> Result<Reply, Reply> {
    let token = Minter::new(app, parse(&req.body)?)?.token()?;
    Ok(Reply::json(200, &json!({ "token": token })))
}

/// The most tokens one `/control/mint-many` call makes (a benchmark's pool is a few calls).
pub const MAX_MINT_MANY: u64 = 50_000;

/// `/control/mint` fields plus `count`; every token has its own `jti` (and the `iat` of its
/// minting), so no two are alike unless the claims override `jti`.
fn mint_many(app: &App, req: &Req) -> Result<Reply, Reply> {
    let mut body: Map<String, Value> = parse(&req.body)?;
    let count = body
        .remove("count")
        .and_then(|c| c.as_u64())
        .filter(|c| (1..=MAX_MINT_MANY).contains(c))
        .ok_or_else(|| {
            bad(format!(
                "count must be an integer from 1 to {MAX_MINT_MANY}"
            ))
        })?;
    let m: MintReq = serde_json::from_value(Value::Object(body))
        .map_err(|e| bad(format!("bad JSON body: {e}")))?;
    let minter = &Minter::new(app, m)?;
    // RSA signing is the whole cost: spread it over the cores, keeping the order.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = (count as usize).div_ceil(threads);
    let tokens = std::thread::scope(|scope| {
        let jobs: Vec<_> = (0..count as usize)
            .step_by(chunk)
            .map(|start| {
                let n = chunk.min(count as usize - start);
                scope.spawn(move || (0..n).map(|_| minter.token()).collect::<Vec<_>>())
            })
            .collect();
        jobs.into_iter()
            .flat_map(|job| job.join().unwrap_or_else(|_| vec![Err(signing_panicked())]))
            .collect::<Result<Vec<String>, Reply>>()
    })?;
    Ok(Reply::json(200, &json!({ "tokens": tokens })))
}

fn signing_panicked() -> Reply {
    Reply::error(500, "server_error", "a signing thread panicked")
}

/// A validated mint request: server, algorithm and key resolved once, tokens made on demand.
struct Minter<'a> {
    app: &'a App,
    server: String,
    opaque: bool,
    extra: Map<String, Value>,
    issuer: String,
    audience: String,
    lifetime_s: i64,
    alg: Alg,
    key: Arc<SigningKey>,
    kid: String,
    claims: Map<String, Value>,
    header: Map<String, Value>,
}

impl<'a> Minter<'a> {
    fn new(app: &'a App, m: MintReq) -> Result<Minter<'a>, Reply> {
        let id = m.server.as_deref().unwrap_or(DEFAULT_SERVER);
        let opaque = m.opaque.unwrap_or(false);
        if opaque && (m.alg.is_some() || m.header.is_some() || m.signing_key.is_some()) {
            return Err(bad(
                "alg, header and signing_key do not apply to opaque tokens",
            ));
        }
        let alg_name = m.alg.as_deref().unwrap_or("RS256");
        let alg = Alg::parse(alg_name).ok_or_else(|| {
            bad(format!(
                "unknown alg `{alg_name}` (RS256, RS384, RS512, PS256, PS384, PS512, none, HS256)"
            ))
        })?;
        let server = app.server(id).map_err(bad)?;
        let published = lock(&server).keys.clone();
        let current = published
            .first()
            .cloned()
            .ok_or_else(|| Reply::error(500, "server_error", "server has no keys"))?;
        let (key, kid) = match m.signing_key.as_deref().unwrap_or("current") {
            "current" => (current.clone(), current.kid().to_string()),
            "rogue" => (
                app.rogue_key(id)
                    .map_err(|e| Reply::error(500, "server_error", e))?,
                current.kid().to_string(),
            ),
            wanted => {
                let key = published
                    .iter()
                    .find(|k| k.kid() == wanted)
                    .cloned()
                    .ok_or_else(|| {
                        bad(format!(
                            "signing_key `{wanted}` is neither current, rogue nor a published kid"
                        ))
                    })?;
                let kid = key.kid().to_string();
                (key, kid)
            }
        };
        Ok(Minter {
            app,
            server: id.to_string(),
            opaque,
            extra: m.introspection_extra.unwrap_or_default(),
            issuer: app.issuer(id),
            audience: audience(app, id),
            lifetime_s: m.lifetime_s.unwrap_or(app.config.lifetime_s),
            alg,
            key,
            kid,
            claims: m.claims.unwrap_or_default(),
            header: m.header.unwrap_or_default(),
        })
    }

    fn token(&self) -> Result<String, Reply> {
        let mut claims = OktaClaims {
            issuer: &self.issuer,
            audience: &self.audience,
            lifetime_s: self.lifetime_s,
            cid: "0oa-demo-client",
            uid: Some("00u-demo-user"),
            sub: "alice@example.com",
            scp: &["orders:read".to_string()],
        }
        .to_map();
        tokens::merge(&mut claims, self.claims.clone());
        let server_error = |e| Reply::error(500, "server_error", e);
        let extra = self.extra.clone();
        if self.opaque {
            let token = tokens::new_opaque();
            let issued = Issued {
                claims: Some(claims),
                extra,
            };
            self.app
                .remember(&self.server, tokens::token_hash(&token), issued)
                .map_err(server_error)?;
            return Ok(token);
        }

        let mut header = Map::new();
        header.insert("kid".into(), self.kid.clone().into());
        header.insert("alg".into(), self.alg.name().into());
        tokens::merge(&mut header, self.header.clone());

        let token = tokens::encode(&header, &claims, self.alg, &self.key).map_err(server_error)?;
        if !extra.is_empty() {
            let issued = Issued {
                claims: None,
                extra,
            };
            self.app
                .remember(&self.server, tokens::token_hash(&token), issued)
                .map_err(server_error)?;
        }
        Ok(token)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerReq {
    server: Option<String>,
}

fn rotate(app: &App, req: &Req) -> Result<Reply, Reply> {
    let r: ServerReq = parse(&req.body)?;
    let id = r.server.as_deref().unwrap_or(DEFAULT_SERVER);
    app.server(id).map_err(bad)?;
    let kids = app
        .rotate(id)
        .map_err(|e| Reply::error(500, "server_error", e))?;
    eprintln!("mock-idp: rotated `{id}`, kids now {kids:?}");
    Ok(Reply::json(200, &json!({ "kids": kids })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultReq {
    server: Option<String>,
    /// `keys` (the default) or `introspect`.
    endpoint: Option<String>,
    #[serde(default)]
    mode: Value,
    delay_ms: Option<u64>,
}

fn fault(app: &App, req: &Req) -> Result<Reply, Reply> {
    let f: FaultReq = parse(&req.body)?;
    let id = f.server.as_deref().unwrap_or(DEFAULT_SERVER);
    let endpoint = Endpoint::parse(f.endpoint.as_deref()).map_err(bad)?;
    let fault = Fault::parse_for(endpoint, &f.mode, f.delay_ms).map_err(bad)?;
    app.set_fault(id, endpoint, fault).map_err(bad)?;
    let mut body = json!({"server": id, "endpoint": endpoint.name(), "mode": fault.name()});
    if let Fault::Slow { delay_ms } = fault {
        body["delay_ms"] = delay_ms.into();
    }
    Ok(Reply::json(200, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaxAgeReq {
    /// Accepted for uniformity; max-age is global.
    #[allow(dead_code)]
    server: Option<String>,
    max_age: u64,
}

fn max_age(app: &App, req: &Req) -> Result<Reply, Reply> {
    let m: MaxAgeReq = parse(&req.body)?;
    app.set_max_age(m.max_age);
    Ok(Reply::json(200, &json!({ "max_age": m.max_age })))
}

fn reset(app: &App, _req: &Req) -> Result<Reply, Reply> {
    app.reset();
    Ok(Reply::json(200, &json!({ "ok": true })))
}

fn counts(app: &App, _req: &Req) -> Result<Reply, Reply> {
    Ok(Reply::json(200, &json!(app.counts.snapshot())))
}

/// The shape of the last introspection request (see `introspect::record`), or `null`.
fn introspect_last(app: &App, _req: &Req) -> Result<Reply, Reply> {
    let last = lock(&app.introspections).1.clone();
    Ok(Reply::json(200, &last.unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Outcome;
    use crate::routes::handle;
    use crate::test_support::{decode_part, test_app, test_keys, verify_rsa};
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    fn post(app: &Arc<App>, path: &str, body: Value) -> Reply {
        handle(app, &Req::new("POST", path).with_body(body.to_string())).wait()
    }

    fn mint_ok(app: &Arc<App>, body: Value) -> String {
        let r = post(app, "/control/mint", body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.body_json()["token"].as_str().unwrap().to_string()
    }

    fn published(app: &Arc<App>) -> Vec<Value> {
        let r = handle(app, &Req::new("GET", "/oauth2/default/v1/keys")).wait();
        assert_eq!(r.status, 200);
        r.body_json()["keys"].as_array().unwrap().clone()
    }

    fn parts(token: &str) -> (Value, Value) {
        let p: Vec<&str> = token.split('.').collect();
        assert_eq!(p.len(), 3);
        (decode_part(p[0]), decode_part(p[1]))
    }

    #[test]
    fn minted_tokens_verify_against_published_jwk() {
        let app = test_app();
        let jwks = published(&app);
        for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
            let token = mint_ok(&app, json!({"alg": alg}));
            let (header, _) = parts(&token);
            assert_eq!(header, json!({"kid": jwks[0]["kid"], "alg": alg}));
            assert!(verify_rsa(&token, &jwks[0], alg), "{alg} does not verify");
            assert!(
                !verify_rsa(&token, &jwks[1], alg),
                "{alg} verifies with the wrong key"
            );
        }
    }

    #[test]
    fn default_claims_are_okta_shaped() {
        let app = test_app();
        let (_, c) = parts(&mint_ok(&app, json!({})));
        assert_eq!(c["ver"], 1);
        assert!(c["jti"].as_str().unwrap().starts_with("AT."));
        assert_eq!(c["iss"], "http://idp.test/oauth2/default");
        assert_eq!(c["aud"], "api://default");
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            3600
        );
        assert_eq!(c["cid"], "0oa-demo-client");
        assert_eq!(c["uid"], "00u-demo-user");
        assert_eq!(c["sub"], "alice@example.com");
        assert_eq!(c["scp"], json!(["orders:read"]));
    }

    #[test]
    fn claim_and_header_overrides_and_null_removal() {
        let app = test_app();
        let token = mint_ok(
            &app,
            json!({
                "claims": {"uid": null, "scp": null, "aud": "api://other", "groups": ["a"]},
                "header": {"kid": null, "jku": "http://evil/jwks", "crit": ["x"]},
                "lifetime_s": -60,
            }),
        );
        let (h, c) = parts(&token);
        assert!(c.get("uid").is_none());
        assert!(c.get("scp").is_none());
        assert_eq!(c["aud"], "api://other");
        assert_eq!(c["groups"], json!(["a"]));
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), -60);
        assert_eq!(
            h,
            json!({"alg": "RS256", "jku": "http://evil/jwks", "crit": ["x"]})
        );
        // The header override happens after signing-alg selection: a lying header is kept.
        let lying = mint_ok(&app, json!({"alg": "none", "header": {"alg": "RS256"}}));
        assert_eq!(parts(&lying).0["alg"], "RS256");
        assert!(lying.ends_with('.'));
    }

    #[test]
    fn signing_key_selection() {
        let app = test_app();
        let jwks = published(&app);
        let old_kid = jwks[1]["kid"].as_str().unwrap();
        let old = mint_ok(&app, json!({"signing_key": old_kid}));
        assert_eq!(parts(&old).0["kid"], old_kid);
        assert!(verify_rsa(&old, &jwks[1], "RS256"));

        let rogue = mint_ok(&app, json!({"signing_key": "rogue"}));
        assert_eq!(parts(&rogue).0["kid"], jwks[0]["kid"]);
        assert!(!jwks.iter().any(|k| verify_rsa(&rogue, k, "RS256")));
        // The same rogue key is reused.
        let again = mint_ok(&app, json!({"signing_key": "rogue", "alg": "HS256"}));
        let rogue_pem = app.rogue_key("default").unwrap().public_spki_pem();
        assert!(hmac_ok(&again, &rogue_pem));

        let r = post(&app, "/control/mint", json!({"signing_key": "nope"}));
        assert_eq!(r.status, 400);
    }

    fn hmac_ok(token: &str, secret: &str) -> bool {
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        mac.verify_slice(&tokens::decode_unverified(token).unwrap().2)
            .is_ok()
            && !sig.is_empty()
    }

    #[test]
    fn hs256_is_keyed_with_the_public_pem() {
        let app = test_app();
        let token = mint_ok(&app, json!({"alg": "HS256"}));
        assert_eq!(parts(&token).0["alg"], "HS256");
        assert!(hmac_ok(&token, &test_keys()[0].public_spki_pem()));
        assert!(!hmac_ok(&token, &test_keys()[1].public_spki_pem()));
    }

    #[test]
    fn bad_control_input_gives_400_not_panic() {
        let app = test_app();
        for body in [
            "{not json",
            r#"{"alg": "ES256"}"#,
            r#"{"alg": 5}"#,
            r#"{"claims": [1]}"#,
            r#"{"lifetime": 5}"#,
            r#"{"server": "../x"}"#,
        ] {
            let r = handle(&app, &Req::new("POST", "/control/mint").with_body(body)).wait();
            assert_eq!(r.status, 400, "{body}");
            assert_eq!(r.body_json()["error"], "invalid_request");
        }
        assert_eq!(
            post(&app, "/control/fault", json!({"mode": "weird"})).status,
            400
        );
        assert_eq!(post(&app, "/control/fault", json!({})).status, 400);
        assert_eq!(
            post(&app, "/control/max-age", json!({"max_age": -1})).status,
            400
        );
        assert_eq!(post(&app, "/control/nope", json!({})).status, 404);
        assert_eq!(
            handle(&app, &Req::new("GET", "/control/mint"))
                .wait()
                .status,
            405
        );
    }

    #[test]
    fn mint_many_makes_distinct_tokens_like_mint() {
        let app = test_app();
        let jwks = published(&app);
        let r = post(
            &app,
            "/control/mint-many",
            json!({"count": 5, "claims": {"scp": ["a", "b"]}, "lifetime_s": 60}),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let tokens: Vec<String> = r.body_json()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        assert_eq!(tokens.len(), 5);
        let jtis: std::collections::HashSet<String> = tokens
            .iter()
            .map(|t| parts(t).1["jti"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(jtis.len(), 5, "a jti repeats: {jtis:?}");
        for token in &tokens {
            assert!(verify_rsa(token, &jwks[0], "RS256"));
            let (h, c) = parts(token);
            assert_eq!(h, json!({"kid": jwks[0]["kid"], "alg": "RS256"}));
            assert_eq!(c["scp"], json!(["a", "b"]));
            assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 60);
        }

        let r = post(
            &app,
            "/control/mint-many",
            json!({"count": 3, "signing_key": "rogue"}),
        );
        let rogue = r.body_json()["tokens"].as_array().unwrap().clone();
        assert_eq!(rogue.len(), 3);
        for token in rogue {
            let token = token.as_str().unwrap();
            assert_eq!(parts(token).0["kid"], jwks[0]["kid"]);
            assert!(!jwks.iter().any(|k| verify_rsa(token, k, "RS256")));
        }
    }

    #[test]
    fn mint_many_count_is_bounded_and_fields_checked() {
        let app = test_app();
        for body in [
            json!({}),
            json!({"count": 0}),
            json!({"count": -1}),
            json!({"count": 2.5}),
            json!({"count": "3"}),
            json!({"count": MAX_MINT_MANY + 1}),
            json!({"count": 1, "alg": "ES256"}),
            json!({"count": 1, "signing_key": "nope"}),
            json!({"count": 1, "counts": 2}),
        ] {
            let r = post(&app, "/control/mint-many", body.clone());
            assert_eq!(r.status, 400, "{body}");
            assert_eq!(r.body_json()["error"], "invalid_request", "{body}");
        }
        let r = handle(&app, &Req::new("GET", "/control/mint-many")).wait();
        assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    }

    #[test]
    fn faults_change_only_keys_answers() {
        let app = test_app();
        let keys = || handle(&app, &Req::new("GET", "/oauth2/default/v1/keys"));
        let set = |mode: Value| {
            let r = post(&app, "/control/fault", json!({"mode": mode, "delay_ms": 1}));
            assert_eq!(r.status, 200);
            r.body_json()
        };
        set(json!("500"));
        assert_eq!(keys().wait().status, 500);
        assert_eq!(
            handle(
                &app,
                &Req::new("GET", "/oauth2/default/.well-known/openid-configuration")
            )
            .wait()
            .status,
            200
        );
        set(json!("malformed"));
        let r = keys().wait();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{\"keys\": ["[..]));
        set(json!("empty"));
        assert_eq!(keys().wait().body_json(), json!({"keys": []}));
        assert_eq!(
            set(json!("slow")),
            json!({"server": "default", "endpoint": "keys", "mode": "slow", "delay_ms": 1})
        );
        match keys() {
            Outcome::After(d, f) => {
                assert_eq!(d.as_millis(), 1);
                assert_eq!(f().body_json()["keys"].as_array().unwrap().len(), 2);
            }
            _ => panic!("slow fault answered immediately"),
        }
        set(json!("drop"));
        assert!(matches!(keys(), Outcome::Drop));
        assert_eq!(post(&app, "/control/reset", json!({})).status, 200);
        assert!(matches!(keys(), Outcome::Now(r) if r.status == 200));
    }

    #[test]
    fn max_age_and_rotate_endpoints() {
        let app = test_app();
        let r = post(&app, "/control/max-age", json!({"max_age": 7}));
        assert_eq!(r.body_json(), json!({"max_age": 7}));
        let keys = handle(&app, &Req::new("GET", "/oauth2/default/v1/keys")).wait();
        assert_eq!(keys.header("cache-control"), Some("max-age=7"));

        let before: Vec<Value> = published(&app).iter().map(|k| k["kid"].clone()).collect();
        let r = handle(&app, &Req::new("POST", "/control/rotate")).wait();
        let kids = r.body_json()["kids"].as_array().unwrap().clone();
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[1], before[0]);
        assert!(!before.contains(&kids[0]));
        let after: Vec<Value> = published(&app).iter().map(|k| k["kid"].clone()).collect();
        assert_eq!(after, kids);
    }
}
