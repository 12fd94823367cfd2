//! A signing key and its public JWK: ES256 or RS256, parsed once so that
//! signing does no key parsing; the `kid` is the key's RFC 7638
//! thumbprint. Used by the embedded IdP (tokens) and by the gateway (the
//! identity assertion).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters, EllipticCurveKeyType, Jwk,
    KeyAlgorithm, PublicKeyUse, RSAKeyParameters, RSAKeyType, ThumbprintHash,
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

#[cfg(test)]
mod tests {
    use super::*;

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
