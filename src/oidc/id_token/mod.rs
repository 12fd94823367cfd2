//! ID token validation for the relying party (OpenID Connect Core §3.1.3.7),
//! as a pure function of the token, the provider's keys, what the login
//! expected, and the time. Keys come only from the provider's JWKS: `jwk`,
//! `jku`, `x5u` and `x5c` headers are never used, `none` and HMAC are never
//! accepted, and an algorithm must be on the allow-list and match its key.
//!
//! The shared parts every token check builds on are in `signature` (the
//! algorithm allow-list and the signature check, also used for access and
//! logout tokens) and `jwks` (the provider's keys); the tests in `tests`.

mod jwks;
mod signature;
#[cfg(test)]
mod tests;

use std::time::SystemTime;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::unix;
pub use jwks::ProviderKeys;
pub use signature::{ASYMMETRIC, verify_signature};

/// Why a token was refused. Logged, never shown with the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm {0:?} is not allowed")]
    Algorithm(Algorithm),
    #[error("no published key with this kid")]
    UnknownKey,
    #[error("key does not fit the algorithm")]
    KeyMismatch,
    #[error("bad signature")]
    Signature,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("azp is missing or names another client")]
    AuthorizedParty,
    #[error("expired")]
    Expired,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("not valid yet")]
    NotYetValid,
    #[error("nonce mismatch")]
    Nonce,
    #[error("sub is missing")]
    Subject,
    #[error("the header names critical extensions (`crit`) unigate does not implement")]
    CriticalHeader,
    #[error("`typ` says this is not an ID token")]
    Type,
    #[error("issued longer ago than max_id_token_age")]
    TooOld,
    #[error("at_hash does not match the access token")]
    AccessTokenHash,
    #[error("c_hash does not match the code")]
    CodeHash,
    #[error("auth_time is missing but max_age was asked for")]
    AuthTimeMissing,
    #[error("the user authenticated longer ago than max_age allows")]
    AuthTooOld,
}

/// What the login that asked for this token expects of it.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce sent with the authorization request; `None` skips the check
    /// (refreshed ID tokens carry none).
    pub nonce: Option<&'a str>,
    /// Allowed algorithms: the provider's advertised ones ∩ [`ASYMMETRIC`].
    pub algorithms: &'a [Algorithm],
    /// Clock skew allowed, in seconds.
    pub leeway: u64,
    /// Oldest `iat` accepted, in seconds before now (beyond `leeway`);
    /// `None`: no bound (logout tokens have their own).
    pub max_iat_age: Option<u64>,
    /// The access token issued with it: `at_hash`, when present, must match.
    pub access_token: Option<&'a str>,
    /// The code it was redeemed for: `c_hash`, when present, must match.
    pub code: Option<&'a str>,
    /// The `max_age` sent with the authorization request: `auth_time` is
    /// then required and must be that recent.
    pub max_age: Option<u64>,
}

impl<'a> Expected<'a> {
    /// The base checks only (issuer, audience, algorithms, times).
    pub fn new(issuer: &'a str, client_id: &'a str, algorithms: &'a [Algorithm], leeway: u64) -> Self {
        Expected {
            issuer,
            client_id,
            nonce: None,
            algorithms,
            leeway,
            max_iat_age: None,
            access_token: None,
            code: None,
            max_age: None,
        }
    }
}

/// The claims unigate uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    #[serde(default)]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub auth_time: Option<u64>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub sid: Option<String>,
    #[serde(default)]
    pub at_hash: Option<String>,
    #[serde(default)]
    pub c_hash: Option<String>,
    /// Every claim, for the claim mapping (`claims`).
    #[serde(skip)]
    pub all: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct WithAud {
    aud: Audience,
}

/// `at_hash` / `c_hash` (OIDC Core §3.1.3.6, §3.3.2.11): the left half of
/// the hash of `value` with the hash of the token's algorithm.
pub fn left_half_hash(alg: Algorithm, value: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest: Vec<u8> = match alg {
        Algorithm::ES384 | Algorithm::RS384 | Algorithm::PS384 => sha2::Sha384::digest(value).to_vec(),
        // Ed25519: SHA-512 (OIDC Core errata).
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => sha2::Sha512::digest(value).to_vec(),
        _ => sha2::Sha256::digest(value).to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

fn hash_matches(alg: Algorithm, claimed: &str, value: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(left_half_hash(alg, value).as_bytes().ct_eq(claimed.as_bytes()))
}

/// Validates an ID token completely; returns its claims.
pub fn validate_id_token(
    token: &str,
    keys: &ProviderKeys,
    expected: &Expected<'_>,
    now: SystemTime,
) -> Result<IdClaims, TokenRejected> {
    let (header, payload) = verify_signature(token, keys, expected.algorithms)?;
    // RFC 8725 §3.11: an explicitly typed token of another kind (a logout
    // token, an access token) is not an ID token.
    if header
        .typ
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("JWT") && !t.eq_ignore_ascii_case("application/jwt"))
    {
        return Err(TokenRejected::Type);
    }
    let aud: WithAud = serde_json::from_value(payload.clone()).map_err(|_| TokenRejected::Audience)?;
    let mut claims: IdClaims = serde_json::from_value(payload.clone()).map_err(|_| TokenRejected::Malformed)?;
    claims.all = payload;
    if claims.iss != expected.issuer {
        return Err(TokenRejected::Issuer);
    }
    let audiences = match aud.aud {
        Audience::One(a) => vec![a],
        Audience::Many(v) => v,
    };
    if !audiences.iter().any(|a| a == expected.client_id) {
        return Err(TokenRejected::Audience);
    }
    // §3.1.3.7 items 4 and 5: with several audiences azp must be present,
    // and when present it must be this client.
    match &claims.azp {
        Some(azp) if azp != expected.client_id => return Err(TokenRejected::AuthorizedParty),
        None if audiences.len() > 1 => return Err(TokenRejected::AuthorizedParty),
        _ => {}
    }
    let now = unix(now);
    if claims.exp + expected.leeway <= now {
        return Err(TokenRejected::Expired);
    }
    if claims.iat > now + expected.leeway {
        return Err(TokenRejected::IssuedInFuture);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + expected.leeway) {
        return Err(TokenRejected::NotYetValid);
    }
    if expected
        .max_iat_age
        .is_some_and(|age| claims.iat + age + expected.leeway < now)
    {
        return Err(TokenRejected::TooOld);
    }
    if let Some(max_age) = expected.max_age {
        let auth_time = claims.auth_time.ok_or(TokenRejected::AuthTimeMissing)?;
        if auth_time + max_age + expected.leeway < now {
            return Err(TokenRejected::AuthTooOld);
        }
    }
    if let (Some(claimed), Some(at)) = (&claims.at_hash, expected.access_token)
        && !hash_matches(header.alg, claimed, at)
    {
        return Err(TokenRejected::AccessTokenHash);
    }
    if let (Some(claimed), Some(code)) = (&claims.c_hash, expected.code)
        && !hash_matches(header.alg, claimed, code)
    {
        return Err(TokenRejected::CodeHash);
    }
    if let Some(nonce) = expected.nonce {
        use subtle::ConstantTimeEq;
        let ok = claims
            .nonce
            .as_deref()
            .is_some_and(|n| bool::from(n.as_bytes().ct_eq(nonce.as_bytes())));
        if !ok {
            return Err(TokenRejected::Nonce);
        }
    }
    if claims.sub.is_empty() || claims.sub.len() > 255 {
        return Err(TokenRejected::Subject);
    }
    Ok(claims)
}
