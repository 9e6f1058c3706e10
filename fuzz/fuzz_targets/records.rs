//! The shared-data record codecs: rate-limit groups (ratelimit/record.rs) round-trip, and
//! charging a bucket or recording a DPoP `jti` (token/replay.rs) over whatever bytes a record
//! holds never panics and always writes a well-formed record.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use okta_jwt_filter::core::ratelimit::charge::{admit, KeyHasher, Meter, Verdict};
use okta_jwt_filter::core::ratelimit::limits::{Count, LimitKey, RateLimit};
use okta_jwt_filter::core::ratelimit::record::{Group, GROUP_SLOTS};
use okta_jwt_filter::core::token::replay::{self, Recorded};
use okta_jwt_filter_fuzz::CloneStore;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    record: &'a [u8],
    slots: u8,
    requests: u64,
    per_s: u64,
    burst: u64,
    max_keys: u8,
    charges: Vec<(u16, u32)>,
    jtis: Vec<(&'a str, u32, u32)>,
}

fn check_group(bytes: &[u8], n: usize) {
    assert_eq!(bytes.len(), 11 + 33 * n, "record size");
    assert!(
        Group::decode(bytes, n).is_some(),
        "a written record decodes"
    );
}

fuzz_target!(|input: Input<'_>| {
    // Round trip: whatever decodes encodes to bytes that decode to the same group.
    for n in [GROUP_SLOTS, 1, usize::from(input.slots)] {
        if let Some(g) = Group::decode(input.record, n) {
            let bytes = g.encode();
            assert_eq!(bytes.len(), input.record.len());
            assert_eq!(Group::decode(&bytes, n), Some(g));
        }
    }

    // Charging over a store whose every record starts as the fuzzed bytes.
    let limit = RateLimit {
        key: LimitKey::Route,
        requests: input.requests % 1_000 + 1,
        per_s: input.per_s % 86_400 + 1,
        burst: input.burst % 1_000 + 1,
        max_keys: u64::from(input.max_keys) + 1,
        count: Count::All,
    };
    let store = CloneStore::seeded(input.record);
    let hasher = KeyHasher::new(1, 2);
    let mut now_ms = 1_700_000_000_000u64;
    for (key, dt) in input.charges.iter().take(64) {
        now_ms = now_ms.saturating_add(u64::from(*dt));
        let meter = Meter {
            store: &store,
            hasher: &hasher,
            rule: 0,
            now_ms,
        };
        let value = key.to_string();
        match admit(&meter, std::slice::from_ref(&limit), &[value.as_str()]) {
            Verdict::Admitted { most_restrictive } => {
                let s = most_restrictive.expect("one limit applied");
                assert!(s.remaining < limit.burst, "a token was taken");
                assert_eq!(s.limit, limit.requests);
            }
            Verdict::Limited {
                state,
                retry_after_s,
            } => {
                assert!(retry_after_s >= 1);
                assert!(state.remaining == 0 || state.remaining < limit.burst);
            }
        }
    }
    for (key, value) in store.written() {
        if key.ends_with(".overflow") {
            check_group(&value, 1);
        } else if key.ends_with(".used") {
            assert_eq!(value.len(), 8);
        } else if key.starts_with("okta_jwt.rl.") {
            check_group(&value, GROUP_SLOTS);
        }
    }

    // The replay record over the same bytes.
    let store = CloneStore::seeded(input.record);
    for (jti, now, window) in input.jtis.iter().take(16) {
        let now = u64::from(*now);
        let expires = now + u64::from(*window);
        let first = replay::record(&store, 0, jti, expires, now);
        if first == Ok(Recorded::Fresh) {
            assert_eq!(
                replay::record(&store, 0, jti, expires, now),
                Ok(Recorded::Replayed),
                "a recorded jti is refused within its window"
            );
        }
    }
    for (key, value) in store.written() {
        assert!(key.starts_with("okta_jwt.dpop.0."));
        assert_eq!(value.first(), Some(&b'D'));
        assert_eq!((value.len() - 1) % 16, 0);
        assert!((value.len() - 1) / 16 <= replay::SLOTS);
    }
});
