//! The provider's signing keys: one ES256 key (the default) and one RS256
//! key in use at a time, each published in the JWKS under its RFC 7638
//! thumbprint as `kid`. A rotation makes new keys and keeps the replaced
//! public keys in the JWKS for a grace period, so tokens signed just before
//! a rotation still verify.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid signing key: {0}")]
    Invalid(String),
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// A private key and its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Jwk,
    decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl SigningKey {
    fn from_encoding(encoding: EncodingKey, alg: Algorithm) -> Result<Self, KeyError> {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg)?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(match alg {
            Algorithm::RS256 => KeyAlgorithm::RS256,
            _ => KeyAlgorithm::ES256,
        });
        let decoding = DecodingKey::from_jwk(&jwk)?;
        Ok(SigningKey {
            kid,
            alg,
            encoding,
            jwk,
            decoding,
        })
    }

    /// A new random key for `alg` (ES256 or RS256).
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let encoding = match alg {
            Algorithm::ES256 => {
                use p256::pkcs8::EncodePrivateKey;
                let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
                let der = secret.to_pkcs8_der().map_err(|e| KeyError::Invalid(e.to_string()))?;
                EncodingKey::from_ec_der(der.as_bytes())
            }
            Algorithm::RS256 => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                    .map_err(|e| KeyError::Invalid(e.to_string()))?;
                let der = key.to_pkcs1_der().map_err(|e| KeyError::Invalid(e.to_string()))?;
                EncodingKey::from_rsa_der(der.as_bytes())
            }
            other => return Err(KeyError::Invalid(format!("{other:?} is not supported"))),
        };
        Self::from_encoding(encoding, alg)
    }

    /// A key from PEM text (ES256: PKCS#8; RS256: PKCS#1 or PKCS#8).
    pub fn from_pem(pem: &Secret, alg: Algorithm) -> Result<Self, KeyError> {
        let encoding = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.expose().as_bytes()),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.expose().as_bytes()),
            other => return Err(KeyError::Invalid(format!("{other:?} is not supported"))),
        }
        .map_err(|e| KeyError::Invalid(e.to_string()))?;
        Self::from_encoding(encoding, alg)
    }

    /// Signs `claims` with this key; `typ` goes in the header (`JWT`,
    /// `at+jwt`, `logout+jwt`).
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_string());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

struct KeyState {
    es256: Arc<SigningKey>,
    rs256: Arc<SigningKey>,
    /// Replaced keys and when they leave the JWKS.
    retired: Vec<(Arc<SigningKey>, SystemTime)>,
}

/// The provider's keys, current and recently retired.
pub struct KeyStore {
    state: RwLock<KeyState>,
    grace: Duration,
}

impl KeyStore {
    pub fn new(es256: SigningKey, rs256: SigningKey, grace: Duration) -> Self {
        KeyStore {
            state: RwLock::new(KeyState {
                es256: Arc::new(es256),
                rs256: Arc::new(rs256),
                retired: Vec::new(),
            }),
            grace,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The key that signs with `alg` now.
    pub fn current(&self, alg: Algorithm) -> Arc<SigningKey> {
        let s = self.read();
        match alg {
            Algorithm::RS256 => s.rs256.clone(),
            _ => s.es256.clone(),
        }
    }

    /// Replaces both keys with new ones; the old public keys stay published
    /// until `now + grace`.
    pub fn rotate(&self, es256: SigningKey, rs256: SigningKey, now: SystemTime) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        let until = now + self.grace;
        let old_es = std::mem::replace(&mut s.es256, Arc::new(es256));
        let old_rs = std::mem::replace(&mut s.rs256, Arc::new(rs256));
        s.retired.push((old_es, until));
        s.retired.push((old_rs, until));
        s.retired.retain(|(_, until)| *until > now);
    }

    /// The JWKS: current keys, then retired keys still in their grace period.
    pub fn jwks(&self, now: SystemTime) -> JwkSet {
        let s = self.read();
        let mut keys = vec![s.es256.jwk.clone(), s.rs256.jwk.clone()];
        keys.extend(
            s.retired
                .iter()
                .filter(|(_, until)| *until > now)
                .map(|(k, _)| k.jwk.clone()),
        );
        JwkSet { keys }
    }

    /// A published key by `kid`, for checking the provider's own tokens
    /// (`id_token_hint`, access tokens).
    pub fn find(&self, kid: &str, now: SystemTime) -> Option<Arc<SigningKey>> {
        let s = self.read();
        [&s.es256, &s.rs256]
            .into_iter()
            .find(|k| k.kid == kid)
            .cloned()
            .or_else(|| {
                s.retired
                    .iter()
                    .find(|(k, until)| k.kid == kid && *until > now)
                    .map(|(k, _)| k.clone())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_old_key_for_grace_period_only() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let store = KeyStore::new(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            SigningKey::generate(Algorithm::RS256).unwrap(),
            Duration::from_secs(600),
        );
        let old = store.current(Algorithm::ES256).kid.clone();
        assert_eq!(store.jwks(t0).keys.len(), 2);
        store.rotate(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            SigningKey::generate(Algorithm::RS256).unwrap(),
            t0,
        );
        let new = store.current(Algorithm::ES256).kid.clone();
        assert_ne!(old, new);
        let kids = |t| -> Vec<String> {
            store
                .jwks(t)
                .keys
                .iter()
                .map(|k| k.common.key_id.clone().unwrap())
                .collect()
        };
        assert_eq!(kids(t0).len(), 4);
        assert!(kids(t0).contains(&old));
        assert!(store.find(&old, t0 + Duration::from_secs(599)).is_some());
        assert!(!kids(t0 + Duration::from_secs(600)).contains(&old));
        assert!(store.find(&old, t0 + Duration::from_secs(600)).is_none());
        assert!(store.find(&new, t0 + Duration::from_secs(600)).is_some());
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint_and_signature_verifies() {
        let k = SigningKey::generate(Algorithm::ES256).unwrap();
        assert_eq!(k.kid, k.jwk.thumbprint(ThumbprintHash::SHA256).unwrap());
        let token = k
            .sign("JWT", &serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}))
            .unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.validate_aud = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, k.decoding_key(), &v).unwrap();
        assert_eq!(data.claims["sub"], "x");
        assert_eq!(data.header.kid.as_deref(), Some(k.kid.as_str()));
    }
}
