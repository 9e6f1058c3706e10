//! Signature checks through Envoy's `verify_signature` foreign function (BoringSSL), with the
//! pure-Rust path for what BoringSSL's default padding cannot do here (PSS) and for EdDSA.

use crate::core::crypto::alg::Alg;
use crate::core::crypto::der;
use crate::core::crypto::foreign_wire as foreign_proto;
use crate::core::crypto::known_answer as host_probe;
use crate::core::crypto::public_key::{KeyMaterial, PublicKey};
use crate::core::crypto::pure::PureVerifier;
use crate::core::crypto::verifier::{SignatureVerifier, Signed};

use super::host;

const FUNCTION: &str = "verify_signature";

fn call(args: &[u8]) -> Option<Vec<u8>> {
    host::call_foreign_function(FUNCTION, args).ok().flatten()
}

/// Whether this host offers a `verify_signature` that passes the known-answer test.
pub fn host_available() -> bool {
    host_probe::passes(call)
}

pub struct HostVerifier;

impl SignatureVerifier for HostVerifier {
    fn verify(&self, key: &PublicKey, token: &Signed<'_>) -> bool {
        let signature = match (&key.material, token.alg) {
            (KeyMaterial::Rsa { .. }, Alg::RS256 | Alg::RS384 | Alg::RS512) => {
                std::borrow::Cow::Borrowed(token.signature)
            }
            (KeyMaterial::Ec { curve, .. }, Alg::ES256 | Alg::ES384) => {
                let Some(der_sig) = der::ecdsa_sig_jose_to_der(token.signature, *curve) else {
                    return false;
                };
                std::borrow::Cow::Owned(der_sig)
            }
            _ => return PureVerifier.verify(key, token),
        };
        let args = foreign_proto::encode_args(
            token.alg.hash().envoy_name(),
            &key.spki_der,
            &signature,
            token.signing_input,
        );
        call(&args)
            .and_then(|out| foreign_proto::decode_result(&out))
            .unwrap_or(false)
    }

    fn name(&self) -> &'static str {
        "host"
    }
}
