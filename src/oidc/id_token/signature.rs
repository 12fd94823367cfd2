//! A JWT's header, key and signature, checked against the provider's keys
//! and the algorithm allow-list; shared by ID, access and logout tokens.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::TokenRejected;
use super::jwks::{KeyKind, ProviderKeys, kind_of};

/// Algorithms a provider may sign ID tokens with: asymmetric only.
pub const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// Checks a JWT's header, key and signature; returns its payload as JSON.
/// Shared by ID tokens, access tokens and logout tokens.
pub fn verify_signature(
    token: &str,
    keys: &ProviderKeys,
    algorithms: &[Algorithm],
) -> Result<(jsonwebtoken::Header, serde_json::Value), TokenRejected> {
    if token.len() > 64 * 1024 || token.split('.').count() != 3 {
        return Err(TokenRejected::Malformed);
    }
    // RFC 7515 §4.1.11: a `crit` extension must be understood; unigate
    // implements none, so any `crit` refuses the token.
    if raw_header(token)?.get("crit").is_some() {
        return Err(TokenRejected::CriticalHeader);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejected::Malformed)?;
    let alg = header.alg;
    if !algorithms.contains(&alg) || !ASYMMETRIC.contains(&alg) {
        return Err(TokenRejected::Algorithm(alg));
    }
    let kind = kind_of(alg).ok_or(TokenRejected::Algorithm(alg))?;
    fn fits(entry: &(DecodingKey, KeyKind, Option<Algorithm>), kind: KeyKind, alg: Algorithm) -> Option<&DecodingKey> {
        let (k, key_kind, key_alg) = entry;
        (*key_kind == kind && key_alg.is_none_or(|a| a == alg)).then_some(k)
    }
    let candidates: Vec<&DecodingKey> = match &header.kid {
        Some(kid) => {
            let entry = keys.keys.get(kid).ok_or(TokenRejected::UnknownKey)?;
            vec![fits(entry, kind, alg).ok_or(TokenRejected::KeyMismatch)?]
        }
        None => keys
            .anonymous
            .iter()
            .chain(keys.keys.values())
            .filter_map(|e| fits(e, kind, alg))
            .collect(),
    };
    if candidates.is_empty() {
        return Err(TokenRejected::UnknownKey);
    }
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    for key in candidates {
        if let Ok(data) = jsonwebtoken::decode::<serde_json::Value>(token, key, &v) {
            return Ok((data.header, data.claims));
        }
    }
    Err(TokenRejected::Signature)
}

/// The JOSE header as JSON (for what `jsonwebtoken::Header` does not keep).
fn raw_header(token: &str) -> Result<serde_json::Value, TokenRejected> {
    use base64::Engine;
    let first = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first)
        .map_err(|_| TokenRejected::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenRejected::Malformed)
}
