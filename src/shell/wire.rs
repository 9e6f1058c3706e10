//! The proxy-wasm ABI's encodings of header maps and property paths, without the SDK's
//! `unwrap` and unchecked slicing: a malformed map from the host is refused, not a panic.
//! Pure code, so it is also built natively for its tests (see `lib.rs`).

/// `[count: u32][(name_len: u32, value_len: u32) × count]` then each name and value followed
/// by a NUL, all little-endian.
pub fn serialize_map(map: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + map
        .iter()
        .map(|(n, v)| n.len() + v.len() + 10)
        .sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&len_u32(map.len()).to_le_bytes());
    for (name, value) in map {
        bytes.extend_from_slice(&len_u32(name.len()).to_le_bytes());
        bytes.extend_from_slice(&len_u32(value.len()).to_le_bytes());
    }
    for (name, value) in map {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// Lengths in a wasm32 VM fit `u32`; saturating keeps the encoder total all the same.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The parts joined by NUL, as `proxy_get_property` takes them.
pub fn serialize_property_path(path: &[&str]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(path.iter().map(|p| p.len() + 1).sum());
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            bytes.push(0);
        }
        bytes.extend_from_slice(part.as_bytes());
    }
    bytes
}

/// A header map from the host: names as UTF-8 (lossily: Envoy's codecs only admit token
/// characters, so this never alters a real name), values as bytes. `None` when the lengths do
/// not add up: the host broke the ABI, and the caller fails closed.
pub fn deserialize_map_bytes(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let (count, rest) = read_u32(bytes)?;
    let (sizes, mut data) = rest.split_at_checked(count.checked_mul(8)?)?;
    let mut map = Vec::with_capacity(count);
    for pair in sizes.chunks_exact(8) {
        let (name_len, pair) = read_u32(pair)?;
        let (value_len, _) = read_u32(pair)?;
        let (name, rest) = take_nul_terminated(data, name_len)?;
        let (value, rest) = take_nul_terminated(rest, value_len)?;
        data = rest;
        let name = String::from_utf8(name.to_vec())
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        map.push((name, value.to_vec()));
    }
    Some(map)
}

fn read_u32(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((usize::try_from(u32::from_le_bytes(*head)).ok()?, rest))
}

/// `len` bytes, then the NUL the host writes after each (skipped, not checked, as the SDK
/// does).
fn take_nul_terminated(bytes: &[u8], len: usize) -> Option<(&[u8], &[u8])> {
    let (item, rest) = bytes.split_at_checked(len)?;
    let rest = rest.get(1..)?;
    Some((item, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(map: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = (map.len() as u32).to_le_bytes().to_vec();
        for (n, v) in map {
            b.extend((n.len() as u32).to_le_bytes());
            b.extend((v.len() as u32).to_le_bytes());
        }
        for (n, v) in map {
            b.extend(n.as_bytes());
            b.push(0);
            b.extend(*v);
            b.push(0);
        }
        b
    }

    #[test]
    fn a_map_round_trips() {
        let map = [(":method", "GET"), (":path", "/a?b"), ("x-empty", "")];
        let bytes = serialize_map(&map);
        let back = deserialize_map_bytes(&bytes).unwrap();
        let back: Vec<(&str, &[u8])> = back.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
        let want: Vec<(&str, &[u8])> = map.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        assert_eq!(back, want);
        assert_eq!(deserialize_map_bytes(&[]).unwrap(), vec![]);
        assert_eq!(serialize_map(&[]), 0u32.to_le_bytes());
    }

    #[test]
    fn values_that_are_not_utf8_survive_and_names_are_lossy() {
        let bytes = encode(&[("a\u{e9}", b"\xff\x00v"), ("n", b"")]);
        let map = deserialize_map_bytes(&bytes).unwrap();
        assert_eq!(map[0], ("a\u{e9}".to_owned(), b"\xff\x00v".to_vec()));
        let mut raw = encode(&[("ab", b"v")]);
        raw[12] = 0xff; // the name's first byte
        assert_eq!(deserialize_map_bytes(&raw).unwrap()[0].0, "\u{fffd}b");
    }

    /// Every truncation of a valid map, and lengths past the end or near u32::MAX, are refused
    /// (`None`), never a panic.
    #[test]
    fn a_malformed_map_is_refused() {
        let good = encode(&[("authorization", b"Bearer x"), (":path", b"/")]);
        for cut in 1..good.len() {
            assert_eq!(deserialize_map_bytes(&good[..cut]), None, "cut at {cut}");
        }
        let mut long_name = good.clone();
        long_name[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(deserialize_map_bytes(&long_name), None);
        let mut huge_count = good.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(deserialize_map_bytes(&huge_count), None);
        let mut huge_len = good;
        huge_len[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(deserialize_map_bytes(&huge_len), None);
    }

    #[test]
    fn property_paths_are_nul_joined() {
        assert_eq!(
            serialize_property_path(&["source", "address"]),
            b"source\0address"
        );
        assert_eq!(serialize_property_path(&["a"]), b"a");
        assert_eq!(serialize_property_path(&[]), b"");
    }
}
