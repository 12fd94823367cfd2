//! The provider's signing keys: one ES256 key (the default) and one RS256
//! key in use at a time, each published in the JWKS under its RFC 7638
//! thumbprint as `kid`. A rotation makes new keys and keeps the replaced
//! public keys in the JWKS for a grace period, so tokens signed just before
//! a rotation still verify.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters, EllipticCurveKeyType, Jwk,
    JwkSet, KeyAlgorithm, PublicKeyUse, RSAKeyParameters, RSAKeyType, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid signing key: {0}")]
    Invalid(String),
    #[error("signing failed")]
    Sign,
    #[error(transparent)]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("cannot encode token: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The parsed private key, kept ready so signing does no key parsing.
enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private key and its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    signer: Signer,
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

fn invalid(e: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid(e.to_string())
}

impl SigningKey {
    fn from_signer(signer: Signer) -> Result<Self, KeyError> {
        let (alg, algorithm) = match &signer {
            Signer::Ec(k) => {
                // Uncompressed SEC1 point: 0x04 || x || y.
                let point = k.public_key().as_ref();
                if point.len() != 65 || point[0] != 4 {
                    return Err(invalid("unexpected P-256 public key encoding"));
                }
                (
                    Algorithm::ES256,
                    AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                        key_type: EllipticCurveKeyType::EC,
                        curve: EllipticCurve::P256,
                        x: B64.encode(&point[1..33]),
                        y: B64.encode(&point[33..65]),
                    }),
                )
            }
            Signer::Rsa(k) => {
                let public = k.public_key();
                (
                    Algorithm::RS256,
                    AlgorithmParameters::RSA(RSAKeyParameters {
                        key_type: RSAKeyType::RSA,
                        n: B64.encode(public.modulus().big_endian_without_leading_zero()),
                        e: B64.encode(public.exponent().big_endian_without_leading_zero()),
                    }),
                )
            }
        };
        let mut jwk = Jwk {
            common: CommonParameters::default(),
            algorithm,
        };
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
            signer,
            jwk,
            decoding,
        })
    }

    /// A new random key for `alg` (ES256 or RS256).
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let signer = match alg {
            Algorithm::ES256 => Signer::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(invalid)?),
            Algorithm::RS256 => Signer::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(invalid)?),
            other => return Err(KeyError::Invalid(format!("{other:?} is not supported"))),
        };
        Self::from_signer(signer)
    }

    /// A key from PEM text (ES256: PKCS#8; RS256: PKCS#1 or PKCS#8).
    pub fn from_pem(pem: &Secret, alg: Algorithm) -> Result<Self, KeyError> {
        let text = pem.expose().as_bytes();
        let signer = match alg {
            Algorithm::ES256 => {
                let der = EncodingKey::from_ec_pem(text).map_err(invalid)?;
                Signer::Ec(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_bytes()).map_err(invalid)?)
            }
            Algorithm::RS256 => {
                let der = EncodingKey::from_rsa_pem(text).map_err(invalid)?;
                let bytes = der.as_bytes();
                Signer::Rsa(
                    RsaKeyPair::from_der(bytes)
                        .or_else(|_| RsaKeyPair::from_pkcs8(bytes))
                        .map_err(invalid)?,
                )
            }
            other => return Err(KeyError::Invalid(format!("{other:?} is not supported"))),
        };
        Self::from_signer(signer)
    }

    /// Signs `claims` as a compact JWS with this key; `typ` goes in the
    /// header (`JWT`, `at+jwt`, `logout+jwt`).
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_string());
        self.sign_with_header(&header, claims)
    }

    /// Signs `claims` under any JOSE `header` (which should name this
    /// key's algorithm): for tests of what a relying party must refuse.
    pub fn sign_with_header<H: Serialize, T: Serialize>(&self, header: &H, claims: &T) -> Result<String, KeyError> {
        let mut out = B64.encode(serde_json::to_vec(header)?);
        out.push('.');
        B64.encode_string(serde_json::to_vec(claims)?, &mut out);
        let rng = SystemRandom::new();
        let signature = match &self.signer {
            Signer::Ec(k) => k
                .sign(&rng, out.as_bytes())
                .map_err(|_| KeyError::Sign)?
                .as_ref()
                .to_vec(),
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, out.as_bytes(), &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                sig
            }
        };
        out.push('.');
        B64.encode_string(signature, &mut out);
        Ok(out)
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

struct KeyState {
    es256: Arc<SigningKey>,
    rs256: Arc<SigningKey>,
    /// Replaced keys, when they leave the JWKS, and until when the provider
    /// still accepts its own tokens signed by them (`id_token_hint`).
    retired: Vec<(Arc<SigningKey>, SystemTime, SystemTime)>,
}

/// The provider's keys, current and recently retired.
pub struct KeyStore {
    state: RwLock<KeyState>,
    grace: Duration,
    accept_for: Duration,
}

impl KeyStore {
    /// `grace`: how long a replaced key stays published; `accept_for`: how
    /// long the provider still accepts its own tokens signed by it (at least
    /// `grace`; an ID token is an `id_token_hint` for a session's lifetime).
    pub fn new(es256: SigningKey, rs256: SigningKey, grace: Duration, accept_for: Duration) -> Self {
        KeyStore {
            state: RwLock::new(KeyState {
                es256: Arc::new(es256),
                rs256: Arc::new(rs256),
                retired: Vec::new(),
            }),
            grace,
            accept_for: accept_for.max(grace),
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
        let (published, accepted) = (now + self.grace, now + self.accept_for);
        let old_es = std::mem::replace(&mut s.es256, Arc::new(es256));
        let old_rs = std::mem::replace(&mut s.rs256, Arc::new(rs256));
        s.retired.push((old_es, published, accepted));
        s.retired.push((old_rs, published, accepted));
        s.retired.retain(|(_, _, accepted)| *accepted > now);
    }

    /// The JWKS: current keys, then retired keys still in their grace period.
    pub fn jwks(&self, now: SystemTime) -> JwkSet {
        let s = self.read();
        let mut keys = vec![s.es256.jwk.clone(), s.rs256.jwk.clone()];
        keys.extend(
            s.retired
                .iter()
                .filter(|(_, published, _)| *published > now)
                .map(|(k, _, _)| k.jwk.clone()),
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
                    .find(|(k, _, accepted)| k.kid == kid && *accepted > now)
                    .map(|(k, _, _)| k.clone())
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
            Duration::from_secs(3600),
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
        // Unpublished, but its own tokens are still accepted for a while.
        assert!(store.find(&old, t0 + Duration::from_secs(600)).is_some());
        assert!(store.find(&old, t0 + Duration::from_secs(3600)).is_none());
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
