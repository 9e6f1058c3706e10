//! The JWS algorithms this filter accepts, and how each maps onto key types and hashes.

/// Signature algorithms from RFC 7518 that the filter can verify. `none` and the HMAC family
/// are deliberately absent: a shared-secret algorithm has no place in a public-key JWKS flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// The key family an algorithm needs (`kty` in a JWK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    Ec,
    Okp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// The name Envoy's `verify_signature` foreign function expects.
    pub fn envoy_name(self) -> &'static str {
        match self {
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
            Hash::Sha512 => "sha512",
        }
    }
}

pub const ALL: [Alg; 9] = [
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
    Alg::ES256,
    Alg::ES384,
    Alg::EdDSA,
];

impl Alg {
    pub fn parse(name: &str) -> Option<Alg> {
        ALL.iter().copied().find(|a| a.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                KeyFamily::Rsa
            }
            Alg::ES256 | Alg::ES384 => KeyFamily::Ec,
            Alg::EdDSA => KeyFamily::Okp,
        }
    }

    pub fn hash(self) -> Hash {
        match self {
            Alg::RS256 | Alg::PS256 | Alg::ES256 => Hash::Sha256,
            Alg::RS384 | Alg::PS384 | Alg::ES384 => Hash::Sha384,
            Alg::RS512 | Alg::PS512 | Alg::EdDSA => Hash::Sha512,
        }
    }

    /// A bit for compact allow-sets.
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of algorithms, cheap to copy and test on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlgSet(u16);

impl AlgSet {
    pub fn insert(&mut self, alg: Alg) {
        self.0 |= alg.bit();
    }
    pub fn contains(self, alg: Alg) -> bool {
        self.0 & alg.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Alg> {
        ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Alg> for AlgSet {
    fn from_iter<I: IntoIterator<Item = Alg>>(iter: I) -> Self {
        let mut set = AlgSet::default();
        for alg in iter {
            set.insert(alg);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_refused_names_do_not_parse() {
        for alg in ALL {
            assert_eq!(Alg::parse(alg.as_str()), Some(alg));
        }
        for refused in ["none", "HS256", "HS384", "HS512", "rs256", "ES512", ""] {
            assert_eq!(Alg::parse(refused), None, "{refused}");
        }
    }

    #[test]
    fn set_membership() {
        let set: AlgSet = [Alg::RS256, Alg::ES384].into_iter().collect();
        assert!(set.contains(Alg::RS256));
        assert!(set.contains(Alg::ES384));
        assert!(!set.contains(Alg::PS256));
        assert_eq!(set.iter().count(), 2);
        assert!(AlgSet::default().is_empty());
    }
}
