//! The provider's keys, read from its JWKS entry by entry: only usable
//! signature keys are kept, each with the key kind (and algorithm, when
//! named) it may be used with.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The provider's keys, by `kid`, each with the algorithm family it may be
/// used for.
#[derive(Clone, Default)]
pub struct ProviderKeys {
    pub(super) keys: HashMap<String, (DecodingKey, KeyKind, Option<Algorithm>)>,
    /// Keys without a kid, tried when a token names none.
    pub(super) anonymous: Vec<(DecodingKey, KeyKind, Option<Algorithm>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyKind {
    Ec,
    Rsa,
    Okp,
}

pub(super) fn kind_of(alg: Algorithm) -> Option<KeyKind> {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => Some(KeyKind::Ec),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(KeyKind::Rsa),
        Algorithm::EdDSA => Some(KeyKind::Okp),
        _ => None,
    }
}

impl ProviderKeys {
    /// Usable signature keys of a JWKS; symmetric (`oct`) keys and keys
    /// marked for encryption are left out.
    pub fn from_jwks(set: &JwkSet) -> ProviderKeys {
        let mut out = ProviderKeys::default();
        for jwk in &set.keys {
            out.add(jwk);
        }
        out
    }

    /// The usable signature keys of a JWKS document, entry by entry (OIDC
    /// Core §10.1): an entry that cannot be read (a key type or curve
    /// unigate does not know, a broken key), an encryption key (`use:
    /// enc`) or a key whose `key_ops` exclude `verify` is skipped, never
    /// fatal to the others. `None` when the document has no `keys` list.
    pub fn from_json(doc: &serde_json::Value) -> Option<(ProviderKeys, usize)> {
        let entries = doc.get("keys")?.as_array()?;
        let mut out = ProviderKeys::default();
        let mut skipped = 0;
        for entry in entries {
            let ops_ok = match entry.get("key_ops") {
                None => true,
                Some(ops) => ops
                    .as_array()
                    .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify"))),
            };
            let jwk = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(entry.clone()).ok();
            match jwk {
                Some(jwk) if ops_ok && out.add(&jwk) => {}
                _ => skipped += 1,
            }
        }
        Some((out, skipped))
    }

    /// Adds one key if it is a usable signature key.
    fn add(&mut self, jwk: &jsonwebtoken::jwk::Jwk) -> bool {
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption | jsonwebtoken::jwk::PublicKeyUse::Other(_))
        ) {
            return false;
        }
        let kind = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(_) => KeyKind::Ec,
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::OctetKeyPair(_) => KeyKind::Okp,
            // Symmetric keys, and whatever a future JWK type is: not for us.
            _ => return false,
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            return false;
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match a {
                KeyAlgorithm::ES256 => Some(Algorithm::ES256),
                KeyAlgorithm::ES384 => Some(Algorithm::ES384),
                KeyAlgorithm::RS256 => Some(Algorithm::RS256),
                KeyAlgorithm::RS384 => Some(Algorithm::RS384),
                KeyAlgorithm::RS512 => Some(Algorithm::RS512),
                KeyAlgorithm::PS256 => Some(Algorithm::PS256),
                KeyAlgorithm::PS384 => Some(Algorithm::PS384),
                KeyAlgorithm::PS512 => Some(Algorithm::PS512),
                KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
                // An encryption algorithm (RSA-OAEP…): not a signing key.
                _ => return false,
            },
        };
        match &jwk.common.key_id {
            Some(kid) => {
                self.keys.insert(kid.clone(), (key, kind, alg));
            }
            None => self.anonymous.push((key, kind, alg)),
        }
        true
    }

    pub fn len(&self) -> usize {
        self.keys.len() + self.anonymous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }
}
