//! ID token validation for the relying party (OpenID Connect Core §3.1.3.7),
//! as a pure function of the token, the provider's keys, what the login
//! expected, and the time. Keys come only from the provider's JWKS: `jwk`,
//! `jku`, `x5u` and `x5c` headers are never used, `none` and HMAC are never
//! accepted, and an algorithm must be on the allow-list and match its key.

use std::collections::HashMap;
use std::time::SystemTime;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

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

/// The provider's keys, by `kid`, each with the algorithm family it may be
/// used for.
#[derive(Clone, Default)]
pub struct ProviderKeys {
    keys: HashMap<String, (DecodingKey, KeyKind, Option<Algorithm>)>,
    /// Keys without a kid, tried when a token names none.
    anonymous: Vec<(DecodingKey, KeyKind, Option<Algorithm>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Ec,
    Rsa,
    Okp,
}

fn kind_of(alg: Algorithm) -> Option<KeyKind> {
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

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::SigningKey;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use serde_json::{Value, json};
    use std::time::Duration;

    const ISS: &str = "https://idp.example";
    const CLIENT: &str = "unigate";
    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn good_claims() -> Value {
        json!({
            "iss": ISS, "sub": "user-1", "aud": CLIENT, "azp": CLIENT,
            "exp": NOW + 300, "iat": NOW - 10, "auth_time": NOW - 10,
            "nonce": "n-1", "sid": "s-1", "email": "a@example.com", "groups": ["g"]
        })
    }

    fn with(mut v: Value, k: &str, x: Value) -> Value {
        if x.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = x;
        }
        v
    }

    struct Fixture {
        es: SigningKey,
        rs: SigningKey,
        keys: ProviderKeys,
    }

    fn fixture() -> Fixture {
        let es = SigningKey::generate(Algorithm::ES256).unwrap();
        let rs = SigningKey::generate(Algorithm::RS256).unwrap();
        let keys = ProviderKeys::from_jwks(&JwkSet {
            keys: vec![es.jwk.clone(), rs.jwk.clone()],
        });
        Fixture { es, rs, keys }
    }

    fn expected<'a>() -> Expected<'a> {
        Expected {
            nonce: Some("n-1"),
            max_iat_age: Some(600),
            ..Expected::new(ISS, CLIENT, &[Algorithm::ES256, Algorithm::RS256], 30)
        }
    }

    fn unsigned(header: Value, claims: &Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string()),
            B64.encode(sig)
        )
    }

    #[test]
    fn accepts_good_tokens_with_either_algorithm() {
        let f = fixture();
        for key in [&f.es, &f.rs] {
            let t = key.sign("JWT", &good_claims()).unwrap();
            let c = validate_id_token(&t, &f.keys, &expected(), now()).unwrap();
            assert_eq!(c.sub, "user-1");
            assert_eq!(c.all["groups"], json!(["g"]));
        }
        // Several audiences with azp = this client are fine.
        let t =
            f.es.sign("JWT", &with(good_claims(), "aud", json!([CLIENT, "other"])))
                .unwrap();
        assert!(validate_id_token(&t, &f.keys, &expected(), now()).is_ok());
        // Refreshed tokens: no nonce expected.
        let t = f.es.sign("JWT", &with(good_claims(), "nonce", Value::Null)).unwrap();
        let mut e = expected();
        e.nonce = None;
        assert!(validate_id_token(&t, &f.keys, &e, now()).is_ok());
    }

    #[test]
    fn rejection_table() {
        let f = fixture();
        let sign = |c: Value| f.es.sign("JWT", &c).unwrap();
        let cases: Vec<(&str, String, TokenRejected)> = vec![
            (
                "wrong iss",
                sign(with(good_claims(), "iss", json!("https://evil.example"))),
                TokenRejected::Issuer,
            ),
            (
                "iss with trailing slash",
                sign(with(good_claims(), "iss", json!(format!("{ISS}/")))),
                TokenRejected::Issuer,
            ),
            (
                "wrong aud",
                sign(with(good_claims(), "aud", json!("someone-else"))),
                TokenRejected::Audience,
            ),
            (
                "missing aud",
                sign(with(good_claims(), "aud", Value::Null)),
                TokenRejected::Audience,
            ),
            (
                "azp of another client",
                sign(with(good_claims(), "azp", json!("other"))),
                TokenRejected::AuthorizedParty,
            ),
            (
                "several audiences, no azp",
                sign(with(
                    with(good_claims(), "aud", json!([CLIENT, "other"])),
                    "azp",
                    Value::Null,
                )),
                TokenRejected::AuthorizedParty,
            ),
            (
                "expired",
                sign(with(good_claims(), "exp", json!(NOW - 31))),
                TokenRejected::Expired,
            ),
            (
                "iat in the future",
                sign(with(good_claims(), "iat", json!(NOW + 120))),
                TokenRejected::IssuedInFuture,
            ),
            (
                "nbf in the future",
                sign(with(good_claims(), "nbf", json!(NOW + 120))),
                TokenRejected::NotYetValid,
            ),
            (
                "nonce mismatch",
                sign(with(good_claims(), "nonce", json!("n-2"))),
                TokenRejected::Nonce,
            ),
            (
                "nonce missing",
                sign(with(good_claims(), "nonce", Value::Null)),
                TokenRejected::Nonce,
            ),
            (
                "missing sub",
                sign(with(good_claims(), "sub", Value::Null)),
                TokenRejected::Malformed,
            ),
            (
                "empty sub",
                sign(with(good_claims(), "sub", json!(""))),
                TokenRejected::Subject,
            ),
            (
                "alg none",
                unsigned(json!({"alg": "none", "typ": "JWT"}), &good_claims(), b""),
                TokenRejected::Malformed,
            ),
            ("garbage", "a.b".to_string(), TokenRejected::Malformed),
        ];
        for (name, token, want) in cases {
            assert_eq!(
                validate_id_token(&token, &f.keys, &expected(), now()),
                Err(want),
                "{name}"
            );
        }
    }

    #[test]
    fn hmac_tokens_are_refused() {
        let f = fixture();
        let hs = |secret: &[u8], kid: Option<String>| {
            let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
            h.kid = kid;
            jsonwebtoken::encode(&h, &good_claims(), &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap()
        };
        // HS256 keyed with the client secret.
        let t = hs(b"the-client-secret", None);
        assert_eq!(
            validate_id_token(&t, &f.keys, &expected(), now()),
            Err(TokenRejected::Algorithm(Algorithm::HS256))
        );
        // Even if HS256 were on the allow-list, RS/HS confusion (the RSA
        // public key used as an HMAC secret) finds no key of that kind.
        let n = match &f.rs.jwk.algorithm {
            AlgorithmParameters::RSA(r) => r.n.clone(),
            _ => unreachable!(),
        };
        let t = hs(n.as_bytes(), Some(f.rs.kid.clone()));
        let mut e = expected();
        let algs = [Algorithm::RS256, Algorithm::HS256];
        e.algorithms = &algs;
        assert_eq!(
            validate_id_token(&t, &f.keys, &e, now()),
            Err(TokenRejected::Algorithm(Algorithm::HS256))
        );
        // An RS256 header over the EC key's kid: the key does not fit.
        let t = f.rs.sign("JWT", &good_claims()).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let forged_header = json!({"alg": "RS256", "kid": f.es.kid});
        let forged = format!("{}.{}.{}", B64.encode(forged_header.to_string()), parts[1], parts[2]);
        assert_eq!(
            validate_id_token(&forged, &f.keys, &expected(), now()),
            Err(TokenRejected::KeyMismatch)
        );
    }

    #[test]
    fn embedded_keys_are_ignored_and_unknown_kid_passes_after_rotation() {
        let f = fixture();
        let attacker = SigningKey::generate(Algorithm::ES256).unwrap();
        // A token signed by an attacker's key that carries that key in `jwk`:
        // the header key is not used, so the kid is unknown.
        let t = attacker.sign("JWT", &good_claims()).unwrap();
        assert_eq!(
            validate_id_token(&t, &f.keys, &expected(), now()),
            Err(TokenRejected::UnknownKey)
        );
        // After the provider rotates to that key (JWKS re-fetched), it verifies.
        let rotated = ProviderKeys::from_jwks(&JwkSet {
            keys: vec![f.es.jwk.clone(), attacker.jwk.clone()],
        });
        assert!(validate_id_token(&t, &rotated, &expected(), now()).is_ok());
        // A signature by another key under a known kid is a bad signature.
        let parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let header = json!({"alg": "ES256", "kid": f.es.kid, "jwk": attacker.jwk});
        let forged = format!("{}.{}.{}", B64.encode(header.to_string()), parts[1], parts[2]);
        assert_eq!(
            validate_id_token(&forged, &f.keys, &expected(), now()),
            Err(TokenRejected::Signature)
        );
    }

    /// A token signed by `key` with `header` as its JOSE header.
    fn with_header(key: &SigningKey, header: Value, claims: &Value) -> String {
        key.sign_with_header(&header, claims).unwrap()
    }

    #[test]
    fn header_rules_crit_and_typ() {
        let f = fixture();
        let c = good_claims();
        let ok = |h: Value| validate_id_token(&with_header(&f.es, h, &c), &f.keys, &expected(), now());
        assert!(ok(json!({"alg": "ES256", "kid": f.es.kid})).is_ok(), "no typ");
        assert!(ok(json!({"alg": "ES256", "kid": f.es.kid, "typ": "jwt"})).is_ok());
        assert!(ok(json!({"alg": "ES256", "kid": f.es.kid, "typ": "application/JWT"})).is_ok());
        for typ in ["logout+jwt", "at+jwt", "application/at+jwt", "secevent+jwt", "JOSE"] {
            assert_eq!(
                ok(json!({"alg": "ES256", "kid": f.es.kid, "typ": typ})),
                Err(TokenRejected::Type),
                "{typ}"
            );
        }
        for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("x")] {
            assert_eq!(
                ok(json!({"alg": "ES256", "kid": f.es.kid, "crit": crit, "exp": 1})),
                Err(TokenRejected::CriticalHeader),
                "{crit}"
            );
        }
    }

    #[test]
    fn iat_age_hashes_and_auth_time() {
        let f = fixture();
        let at = "the-access-token";
        let code = "the-code";
        let claims = with(
            with(good_claims(), "at_hash", json!(left_half_hash(Algorithm::ES256, at))),
            "c_hash",
            json!(left_half_hash(Algorithm::ES256, code)),
        );
        let sign = |c: &Value| f.es.sign("JWT", c).unwrap();
        let e = Expected {
            access_token: Some(at),
            code: Some(code),
            max_age: Some(300),
            ..expected()
        };
        assert!(validate_id_token(&sign(&claims), &f.keys, &e, now()).is_ok());
        // With RS256 the hash is also SHA-256; the RSA key signs here.
        let rs_claims = with(claims.clone(), "at_hash", json!(left_half_hash(Algorithm::RS256, at)));
        assert!(validate_id_token(&f.rs.sign("JWT", &rs_claims).unwrap(), &f.keys, &e, now()).is_ok());
        let cases: Vec<(&str, Value, TokenRejected)> = vec![
            (
                "iat older than max_id_token_age and leeway",
                with(claims.clone(), "iat", json!(NOW - 600 - 31)),
                TokenRejected::TooOld,
            ),
            (
                "at_hash of another access token",
                with(
                    claims.clone(),
                    "at_hash",
                    json!(left_half_hash(Algorithm::ES256, "other")),
                ),
                TokenRejected::AccessTokenHash,
            ),
            (
                "at_hash with the wrong hash length",
                with(claims.clone(), "at_hash", json!(left_half_hash(Algorithm::ES384, at))),
                TokenRejected::AccessTokenHash,
            ),
            (
                "c_hash of another code",
                with(
                    claims.clone(),
                    "c_hash",
                    json!(left_half_hash(Algorithm::ES256, "other")),
                ),
                TokenRejected::CodeHash,
            ),
            (
                "max_age asked, auth_time missing",
                with(claims.clone(), "auth_time", Value::Null),
                TokenRejected::AuthTimeMissing,
            ),
            (
                "auth_time older than max_age",
                with(claims.clone(), "auth_time", json!(NOW - 300 - 31)),
                TokenRejected::AuthTooOld,
            ),
        ];
        for (name, c, want) in cases {
            assert_eq!(validate_id_token(&sign(&c), &f.keys, &e, now()), Err(want), "{name}");
        }
        // Within the bounds (leeway included), and hashes absent: fine.
        let edge = with(
            with(claims.clone(), "iat", json!(NOW - 630)),
            "auth_time",
            json!(NOW - 330),
        );
        assert!(validate_id_token(&sign(&edge), &f.keys, &e, now()).is_ok());
        let bare = with(with(claims, "at_hash", Value::Null), "c_hash", Value::Null);
        assert!(validate_id_token(&sign(&bare), &f.keys, &e, now()).is_ok());
        // Without max_age asked, a missing auth_time is fine.
        let no_auth_time = with(good_claims(), "auth_time", Value::Null);
        assert!(validate_id_token(&sign(&no_auth_time), &f.keys, &expected(), now()).is_ok());
    }

    #[test]
    fn jwks_entries_that_cannot_be_used_are_skipped_not_fatal() {
        let f = fixture();
        let es = serde_json::to_value(&f.es.jwk).unwrap();
        let rs = serde_json::to_value(&f.rs.jwk).unwrap();
        let mut enc = rs.clone();
        enc["kid"] = json!("enc-key");
        enc["use"] = json!("enc");
        let mut wrap = es.clone();
        wrap["kid"] = json!("wrap-key");
        wrap["key_ops"] = json!(["wrapKey"]);
        let doc = json!({"keys": [
            {"kty": "AKP", "alg": "ML-DSA-44", "kid": "pq", "pub": "AAAA"},
            {"kty": "EC", "crv": "P-256", "kid": "broken", "x": "!!", "y": "??"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kid": "no-kty"},
            "not even an object",
            enc,
            wrap,
            es,
            rs,
        ]});
        let (keys, skipped) = ProviderKeys::from_json(&doc).unwrap();
        assert_eq!(skipped, 7);
        assert_eq!(keys.len(), 2);
        assert!(keys.has_kid(&f.es.kid) && keys.has_kid(&f.rs.kid));
        assert!(!keys.has_kid("enc-key") && !keys.has_kid("wrap-key"));
        let t = f.es.sign("JWT", &good_claims()).unwrap();
        assert!(validate_id_token(&t, &keys, &expected(), now()).is_ok());
        assert!(ProviderKeys::from_json(&json!({"nokeys": []})).is_none());
    }
}
