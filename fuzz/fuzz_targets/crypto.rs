//! DER and signature conversions (crypto/der.rs), the host's verify_signature wire format
//! (foreign_wire.rs) and the Montgomery RSA verifier (rsa.rs), against the `rsa` and `p256`
//! crates.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use okta_jwt_filter::core::crypto::alg::Hash;
use okta_jwt_filter::core::crypto::der::{self, EcCurve};
use okta_jwt_filter::core::crypto::foreign_wire;
use okta_jwt_filter::core::crypto::rsa::RsaPublicKey;
use okta_jwt_filter_fuzz::{fixture, SignAlg};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    sig: &'a [u8],
    n: &'a [u8],
    e: &'a [u8],
    message: &'a [u8],
    hash: u8,
    wire: &'a [u8],
    /// Sign `message` with the fixture key, then flip this byte of the signature (if any).
    sign: Option<Option<(u16, u8)>>,
}

fn hash_of(b: u8) -> Hash {
    match b % 3 {
        0 => Hash::Sha256,
        1 => Hash::Sha384,
        _ => Hash::Sha512,
    }
}

/// The `rsa` crate's PKCS#1 v1.5 verdict.
fn reference(key: &rsa::RsaPublicKey, hash: Hash, message: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig) else {
        return false;
    };
    let key = key.clone();
    match hash {
        Hash::Sha256 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key).verify(message, &sig),
        Hash::Sha384 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(key).verify(message, &sig),
        Hash::Sha512 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(key).verify(message, &sig),
    }
    .is_ok()
}

fuzz_target!(|input: Input<'_>| {
    // JOSE r||s to DER agrees with p256 wherever p256 accepts the scalars.
    if let Some(der) = der::ecdsa_sig_jose_to_der(input.sig, EcCurve::P256) {
        assert_eq!(input.sig.len(), 64);
        if let Ok(sig) = p256::ecdsa::Signature::from_slice(input.sig) {
            assert_eq!(der, sig.to_der().as_bytes());
        }
    } else if let Ok(sig) = p256::ecdsa::Signature::from_slice(input.sig) {
        panic!("a signature p256 reads was refused: {sig:?}");
    }
    let _ = der::ecdsa_sig_jose_to_der(input.sig, EcCurve::P384);

    // SubjectPublicKeyInfo: the `rsa` crate reads back n and e.
    let spki = der::rsa_spki(input.n, input.e);
    if let Ok(key) = rsa::RsaPublicKey::from_public_key_der(&spki) {
        assert_eq!(key.n(), &rsa::BigUint::from_bytes_be(input.n));
        assert_eq!(key.e(), &rsa::BigUint::from_bytes_be(input.e));
    }
    if input.n.len() == 32 && input.e.len() == 32 {
        let spki = der::ec_spki(EcCurve::P256, input.n, input.e).expect("right lengths encode");
        assert_eq!(spki.first(), Some(&0x30));
    }

    // The wire format: arguments are length-delimited fields; results decode without panic,
    // and an encoded message's fields all skip cleanly (result false: field 1 is a string).
    let args = foreign_wire::encode_args("sha256", input.n, input.sig, input.message);
    assert_eq!(foreign_wire::decode_result(&args), Some(false));
    let _ = foreign_wire::decode_result(input.wire);

    // The Montgomery verifier agrees with the `rsa` crate on any key and signature.
    let hash = hash_of(input.hash);
    if let Some(ours) = RsaPublicKey::new(input.n, input.e) {
        let n = rsa::BigUint::from_bytes_be(input.n);
        let e = rsa::BigUint::from_bytes_be(input.e);
        if let Ok(key) = rsa::RsaPublicKey::new_with_max_size(n, e, 8192) {
            assert_eq!(
                ours.verify_pkcs1v15(hash, input.message, input.sig),
                reference(&key, hash, input.message, input.sig)
            );
        }
    }
    // And on real signatures of the fixture key, intact or with one byte changed.
    if let Some(flip) = input.sign {
        let f = fixture();
        let n = f.rsa.n().to_bytes_be();
        let e = f.rsa.e().to_bytes_be();
        let ours = RsaPublicKey::new(&n, &e).expect("fixture key prepares");
        let mut sig = f.sign(SignAlg::RS256, input.message);
        if let Some((at, x)) = flip {
            let at = usize::from(at) % sig.len();
            sig[at] ^= x;
        }
        let key = f.rsa.to_public_key();
        let want = reference(&key, Hash::Sha256, input.message, &sig);
        assert_eq!(
            ours.verify_pkcs1v15(Hash::Sha256, input.message, &sig),
            want
        );
        assert_eq!(want, flip.is_none_or(|(_, x)| x == 0));
    }
});
