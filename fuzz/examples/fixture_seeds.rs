//! Writes seeds signed with the fixture keys (fuzz/README.md): valid tokens for `token`, the
//! fixture JWKS for `jwks`, the fixture configuration for `config`, a valid proof for `dpop`.
//! `cargo run --release --example fixture_seeds` from fuzz/.

use okta_jwt_filter_fuzz::{fixture, good_claims, SignAlg, NOW, ORIGIN};
use serde_json::json;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = format!("seeds/{target}");
    std::fs::create_dir_all(&dir).expect("seed directory");
    std::fs::write(format!("{dir}/{name}"), bytes).expect("seed file");
}

fn main() {
    let f = fixture();
    for alg in [
        SignAlg::RS256,
        SignAlg::PS256,
        SignAlg::ES256,
        SignAlg::EdDSA,
    ] {
        let t = f.jws(
            alg,
            json!({"kid": alg.kid(), "typ": "at+jwt"}),
            &good_claims(),
        );
        write("token", &format!("fixture-{}", alg.name()), t.as_bytes());
    }
    let bound = {
        let mut c = good_claims();
        c["cnf"] = json!({"jkt": f.dpop_jkt});
        f.jws(SignAlg::EdDSA, json!({"kid": "ed1"}), &c)
    };
    write("token", "fixture-dpop-bound", bound.as_bytes());
    write("jwks", "fixture", f.jwks.to_string().as_bytes());
    write("config", "fixture", f.config_json.as_bytes());
    let proof = f.proof(&json!({"htm": "POST", "htu": format!("{ORIGIN}/orders/7"),
                                "iat": NOW, "jti": "seed", "ath": "x"}));
    write("dpop", "fixture-proof", format!("R{proof}").as_bytes());
}
