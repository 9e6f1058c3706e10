//! The wire format of Envoy's `verify_signature` foreign function: protobuf messages
//! `VerifySignatureArguments` {1: hash_function, 2: public_key (DER), 3: signature, 4: text}
//! and `VerifySignatureResult` {1: result, 2: error}. Four length-delimited fields do not
//! justify a protobuf code generator in a wasm module, so they are encoded here by hand.

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub fn encode_args(hash: &str, public_key_der: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + hash.len() + public_key_der.len() + signature.len() + text.len());
    put_bytes(&mut out, 1, hash.as_bytes());
    put_bytes(&mut out, 2, public_key_der);
    put_bytes(&mut out, 3, signature);
    put_bytes(&mut out, 4, text);
    out
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// `Some(true)` only for a well-formed result whose `result` field is true.
pub fn decode_result(buf: &[u8]) -> Option<bool> {
    let mut pos = 0;
    let mut result = false;
    while pos < buf.len() {
        let key = get_varint(buf, &mut pos)?;
        match (key >> 3, key & 7) {
            (1, 0) => result = get_varint(buf, &mut pos)? != 0,
            (_, 0) => {
                get_varint(buf, &mut pos)?;
            }
            (_, 2) => {
                let len = usize::try_from(get_varint(buf, &mut pos)?).ok()?;
                pos = pos.checked_add(len).filter(|end| *end <= buf.len())?;
            }
            _ => return None,
        }
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_fields_in_order_with_lengths() {
        let out = encode_args("sha256", &[1, 2], &[3], b"ab");
        assert_eq!(
            out,
            [
                0x0a, 6, b's', b'h', b'a', b'2', b'5', b'6', //
                0x12, 2, 1, 2, //
                0x1a, 1, 3, //
                0x22, 2, b'a', b'b'
            ]
        );
        let long = encode_args("sha256", &[0u8; 300], &[], &[]);
        assert_eq!(
            &long[8..11],
            &[0x12, 0xac, 0x02],
            "300 as a two-byte varint"
        );
    }

    #[test]
    fn decodes_results() {
        assert_eq!(decode_result(&[0x08, 0x01]), Some(true));
        assert_eq!(
            decode_result(&[0x08, 0x00, 0x12, 0x03, b'b', b'a', b'd']),
            Some(false)
        );
        assert_eq!(decode_result(&[0x12, 0x01, b'x', 0x08, 0x01]), Some(true));
        assert_eq!(decode_result(&[]), Some(false), "proto3 default is false");
        assert_eq!(decode_result(&[0x12, 0x05, b'x']), None, "truncated");
        assert_eq!(decode_result(&[0x08]), None);
        assert_eq!(
            decode_result(&[0x0d, 0, 0, 0, 0]),
            None,
            "fixed32 is unexpected"
        );
        assert_eq!(
            decode_result(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            None
        );
    }
}
