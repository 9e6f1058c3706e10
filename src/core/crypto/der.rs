//! Minimal DER encoders. Envoy's crypto API imports public keys as DER SubjectPublicKeyInfo
//! and verifies ECDSA signatures in DER, while JWKs and JWS carry raw big-endian numbers, so
//! these bridge the two without pulling an ASN.1 crate into the Wasm module.

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// 1.2.840.113549.1.1.1
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// 1.2.840.10045.2.1
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7
const OID_PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// 1.3.132.0.34
const OID_SECP384R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// The NIST curves JOSE uses for ES256 and ES384.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcCurve {
    P256,
    P384,
}

impl EcCurve {
    /// Bytes in one field element: the length of JWK `x`/`y` and of each half of a JOSE
    /// signature (RFC 7518 §3.4, §6.2.1.2).
    #[must_use]
    pub fn coordinate_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
        }
    }

    fn oid(self) -> &'static [u8] {
        match self {
            EcCurve::P256 => OID_PRIME256V1,
            EcCurve::P384 => OID_SECP384R1,
        }
    }
}

/// SubjectPublicKeyInfo for an RSA key from its JWK `n` and `e` (unsigned big-endian).
#[must_use]
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[&tlv(TAG_OID, OID_RSA_ENCRYPTION), &tlv(TAG_NULL, &[])]);
    let rsa_public_key = sequence(&[&integer(n), &integer(e)]);
    sequence(&[&algorithm, &bit_string(&rsa_public_key)])
}

/// SubjectPublicKeyInfo for an uncompressed EC point. `None` unless `x` and `y` are exactly
/// [`EcCurve::coordinate_len`] bytes, as RFC 7518 §6.2.1.2 requires of a JWK.
#[must_use]
pub fn ec_spki(curve: EcCurve, x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    let len = curve.coordinate_len();
    if x.len() != len || y.len() != len {
        return None;
    }
    let algorithm = sequence(&[&tlv(TAG_OID, OID_EC_PUBLIC_KEY), &tlv(TAG_OID, curve.oid())]);
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04); // SEC 1 uncompressed point
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    Some(sequence(&[&algorithm, &bit_string(&point)]))
}

/// JOSE ECDSA signature (`r || s`, each exactly `coordinate_len` bytes) to the DER
/// `ECDSA-Sig-Value` verifiers expect. `None` on a wrong length or a zero `r` or `s`, which
/// no valid signature has.
#[must_use]
pub fn ecdsa_sig_jose_to_der(sig: &[u8], curve: EcCurve) -> Option<Vec<u8>> {
    let len = curve.coordinate_len();
    if sig.len() != 2 * len {
        return None;
    }
    let (r, s) = sig.split_at_checked(len)?;
    if is_zero(r) || is_zero(s) {
        return None;
    }
    Some(sequence(&[&integer(r), &integer(s)]))
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Minimal DER INTEGER for an unsigned big-endian number: leading zeros stripped, one 0x00
/// added when the high bit is set so it is not read as negative.
fn integer(unsigned: &[u8]) -> Vec<u8> {
    let mut digits = unsigned;
    while let [0, rest @ ..] = digits {
        digits = rest;
    }
    let mut content = Vec::with_capacity(digits.len() + 1);
    match digits.first() {
        None => content.push(0),
        Some(&first) if first & 0x80 != 0 => content.push(0),
        Some(_) => {}
    }
    content.extend_from_slice(digits);
    tlv(TAG_INTEGER, &content)
}

/// BIT STRING with no unused bits.
fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0);
    content.extend_from_slice(bytes);
    tlv(TAG_BIT_STRING, &content)
}

fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &parts.concat())
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_length(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// DER definite length: short form below 128, else 0x80|n followed by n big-endian bytes.
fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let be = len.to_be_bytes();
    let mut digits: &[u8] = &be;
    while let [0, rest @ ..] = digits {
        digits = rest;
    }
    out.push(0x80 | digits.len() as u8);
    out.extend_from_slice(digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(s.len() % 2, 0, "odd hex length");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    // ---- RSA vectors, generated with OpenSSL 3.0.19:
    //   openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out k.pem
    //   openssl pkey -in k.pem -noout -text            (n, e)
    //   openssl pkey -in k.pem -pubout -outform DER | xxd -p   (SPKI)

    const RSA2048_N: &str = "d1ec27a04b09f2030ca2ebe1cd70dd1bce82535cc0639a1693162c5c73727e8d\
        96bd826e9da30fb5eac7f9daded9161fbca6849b96daf565bd310c47ee0e6f2e0054b1fe7ff5c297a24a4134\
        c33b2d38a9c48f48b4a4b3b70d44202f83d23c5dda9712d879eb8b4266836e32be74059169ce245b49f543a5\
        e75f0eea04aa22dbcd4c98b358c38a91836f86175eb8ad1dfa9bd2f35913d332b9136908319773bff4c761b5\
        7e4544702d1f7c27fba62a621518fe79caf79c7e179962adab36f4986c48578a989d634e5e242e3fe82873c7\
        c69b51d31834b1ca40f93e25d3db811276489d1970c42bb3119f3da4a5a3c7bd275d2a85edcfaa88db4a9852\
        4f2d8d01";
    // 30 82 0122 (long form, 2 length bytes) | 30 0d 06 09 <rsaEncryption> 05 00 |
    // 03 82 010f 00 | 30 82 010a | 02 82 0101 00 <n, high bit set> | 02 03 010001
    const RSA2048_SPKI: &str = "30820122300d06092a864886f70d01010105000382010f003082010a02820101\
        00d1ec27a04b09f2030ca2ebe1cd70dd1bce82535cc0639a1693162c5c73727e8d96bd826e9da30fb5eac7f9\
        daded9161fbca6849b96daf565bd310c47ee0e6f2e0054b1fe7ff5c297a24a4134c33b2d38a9c48f48b4a4b3\
        b70d44202f83d23c5dda9712d879eb8b4266836e32be74059169ce245b49f543a5e75f0eea04aa22dbcd4c98\
        b358c38a91836f86175eb8ad1dfa9bd2f35913d332b9136908319773bff4c761b57e4544702d1f7c27fba62a\
        621518fe79caf79c7e179962adab36f4986c48578a989d634e5e242e3fe82873c7c69b51d31834b1ca40f93e\
        25d3db811276489d1970c42bb3119f3da4a5a3c7bd275d2a85edcfaa88db4a98524f2d8d010203010001";

    const RSA1024_N: &str = "9e500200757ea3b495b5e4d8f8d4a91e45cd900b511a8814b9e2e334b5edc14e\
        30fb319ef28ef686e6a7ca64d1d73dfe71e624b54ac4581d176da9480b8fd25fc2dcc884a2f477208079be37\
        c849097cdf075597079abfdefba5400ede1f897b2c70a47c057e42f44a552723df16d104c43998e160278d4d\
        4ee209b5d103374f";
    // 30 81 9f (long form, 1 length byte) | ... | 03 81 8d 00 | 30 81 89 | 02 81 81 00 <n> | 02 03 010001
    const RSA1024_SPKI: &str = "30819f300d06092a864886f70d010101050003818d00308189028181009e5002\
        00757ea3b495b5e4d8f8d4a91e45cd900b511a8814b9e2e334b5edc14e30fb319ef28ef686e6a7ca64d1d73d\
        fe71e624b54ac4581d176da9480b8fd25fc2dcc884a2f477208079be37c849097cdf075597079abfdefba540\
        0ede1f897b2c70a47c057e42f44a552723df16d104c43998e160278d4d4ee209b5d103374f0203010001";

    // `-pkeyopt rsa_keygen_pubexp:3`: e = 3 encodes as 02 01 03.
    const RSA_E3_N: &str = "c5c7d0bffa3e1b8e03e93621e0aa2e586df8edcaea1e3e133b85887e564fd5b7\
        0b9df29058efb1c2905fcde79fa35f6d8778573ab88ba4db8cf679d7f1d6c6665349050ba92aefc31548aefb\
        d4907b6ab7fc025a648ccae8790d4a72c01ec660da6cc1b51ff3035679e8620154d45a09f9119149cdb96254\
        15ec6de95ba571158db10ba0dd2f433b67f96796e8e79dc318cf4a2583c966f400aadb11b71594251897d135\
        3257488c932f3a625fa07f9ed23625426ec728c2bda710923267d89c6e2031811db6d61edfeecf05bad6fd7c\
        bbd29b9443a4326342b7bedce2be19ba94bdb77de00c8d72f830b5dde089fc708fd8e7b691f80ab6892923fd\
        7d38cf0d";
    const RSA_E3_SPKI: &str = "30820120300d06092a864886f70d01010105000382010d003082010802820101\
        00c5c7d0bffa3e1b8e03e93621e0aa2e586df8edcaea1e3e133b85887e564fd5b70b9df29058efb1c2905fcd\
        e79fa35f6d8778573ab88ba4db8cf679d7f1d6c6665349050ba92aefc31548aefbd4907b6ab7fc025a648cca\
        e8790d4a72c01ec660da6cc1b51ff3035679e8620154d45a09f9119149cdb9625415ec6de95ba571158db10b\
        a0dd2f433b67f96796e8e79dc318cf4a2583c966f400aadb11b71594251897d1353257488c932f3a625fa07f\
        9ed23625426ec728c2bda710923267d89c6e2031811db6d61edfeecf05bad6fd7cbbd29b9443a4326342b7be\
        dce2be19ba94bdb77de00c8d72f830b5dde089fc708fd8e7b691f80ab6892923fd7d38cf0d020103";

    // ---- EC vectors: `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256|P-384`,
    // x and y split from the `pub:` (04 || x || y) line of `openssl pkey -noout -text`.

    const P256_X: &str = "f1f759ba1df7552bb6c29eec4ad39ccd12d10e61c57e83e763b6e77c8c5fee03";
    const P256_Y: &str = "47b9418694c904dcc71dcc1bb7b33eafe761fd34b2f015d2ac5b7247eecd0b5e";
    const P256_SPKI: &str = "3059301306072a8648ce3d020106082a8648ce3d03010703420004\
        f1f759ba1df7552bb6c29eec4ad39ccd12d10e61c57e83e763b6e77c8c5fee03\
        47b9418694c904dcc71dcc1bb7b33eafe761fd34b2f015d2ac5b7247eecd0b5e";

    const P384_X: &str = "36ff8bfaeb4d0032a1912119d9598d9e34ec3d24e816cd5708a12edb1717775c\
        5abf2bcf60d8ed61af5897287f2ea84d";
    const P384_Y: &str = "d1115e4c346d9fead4623e6f907c401bc679bfdc9400e40784e71ce52b69d03c\
        ebd770912b243748f4c9c1bce1ce2c32";
    const P384_SPKI: &str = "3076301006072a8648ce3d020106052b8104002203620004\
        36ff8bfaeb4d0032a1912119d9598d9e34ec3d24e816cd5708a12edb1717775c\
        5abf2bcf60d8ed61af5897287f2ea84d\
        d1115e4c346d9fead4623e6f907c401bc679bfdc9400e40784e71ce52b69d03c\
        ebd770912b243748f4c9c1bce1ce2c32";

    #[test]
    fn rsa2048_matches_openssl() {
        assert_eq!(rsa_spki(&hex(RSA2048_N), &hex("010001")), hex(RSA2048_SPKI));
    }

    #[test]
    fn rsa1024_matches_openssl() {
        assert_eq!(rsa_spki(&hex(RSA1024_N), &hex("010001")), hex(RSA1024_SPKI));
    }

    #[test]
    fn rsa_small_exponent_matches_openssl() {
        assert_eq!(rsa_spki(&hex(RSA_E3_N), &[3]), hex(RSA_E3_SPKI));
    }

    #[test]
    fn rsa_leading_zeros_stripped() {
        let mut n = vec![0, 0, 0];
        n.extend(hex(RSA2048_N));
        let e = [0, 0, 1, 0, 1];
        assert_eq!(rsa_spki(&n, &e), hex(RSA2048_SPKI));
    }

    #[test]
    fn integer_encoding() {
        assert_eq!(integer(&[]), [0x02, 0x01, 0x00]);
        assert_eq!(integer(&[0, 0]), [0x02, 0x01, 0x00]);
        assert_eq!(integer(&[0x01]), [0x02, 0x01, 0x01]);
        assert_eq!(integer(&[0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(integer(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(&[0x00, 0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(
            integer(&[0x00, 0x00, 0xff, 0x01]),
            [0x02, 0x03, 0x00, 0xff, 0x01]
        );
        assert_eq!(integer(&[0x01, 0x00, 0x01]), [0x02, 0x03, 0x01, 0x00, 0x01]);
    }

    #[test]
    fn length_encoding() {
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x81, 0x80]),
            (255, &[0x81, 0xff]),
            (256, &[0x82, 0x01, 0x00]),
            (65_535, &[0x82, 0xff, 0xff]),
            (65_536, &[0x83, 0x01, 0x00, 0x00]),
        ];
        for &(len, want) in cases {
            let mut out = Vec::new();
            push_length(&mut out, len);
            assert_eq!(out, want, "length {len}");
        }
    }

    /// Reads one TLV header, returning (tag, content length, header length).
    fn read_header(der: &[u8]) -> (u8, usize, usize) {
        let tag = der[0];
        let first = der[1];
        if first < 0x80 {
            return (tag, first as usize, 2);
        }
        let n = (first & 0x7f) as usize;
        assert!(n > 0 && der[2] != 0, "non-minimal length");
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        assert!(len >= 0x80, "long form used for a short length");
        (tag, len, 2 + n)
    }

    #[test]
    fn rsa_spki_structure_for_many_sizes() {
        // Covers short, 1-, 2- and 3-byte lengths at every level.
        for n_len in [
            1usize, 60, 61, 62, 120, 121, 122, 123, 126, 127, 128, 250, 4096, 70_000,
        ] {
            let n = vec![0xa5; n_len];
            let der = rsa_spki(&n, &[1, 0, 1]);
            let (tag, len, hdr) = read_header(&der);
            assert_eq!(tag, 0x30);
            assert_eq!(hdr + len, der.len(), "outer length for n_len {n_len}");
            let alg = &der[hdr..hdr + 15];
            assert_eq!(alg, hex("300d06092a864886f70d0101010500").as_slice());
            let bits = &der[hdr + 15..];
            let (tag, len, bhdr) = read_header(bits);
            assert_eq!(tag, 0x03);
            assert_eq!(bhdr + len, bits.len());
            assert_eq!(bits[bhdr], 0, "unused bits");
            let key = &bits[bhdr + 1..];
            let (tag, len, khdr) = read_header(key);
            assert_eq!(tag, 0x30);
            assert_eq!(khdr + len, key.len());
            let ints = &key[khdr..];
            let (tag, len, ihdr) = read_header(ints);
            assert_eq!(tag, 0x02);
            assert_eq!(len, n_len + 1, "0x00 added for the high bit");
            assert_eq!(ints[ihdr], 0);
            assert_eq!(&ints[ihdr + 1..ihdr + len], n.as_slice());
            assert_eq!(&ints[ihdr + len..], &[0x02, 0x03, 0x01, 0x00, 0x01]);
        }
    }

    #[test]
    fn coordinate_lengths() {
        assert_eq!(EcCurve::P256.coordinate_len(), 32);
        assert_eq!(EcCurve::P384.coordinate_len(), 48);
    }

    #[test]
    fn p256_spki_matches_openssl() {
        let der = ec_spki(EcCurve::P256, &hex(P256_X), &hex(P256_Y));
        assert_eq!(der, Some(hex(P256_SPKI)));
    }

    #[test]
    fn p384_spki_matches_openssl() {
        let der = ec_spki(EcCurve::P384, &hex(P384_X), &hex(P384_Y));
        assert_eq!(der, Some(hex(P384_SPKI)));
    }

    #[test]
    fn ec_spki_requires_exact_coordinate_length() {
        let x = hex(P256_X);
        let y = hex(P256_Y);
        assert_eq!(ec_spki(EcCurve::P256, &x[1..], &y), None);
        assert_eq!(ec_spki(EcCurve::P256, &x, &y[1..]), None);
        let mut long_x = vec![0];
        long_x.extend(&x);
        assert_eq!(ec_spki(EcCurve::P256, &long_x, &y), None);
        assert_eq!(ec_spki(EcCurve::P256, &[], &[]), None);
        // P-256 coordinates are the wrong size for P-384 and vice versa.
        assert_eq!(ec_spki(EcCurve::P384, &x, &y), None);
        assert_eq!(ec_spki(EcCurve::P256, &hex(P384_X), &hex(P384_Y)), None);
    }

    #[test]
    fn ec_spki_keeps_leading_zero_coordinates() {
        // A coordinate below 2^248 still occupies 32 bytes in the point.
        let x = [0u8; 32];
        let mut y = [0u8; 32];
        y[31] = 1;
        let der = ec_spki(EcCurve::P256, &x, &y).expect("lengths are right");
        assert_eq!(der.len(), 91);
        assert_eq!(&der[..27], hex(P256_SPKI).get(..27).expect("prefix"));
        assert_eq!(&der[27..59], &x);
        assert_eq!(&der[59..], &y);
    }

    // ---- ECDSA vectors: `openssl dgst -sha256|-sha384 -sign key.pem msg` (DER output; each
    // verified with `openssl dgst -prverify`). JOSE = r || s, each left-padded to the
    // coordinate length, converted by hand from the DER below.

    struct SigVector {
        curve: EcCurve,
        jose: &'static str,
        der: &'static str,
    }

    const SIG_VECTORS: &[SigVector] = &[
        // P-256, both r and s have the high bit set:
        // 30 46 | 02 21 00 8c38..c657 | 02 21 00 872e..f2fe
        SigVector {
            curve: EcCurve::P256,
            jose: "8c3866e564833b856e983e954cffc678dad81d06aa87e6838e579d169587c657\
                   872e844fbdd8ca8193f3b50bbb9cdd42f5a1019c866c92c7840975a8a06ef2fe",
            der: "3046\
                  0221008c3866e564833b856e983e954cffc678dad81d06aa87e6838e579d169587c657\
                  022100872e844fbdd8ca8193f3b50bbb9cdd42f5a1019c866c92c7840975a8a06ef2fe",
        },
        // P-256, s < 2^248 (31-byte INTEGER, JOSE pads it with one 0x00):
        // 30 44 | 02 21 00 8297..e16c | 02 1f 7d82..b313
        SigVector {
            curve: EcCurve::P256,
            jose: "8297c6a35a75bd44133190970f4b329fdad319d83307111b033c07bae211e16c\
                   007d82f91866a3ced5df07f519013192a7191947d563fa8575e1b3fb7bf4b313",
            der: "3044\
                  0221008297c6a35a75bd44133190970f4b329fdad319d83307111b033c07bae211e16c\
                  021f7d82f91866a3ced5df07f519013192a7191947d563fa8575e1b3fb7bf4b313",
        },
        // P-256, r = 00 e2.. in JOSE: the stripped zero comes back for the high bit:
        // 30 44 | 02 20 00 e21f..c135 | 02 20 7bb2..0011
        SigVector {
            curve: EcCurve::P256,
            jose: "00e21f23c0eef839aac49d0544955ffecbd4607e8cc9097d456fd7972815c135\
                   7bb29c6e1cbd49f6d5fef23a90a9a4a49ae79d48def3ef7194f4930443690011",
            der: "3044\
                  022000e21f23c0eef839aac49d0544955ffecbd4607e8cc9097d456fd7972815c135\
                  02207bb29c6e1cbd49f6d5fef23a90a9a4a49ae79d48def3ef7194f4930443690011",
        },
        // P-256, neither high bit set nor short: 30 44 | 02 20 34e3..2aa1 | 02 20 63eb..ec99
        SigVector {
            curve: EcCurve::P256,
            jose: "34e3618a2395210e1d729a003305ff79b11e0dcba7868cce0f706275b58f2aa1\
                   63eb551ed10667baf29ef20085cfb4a993f8a46c89a1bfbeeb55ab993dfaec99",
            der: "3044\
                  022034e3618a2395210e1d729a003305ff79b11e0dcba7868cce0f706275b58f2aa1\
                  022063eb551ed10667baf29ef20085cfb4a993f8a46c89a1bfbeeb55ab993dfaec99",
        },
        // P-384, both high bits set: 30 66 | 02 31 00 93e3..e491 | 02 31 00 d67f..183b
        SigVector {
            curve: EcCurve::P384,
            jose: "93e3337611170490e90ee6c20812e97d3b2577cbfb9afcf7790521ae14f3d3a3\
                   77911136edcbed3db20598a81755e491\
                   d67f349c7f64563a1d04b9b98cf1b313f60017faf3e315dbfd23754c1c3e8aee\
                   0d0099993864d2ba3b6948ff0ffb183b",
            der: "3066\
                  02310093e3337611170490e90ee6c20812e97d3b2577cbfb9afcf7790521ae14f3d3a3\
                  77911136edcbed3db20598a81755e491\
                  023100d67f349c7f64563a1d04b9b98cf1b313f60017faf3e315dbfd23754c1c3e8aee\
                  0d0099993864d2ba3b6948ff0ffb183b",
        },
        // P-384, r < 2^376 (47-byte INTEGER): 30 64 | 02 2f 1a2a..57ea | 02 31 00 c0f4..11c1
        SigVector {
            curve: EcCurve::P384,
            jose: "001a2a6948018d33cba90e8520a121fadd98bd9ef701bd0e4a350f88c2e426f7\
                   938f4b2dd6f90065edd4f5e5a1a557ea\
                   c0f48803018c4e05b6e5e26217462dfb1e1a53ba43639322f562a348f55e09b2\
                   0f2d5d997d1f2e8582579176053e11c1",
            der: "3064\
                  022f1a2a6948018d33cba90e8520a121fadd98bd9ef701bd0e4a350f88c2e426f7\
                  938f4b2dd6f90065edd4f5e5a1a557ea\
                  023100c0f48803018c4e05b6e5e26217462dfb1e1a53ba43639322f562a348f55e09b2\
                  0f2d5d997d1f2e8582579176053e11c1",
        },
        // P-384, s = 00 91.. in JOSE: 30 65 | 02 31 00 80cb..0949 | 02 30 00 9183..d7d3
        SigVector {
            curve: EcCurve::P384,
            jose: "80cb3b17452ac574e28db51311908262f4dd8f94a63dfcfb702a7f799148827e\
                   538720773ad8a573f549a0b4f8fa0949\
                   009183ce3dfa5618ae07cec3eca4c9c7cd073faf4b32cbd5255f9652718b6961\
                   27299d1841a53c61b18f47191d3ed7d3",
            der: "3065\
                  02310080cb3b17452ac574e28db51311908262f4dd8f94a63dfcfb702a7f799148827e\
                  538720773ad8a573f549a0b4f8fa0949\
                  023000\
                  9183ce3dfa5618ae07cec3eca4c9c7cd073faf4b32cbd5255f9652718b696127\
                  299d1841a53c61b18f47191d3ed7d3",
        },
        // P-384, plain: 30 64 | 02 30 5fb9..50ad | 02 30 7438..e986
        SigVector {
            curve: EcCurve::P384,
            jose: "5fb90ce9a15a010ea229aaaea1c163aebb22a7e614dff9e15e5ebce993a625c2\
                   68280314b85fcc163786a4c7592d50ad\
                   7438fd8be3f61ed7088271e0b16b6771567d7f19c33991c140210e952560c457\
                   624338d16daa942ba81a54855b3ce986",
            der: "3064\
                  02305fb90ce9a15a010ea229aaaea1c163aebb22a7e614dff9e15e5ebce993a625c2\
                  68280314b85fcc163786a4c7592d50ad\
                  02307438fd8be3f61ed7088271e0b16b6771567d7f19c33991c140210e952560c457\
                  624338d16daa942ba81a54855b3ce986",
        },
    ];

    #[test]
    fn ecdsa_matches_openssl_signatures() {
        for (i, v) in SIG_VECTORS.iter().enumerate() {
            let jose = hex(v.jose);
            assert_eq!(jose.len(), 2 * v.curve.coordinate_len(), "vector {i}");
            assert_eq!(
                ecdsa_sig_jose_to_der(&jose, v.curve),
                Some(hex(v.der)),
                "vector {i}"
            );
        }
    }

    #[test]
    fn ecdsa_wrong_length() {
        let jose = hex(SIG_VECTORS[0].jose);
        assert_eq!(ecdsa_sig_jose_to_der(&jose[1..], EcCurve::P256), None);
        assert_eq!(
            ecdsa_sig_jose_to_der(&[&jose[..], &[0]].concat(), EcCurve::P256),
            None
        );
        assert_eq!(ecdsa_sig_jose_to_der(&jose, EcCurve::P384), None);
        assert_eq!(ecdsa_sig_jose_to_der(&[], EcCurve::P256), None);
        // DER handed in where JOSE is expected is refused by length.
        assert_eq!(
            ecdsa_sig_jose_to_der(&hex(SIG_VECTORS[0].der), EcCurve::P256),
            None
        );
    }

    #[test]
    fn ecdsa_zero_components() {
        let mut sig = [0u8; 64];
        assert_eq!(ecdsa_sig_jose_to_der(&sig, EcCurve::P256), None);
        sig[63] = 1; // r = 0, s = 1
        assert_eq!(ecdsa_sig_jose_to_der(&sig, EcCurve::P256), None);
        let mut sig = [0u8; 96];
        sig[47] = 1; // r = 1, s = 0
        assert_eq!(ecdsa_sig_jose_to_der(&sig, EcCurve::P384), None);
    }

    #[test]
    fn ecdsa_small_components() {
        let mut sig = [0u8; 64];
        sig[31] = 1;
        sig[63] = 0x80;
        assert_eq!(
            ecdsa_sig_jose_to_der(&sig, EcCurve::P256),
            Some(vec![0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80])
        );
    }

    #[test]
    fn ecdsa_all_ones_p384() {
        // Largest possible components: 49-byte INTEGERs, 102-byte body, still short form.
        let sig = [0xffu8; 96];
        let der = ecdsa_sig_jose_to_der(&sig, EcCurve::P384).expect("valid length");
        assert_eq!(&der[..5], &[0x30, 102, 0x02, 49, 0x00]);
        assert_eq!(der.len(), 104);
    }

    #[test]
    fn never_panics_on_arbitrary_lengths() {
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            for curve in [EcCurve::P256, EcCurve::P384] {
                let _ = ecdsa_sig_jose_to_der(&bytes, curve);
                let (a, b) = bytes.split_at(len / 2);
                let _ = ec_spki(curve, a, b);
            }
            let _ = rsa_spki(&bytes, &bytes);
        }
    }
}
