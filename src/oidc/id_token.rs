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
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub company: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
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
            if matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) {
                continue;
            }
            let kind = match &jwk.algorithm {
                AlgorithmParameters::EllipticCurve(_) => KeyKind::Ec,
                AlgorithmParameters::RSA(_) => KeyKind::Rsa,
                AlgorithmParameters::OctetKeyPair(_) => KeyKind::Okp,
                // Symmetric keys, and whatever a future JWK type is: not for us.
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
            let alg = jwk.common.key_algorithm.and_then(|a| match a {
                KeyAlgorithm::ES256 => Some(Algorithm::ES256),
                KeyAlgorithm::ES384 => Some(Algorithm::ES384),
                KeyAlgorithm::RS256 => Some(Algorithm::RS256),
                KeyAlgorithm::RS384 => Some(Algorithm::RS384),
                KeyAlgorithm::RS512 => Some(Algorithm::RS512),
                KeyAlgorithm::PS256 => Some(Algorithm::PS256),
                KeyAlgorithm::PS384 => Some(Algorithm::PS384),
                KeyAlgorithm::PS512 => Some(Algorithm::PS512),
                KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
                _ => None,
            });
            match &jwk.common.key_id {
                Some(kid) => {
                    out.keys.insert(kid.clone(), (key, kind, alg));
                }
                None => out.anonymous.push((key, kind, alg)),
            }
        }
        out
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
    if token.len() > 16 * 1024 || token.split('.').count() != 3 {
        return Err(TokenRejected::Malformed);
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

/// Validates an ID token completely; returns its claims.
pub fn validate_id_token(
    token: &str,
    keys: &ProviderKeys,
    expected: &Expected<'_>,
    now: SystemTime,
) -> Result<IdClaims, TokenRejected> {
    let (_, payload) = verify_signature(token, keys, expected.algorithms)?;
    let aud: WithAud = serde_json::from_value(payload.clone()).map_err(|_| TokenRejected::Audience)?;
    let claims: IdClaims = serde_json::from_value(payload).map_err(|_| TokenRejected::Malformed)?;
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
    use crate::idp::keys::SigningKey;
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
            issuer: ISS,
            client_id: CLIENT,
            nonce: Some("n-1"),
            algorithms: &[Algorithm::ES256, Algorithm::RS256],
            leeway: 30,
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
            assert_eq!(c.groups, vec!["g"]);
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
}
