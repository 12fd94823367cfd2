//! Logout token validation (OpenID Connect Back-Channel Logout 1.0 §2.6),
//! as a pure function of the token, the provider's keys, the expectations
//! and the time: signature and algorithm as for ID tokens, `iss`, `aud`,
//! `iat`, `exp`, `jti`, the `events` object, no `nonce`, and `sub` or `sid`.
//! Replays (the same `jti`) are the caller's to refuse.

use std::time::SystemTime;

use serde_json::Value;

use super::id_token::{Expected, ProviderKeys, TokenRejected, verify_signature};
use super::unix;

/// The event a logout token must carry.
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How old a logout token may be when it arrives.
pub const MAX_AGE_SECS: u64 = 600;

/// Why a logout token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenRejected {
    #[error(transparent)]
    Token(#[from] TokenRejected),
    #[error("typ is not logout+jwt")]
    Type,
    #[error("iat is missing, in the future, or too old")]
    IssuedAt,
    #[error("exp is missing")]
    NoExpiry,
    #[error("jti is missing")]
    NoJti,
    #[error("events is missing, not an object, or lacks the back-channel logout event")]
    Events,
    #[error("a logout token must not carry a nonce")]
    Nonce,
    #[error("neither sub nor sid")]
    NoSubject,
    #[error("{0} is not a non-empty string of at most 1024 bytes")]
    BadClaim(&'static str),
    #[error("jti was seen before (replay)")]
    Replay,
    /// Not the token's fault: the provider's keys cannot be fetched now.
    #[error("the identity provider's signing keys cannot be fetched now; retry later")]
    KeysUnavailable,
}

/// What a valid logout token says to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    pub exp: u64,
}

/// A string claim: absent, or a non-empty string of at most 1024 bytes.
/// Anything else refuses the token (a `sid` that cannot be used must not
/// widen the logout to every session of the `sub`).
fn string(v: &Value, k: &'static str) -> Result<Option<String>, LogoutTokenRejected> {
    match v.get(k) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 => Ok(Some(s.clone())),
        Some(_) => Err(LogoutTokenRejected::BadClaim(k)),
    }
}

/// Validates a logout token completely (the `nonce` of `expected` is ignored).
pub fn validate_logout_token(
    token: &str,
    keys: &ProviderKeys,
    expected: &Expected<'_>,
    now: SystemTime,
) -> Result<LogoutClaims, LogoutTokenRejected> {
    let (header, c) = verify_signature(token, keys, expected.algorithms)?;
    // §2.4: `typ` is recommended to be `logout+jwt`; when it says anything
    // else (an ID token's `JWT`…) the token is something else.
    if let Some(typ) = header.typ.as_deref()
        && !typ.eq_ignore_ascii_case("logout+jwt")
        && !typ.eq_ignore_ascii_case("application/logout+jwt")
    {
        return Err(LogoutTokenRejected::Type);
    }
    if c.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(TokenRejected::Issuer.into());
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == expected.client_id,
        Some(Value::Array(v)) => v.iter().any(|a| a.as_str() == Some(expected.client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenRejected::Audience.into());
    }
    let now = unix(now);
    let iat = c
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(LogoutTokenRejected::IssuedAt)?;
    if iat > now + expected.leeway || iat + MAX_AGE_SECS + expected.leeway < now {
        return Err(LogoutTokenRejected::IssuedAt);
    }
    let exp = c
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(LogoutTokenRejected::NoExpiry)?;
    if exp + expected.leeway <= now {
        return Err(TokenRejected::Expired.into());
    }
    let jti = string(&c, "jti")?.ok_or(LogoutTokenRejected::NoJti)?;
    let event_ok = c
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(BACKCHANNEL_EVENT))
        .is_some_and(Value::is_object);
    if !event_ok {
        return Err(LogoutTokenRejected::Events);
    }
    if c.get("nonce").is_some() {
        return Err(LogoutTokenRejected::Nonce);
    }
    let (sub, sid) = (string(&c, "sub")?, string(&c, "sid")?);
    if sub.is_none() && sid.is_none() {
        return Err(LogoutTokenRejected::NoSubject);
    }
    Ok(LogoutClaims { sub, sid, jti, exp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::SigningKey;
    use crate::oidc::test_support::{CLIENT, ISS, NOW, now, with};
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "iss": ISS, "aud": CLIENT, "iat": NOW - 5, "exp": NOW + 120, "jti": "j-1",
            "sub": "user-1", "sid": "s-1",
            "events": { BACKCHANNEL_EVENT: {} }
        })
    }

    fn check(key: &SigningKey, typ: &str, claims: &Value) -> Result<LogoutClaims, LogoutTokenRejected> {
        let token = key.sign(typ, claims).unwrap();
        let set = jsonwebtoken::jwk::JwkSet {
            keys: vec![key.jwk.clone()],
        };
        let keys = ProviderKeys::from_jwks(&set);
        let expected = Expected::new(ISS, CLIENT, &[Algorithm::ES256, Algorithm::RS256], 60);
        validate_logout_token(&token, &keys, &expected, now())
    }

    fn edit(k: &str, v: Value) -> Value {
        with(good(), k, v)
    }

    #[test]
    fn every_rule_of_the_spec() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let ok = check(&key, "logout+jwt", &good()).unwrap();
        assert_eq!(ok.sid.as_deref(), Some("s-1"));
        assert_eq!(ok.jti, "j-1");
        use LogoutTokenRejected as R;
        let cases: Vec<(Value, R)> = vec![
            (
                edit("iss", json!("https://evil.example")),
                R::Token(TokenRejected::Issuer),
            ),
            (edit("aud", json!("someone-else")), R::Token(TokenRejected::Audience)),
            (edit("exp", json!(NOW - 120)), R::Token(TokenRejected::Expired)),
            (edit("exp", Value::Null), R::NoExpiry),
            (edit("iat", json!(NOW + 600)), R::IssuedAt),
            (edit("iat", json!(NOW - 3600)), R::IssuedAt),
            (edit("jti", Value::Null), R::NoJti),
            (edit("events", Value::Null), R::Events),
            (edit("events", json!("logout")), R::Events),
            (edit("events", json!({ BACKCHANNEL_EVENT: "yes" })), R::Events),
            (edit("events", json!({ "other": {} })), R::Events),
            (edit("nonce", json!("n")), R::Nonce),
            (edit("sid", json!("s".repeat(1025))), R::BadClaim("sid")),
            (edit("sid", json!("")), R::BadClaim("sid")),
            (edit("sub", json!(42)), R::BadClaim("sub")),
            (edit("jti", json!(["j"])), R::BadClaim("jti")),
        ];
        for (claims, want) in cases {
            assert_eq!(check(&key, "logout+jwt", &claims), Err(want), "{claims}");
        }
        let mut neither = good();
        neither.as_object_mut().unwrap().remove("sub");
        neither.as_object_mut().unwrap().remove("sid");
        assert_eq!(check(&key, "logout+jwt", &neither), Err(R::NoSubject));
        // sid alone and sub alone are enough.
        assert!(check(&key, "logout+jwt", &edit("sub", Value::Null)).is_ok());
        assert!(check(&key, "logout+jwt", &edit("sid", Value::Null)).is_ok());
        // An ID token's type is not a logout token's.
        assert_eq!(check(&key, "JWT", &good()), Err(R::Type));
        // A key the provider does not publish.
        let other = SigningKey::generate(Algorithm::ES256).unwrap();
        let token = other.sign("logout+jwt", &good()).unwrap();
        let set = jsonwebtoken::jwk::JwkSet {
            keys: vec![key.jwk.clone()],
        };
        let expected = Expected::new(ISS, CLIENT, &[Algorithm::ES256], 60);
        assert!(validate_logout_token(&token, &ProviderKeys::from_jwks(&set), &expected, now()).is_err());
    }
}
