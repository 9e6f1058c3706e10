//! A public key in the forms the verifiers need, prepared once per key set: the raw material,
//! its SubjectPublicKeyInfo DER (for the host's BoringSSL) and Montgomery constants (for the
//! pure-Rust RSA path), so no request pays for encoding or preparation.

use std::sync::Arc;

use crate::core::crypto::der::{self, EcCurve};
use crate::core::crypto::rsa::RsaPublicKey;

/// Larger moduli only cost CPU; nobody issues access tokens with them.
pub const MAX_RSA_BITS: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        curve: EcCurve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

/// A prepared RSA key. It is derived from `PublicKey::material`, which equality already
/// compares, so it adds nothing to equality.
#[derive(Clone)]
pub struct PreparedRsa(pub Arc<RsaPublicKey>);

impl PartialEq for PreparedRsa {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for PreparedRsa {}

impl std::fmt::Debug for PreparedRsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedRsa({} bits)", self.0.bits())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub material: KeyMaterial,
    pub spki_der: Vec<u8>,
    pub rsa: Option<PreparedRsa>,
}

impl PublicKey {
    pub fn new(material: KeyMaterial) -> Result<PublicKey, String> {
        let spki_der = match &material {
            KeyMaterial::Rsa { n, e } => der::rsa_spki(n, e),
            KeyMaterial::Ec { curve, x, y } => {
                der::ec_spki(*curve, x, y).ok_or("EC point cannot be encoded")?
            }
            // Envoy's verify_signature cannot do Ed25519, so no DER is needed for it.
            KeyMaterial::Ed25519 { .. } => Vec::new(),
        };
        let rsa = match &material {
            KeyMaterial::Rsa { n, e } => Some(PreparedRsa(Arc::new(
                RsaPublicKey::new(n, e).ok_or("RSA key cannot be prepared for verification")?,
            ))),
            _ => None,
        };
        Ok(PublicKey {
            material,
            spki_der,
            rsa,
        })
    }
}
