//! Bearer access tokens for the resource-server side of unigate, as pure
//! functions of the token (or the IdP's introspection answer), the
//! provider's keys, what this deployment expects, and the time.
//!
//! A bearer is an access token for this deployment's API, never an ID token
//! (whose audience is the client) or a logout token:
//! - a JWT is accepted only as an RFC 9068 access token: `typ` `at+jwt`
//!   (or `application/at+jwt`), signed by the provider's JWKS keys with an
//!   allowed algorithm, exact `iss`, `aud` containing `api_audience`,
//!   `exp`/`nbf`/`iat` with leeway, `sub`, `client_id`, `jti`, no `events`
//!   or `nonce`, and a lifetime of at most [`MAX_LIFETIME_SECS`] (so a
//!   revocation marker kept that long outlives every token it refuses);
//! - anything not shaped like a JWT is opaque, and only the IdP can say
//!   what it is (RFC 7662 introspection): [`from_introspection`] reads its
//!   answer.

use std::time::SystemTime;

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::claims::{ClaimMap, Profile};
use super::id_token::{ProviderKeys, TokenRejected, verify_signature};
use super::unix;

/// The longest lifetime (`exp - iat`) of an accepted access token; bearer
/// revocation markers are kept at least this long (plus leeway).
pub const MAX_LIFETIME_SECS: u64 = 24 * 3600;

/// Longest token read at all.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a bearer token was refused. Logged, never shown with the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessRejected {
    #[error(transparent)]
    Token(#[from] TokenRejected),
    #[error("typ is not at+jwt: not an access token (an ID or logout token?)")]
    Type,
    #[error("a logout token or ID token claim (`{0}`) in an access token")]
    ForeignClaim(&'static str),
    #[error("no api_audience is configured: JWT bearer tokens are refused")]
    NoAudienceConfigured,
    #[error("claim `{0}` is missing or not valid")]
    Claim(&'static str),
    #[error("lifetime longer than allowed")]
    Lifetime,
    #[error("the identity provider says the token is not active")]
    Inactive,
    #[error("not a refreshable access token: token_type `{0}`")]
    TokenType(String),
}

/// What this deployment expects of a bearer token.
#[derive(Debug, Clone)]
pub struct AccessExpected<'a> {
    pub issuer: &'a str,
    /// `[identity_provider] api_audience`.
    pub api_audience: Option<&'a str>,
    /// The client id, the audience accepted in an introspection answer
    /// when no `api_audience` is configured.
    pub client_id: &'a str,
    pub algorithms: &'a [Algorithm],
    pub leeway: u64,
    /// Where the user's attributes are (`[identity_provider.claims]`).
    pub claims: &'a ClaimMap,
}

/// The claims of an accepted bearer token that unigate uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessClaims {
    pub sub: String,
    /// Unix seconds; `None` when an introspection answer names no expiry.
    pub exp: Option<u64>,
    /// `None` when an introspection answer names no issue time: then every
    /// revocation of its user refuses it.
    pub iat: Option<u64>,
    pub sid: Option<String>,
    /// When the user logged in (RFC 9068 `auth_time`), if the token says.
    pub auth_time: Option<u64>,
    /// The user's attributes, read with the deployment's claim mapping.
    pub profile: Profile,
}

/// Whether a bearer token is a JWT (three base64url segments, the first
/// two non-empty); anything else is opaque.
pub fn is_jwt_shaped(token: &str) -> bool {
    let b64url = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3 && !parts[0].is_empty() && !parts[1].is_empty() && parts.iter().all(|p| b64url(p))
}

fn audiences(v: &Value) -> Option<Vec<&str>> {
    match v {
        Value::String(a) => Some(vec![a.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

fn opt_string(c: &Value, k: &'static str) -> Result<Option<String>, AccessRejected> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 1024 => Ok(Some(s.clone())),
        Some(_) => Err(AccessRejected::Claim(k)),
    }
}

fn opt_time(c: &Value, k: &'static str) -> Result<Option<u64>, AccessRejected> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(AccessRejected::Claim(k)),
    }
}

/// The identity claims, the times checked (`exp` given, `nbf`, `iat`).
fn claims_of(c: &Value, now: u64, leeway: u64, map: &ClaimMap) -> Result<AccessClaims, AccessRejected> {
    let sub = match c.get("sub") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => s.clone(),
        _ => return Err(AccessRejected::Claim("sub")),
    };
    let exp = opt_time(c, "exp")?;
    let iat = opt_time(c, "iat")?;
    if exp.is_some_and(|exp| exp + leeway <= now) {
        return Err(TokenRejected::Expired.into());
    }
    if opt_time(c, "nbf")?.is_some_and(|nbf| nbf > now + leeway) {
        return Err(TokenRejected::NotYetValid.into());
    }
    if iat.is_some_and(|iat| iat > now + leeway) {
        return Err(TokenRejected::IssuedInFuture.into());
    }
    let profile = map.trusted(map.profile(c).map_err(|e| AccessRejected::Claim(e.attribute))?);
    Ok(AccessClaims {
        sub,
        exp,
        iat,
        sid: opt_string(c, "sid")?.filter(|s| !s.is_empty()),
        auth_time: opt_time(c, "auth_time")?,
        profile,
    })
}

/// Validates a JWT bearer token as an RFC 9068 access token for this
/// deployment's API.
pub fn validate_access_jwt(
    token: &str,
    keys: &ProviderKeys,
    expected: &AccessExpected<'_>,
    now: SystemTime,
) -> Result<AccessClaims, AccessRejected> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenRejected::Malformed.into());
    }
    // Before anything else: without an API audience no JWT can be ours.
    let Some(api_audience) = expected.api_audience else {
        return Err(AccessRejected::NoAudienceConfigured);
    };
    let (header, c) = verify_signature(token, keys, expected.algorithms)?;
    // RFC 9068 §2.1/§4: `typ` must be `at+jwt`; an ID token (`JWT` or
    // none) or a logout token (`logout+jwt`) is something else.
    let typ_ok = header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"));
    if !typ_ok {
        return Err(AccessRejected::Type);
    }
    for k in ["events", "nonce"] {
        if c.get(k).is_some() {
            return Err(AccessRejected::ForeignClaim(k));
        }
    }
    if c.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(TokenRejected::Issuer.into());
    }
    let aud = c.get("aud").and_then(audiences).ok_or(TokenRejected::Audience)?;
    if !aud.contains(&api_audience) {
        return Err(TokenRejected::Audience.into());
    }
    for k in ["client_id", "jti"] {
        if c.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(AccessRejected::Claim(k));
        }
    }
    let now = unix(now);
    let claims = claims_of(&c, now, expected.leeway, expected.claims)?;
    let (Some(exp), Some(iat)) = (claims.exp, claims.iat) else {
        return Err(AccessRejected::Claim(if claims.exp.is_none() { "exp" } else { "iat" }));
    };
    if exp.saturating_sub(iat) > MAX_LIFETIME_SECS {
        return Err(AccessRejected::Lifetime);
    }
    Ok(claims)
}

/// Reads an RFC 7662 introspection answer about an opaque bearer token:
/// `active` must be `true`, `aud` must contain this deployment's
/// `api_audience` (none configured: refused); `iss` and `exp`, when
/// present, must be this issuer and lie ahead; a token the answer calls
/// anything but an access token (`token_type`, Keycloak's `typ`) or that
/// carries an ID or logout token's claims is refused.
pub fn from_introspection(
    answer: &Value,
    expected: &AccessExpected<'_>,
    now: SystemTime,
) -> Result<AccessClaims, AccessRejected> {
    if answer.get("active") != Some(&Value::Bool(true)) {
        return Err(AccessRejected::Inactive);
    }
    // Without an API audience nothing tells an access token for this API
    // from an ID token (whose audience is the client) that a provider
    // will also introspect.
    let Some(api_audience) = expected.api_audience else {
        return Err(AccessRejected::NoAudienceConfigured);
    };
    match answer.get("token_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("access_token") => {}
        Some(t) => {
            let t = t.as_str().unwrap_or("?");
            return Err(AccessRejected::TokenType(t.chars().take(32).collect()));
        }
    }
    // Keycloak names the kind of token in `typ`: `Bearer`, `ID`, `Refresh`.
    match answer.get("typ") {
        None | Some(Value::Null) => {}
        Some(Value::String(t))
            if t.eq_ignore_ascii_case("bearer")
                || t.eq_ignore_ascii_case("at+jwt")
                || t.eq_ignore_ascii_case("application/at+jwt") => {}
        Some(_) => return Err(AccessRejected::Type),
    }
    for foreign in ["nonce", "events", "at_hash", "c_hash"] {
        if answer.get(foreign).is_some() {
            return Err(AccessRejected::ForeignClaim(foreign));
        }
    }
    if let Some(iss) = answer.get("iss")
        && iss.as_str() != Some(expected.issuer)
    {
        return Err(TokenRejected::Issuer.into());
    }
    // The audience must be named: an answer that names none could be
    // about a token for any audience.
    if !answer
        .get("aud")
        .and_then(audiences)
        .is_some_and(|a| a.contains(&api_audience))
    {
        return Err(TokenRejected::Audience.into());
    }
    let now = unix(now);
    let claims = claims_of(answer, now, expected.leeway, expected.claims)?;
    if let (Some(exp), Some(iat)) = (claims.exp, claims.iat)
        && exp.saturating_sub(iat) > MAX_LIFETIME_SECS
    {
        return Err(AccessRejected::Lifetime);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::SigningKey;
    use crate::oidc::test_support::{CLIENT, ISS, NOW, now, with};
    use jsonwebtoken::jwk::JwkSet;
    use serde_json::json;

    const API: &str = "https://api.example";

    fn good() -> Value {
        json!({
            "iss": ISS, "sub": "user-1", "aud": API, "client_id": "some-client",
            "exp": NOW + 300, "iat": NOW - 10, "jti": "j-1", "scope": "openid",
            "sid": "s-1", "email": "a@example.com", "groups": ["g"]
        })
    }

    static DEFAULT_MAP: std::sync::LazyLock<ClaimMap> = std::sync::LazyLock::new(ClaimMap::default);

    fn expected(api: Option<&str>) -> AccessExpected<'_> {
        AccessExpected {
            issuer: ISS,
            api_audience: api,
            client_id: CLIENT,
            algorithms: &[Algorithm::ES256, Algorithm::RS256],
            leeway: 30,
            claims: &DEFAULT_MAP,
        }
    }

    #[test]
    fn jwt_access_tokens_table() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let keys = ProviderKeys::from_jwks(&JwkSet {
            keys: vec![key.jwk.clone()],
        });
        let sign = |typ: &str, c: Value| key.sign(typ, &c).unwrap();
        let ok = validate_access_jwt(&sign("at+jwt", good()), &keys, &expected(Some(API)), now()).unwrap();
        assert_eq!(ok.sub, "user-1");
        assert_eq!(ok.profile.groups, Some(vec!["g".to_string()]));
        assert_eq!(ok.iat, Some(NOW - 10));
        for typ in ["application/at+jwt", "AT+JWT"] {
            assert!(validate_access_jwt(&sign(typ, good()), &keys, &expected(Some(API)), now()).is_ok());
        }
        let several = with(good(), "aud", json!(["other", API]));
        assert!(validate_access_jwt(&sign("at+jwt", several), &keys, &expected(Some(API)), now()).is_ok());
        let id_token = json!({
            "iss": ISS, "sub": "user-1", "aud": CLIENT, "azp": CLIENT, "exp": NOW + 300,
            "iat": NOW - 10, "nonce": "n", "sid": "s-1"
        });
        let logout = json!({
            "iss": ISS, "sub": "user-1", "aud": CLIENT, "exp": NOW + 120, "iat": NOW - 1,
            "jti": "j", "sid": "s-1", "events": {"http://schemas.openid.net/event/backchannel-logout": {}}
        });
        let cases: Vec<(&str, String, Option<&str>, AccessRejected)> = vec![
            (
                "an ID token",
                sign("JWT", id_token.clone()),
                Some(API),
                AccessRejected::Type,
            ),
            (
                "an ID token with the client as api_audience",
                sign("JWT", id_token.clone()),
                Some(CLIENT),
                AccessRejected::Type,
            ),
            ("no typ", sign("", good()), Some(API), AccessRejected::Type),
            (
                "a logout token",
                sign("logout+jwt", logout.clone()),
                Some(API),
                AccessRejected::Type,
            ),
            (
                "a logout token typed at+jwt",
                sign("at+jwt", with(logout, "aud", json!(API))),
                Some(API),
                AccessRejected::ForeignClaim("events"),
            ),
            (
                "nonce in an access token",
                sign("at+jwt", with(good(), "nonce", json!("n"))),
                Some(API),
                AccessRejected::ForeignClaim("nonce"),
            ),
            (
                "another audience",
                sign("at+jwt", with(good(), "aud", json!("https://other.example"))),
                Some(API),
                TokenRejected::Audience.into(),
            ),
            (
                "the client as audience",
                sign("at+jwt", with(good(), "aud", json!(CLIENT))),
                Some(API),
                TokenRejected::Audience.into(),
            ),
            (
                "no api_audience configured",
                sign("at+jwt", good()),
                None,
                AccessRejected::NoAudienceConfigured,
            ),
            (
                "wrong issuer",
                sign("at+jwt", with(good(), "iss", json!(format!("{ISS}/")))),
                Some(API),
                TokenRejected::Issuer.into(),
            ),
            (
                "expired",
                sign("at+jwt", with(good(), "exp", json!(NOW - 31))),
                Some(API),
                TokenRejected::Expired.into(),
            ),
            (
                "not yet valid",
                sign("at+jwt", with(good(), "nbf", json!(NOW + 120))),
                Some(API),
                TokenRejected::NotYetValid.into(),
            ),
            (
                "issued in the future",
                sign("at+jwt", with(good(), "iat", json!(NOW + 120))),
                Some(API),
                TokenRejected::IssuedInFuture.into(),
            ),
            (
                "no iat",
                sign("at+jwt", with(good(), "iat", Value::Null)),
                Some(API),
                AccessRejected::Claim("iat"),
            ),
            (
                "no exp",
                sign("at+jwt", with(good(), "exp", Value::Null)),
                Some(API),
                AccessRejected::Claim("exp"),
            ),
            (
                "no client_id",
                sign("at+jwt", with(good(), "client_id", Value::Null)),
                Some(API),
                AccessRejected::Claim("client_id"),
            ),
            (
                "no jti",
                sign("at+jwt", with(good(), "jti", Value::Null)),
                Some(API),
                AccessRejected::Claim("jti"),
            ),
            (
                "no sub",
                sign("at+jwt", with(good(), "sub", Value::Null)),
                Some(API),
                AccessRejected::Claim("sub"),
            ),
            (
                "a lifetime past the cap",
                sign("at+jwt", with(good(), "exp", json!(NOW + MAX_LIFETIME_SECS))),
                Some(API),
                AccessRejected::Lifetime,
            ),
            (
                "groups not strings",
                sign("at+jwt", with(good(), "groups", json!([1]))),
                Some(API),
                AccessRejected::Claim("groups"),
            ),
        ];
        for (name, token, api, want) in cases {
            assert_eq!(
                validate_access_jwt(&token, &keys, &expected(api), now()),
                Err(want),
                "{name}"
            );
        }
        // Signed by someone else: not the provider's key.
        let other = SigningKey::generate(Algorithm::ES256).unwrap();
        assert_eq!(
            validate_access_jwt(
                &other.sign("at+jwt", &good()).unwrap(),
                &keys,
                &expected(Some(API)),
                now()
            ),
            Err(TokenRejected::UnknownKey.into())
        );
    }

    #[test]
    fn introspection_answers_table() {
        let active = json!({"active": true, "sub": "user-1", "exp": NOW + 60, "iat": NOW - 5, "iss": ISS, "aud": API});
        assert_eq!(
            from_introspection(&active, &expected(Some(API)), now()).unwrap().exp,
            Some(NOW + 60)
        );
        // Without iss, exp and iat the IdP's word is enough; not without aud.
        let bare = json!({"active": true, "sub": "user-1", "aud": API, "token_type": "Bearer", "typ": "Bearer"});
        let c = from_introspection(&bare, &expected(Some(API)), now()).unwrap();
        assert_eq!((c.exp, c.iat), (None, None));
        let for_client = with(active.clone(), "aud", json!([CLIENT]));
        let cases: Vec<(&str, Value, Option<&str>, AccessRejected)> = vec![
            (
                "inactive",
                json!({"active": false}),
                Some(API),
                AccessRejected::Inactive,
            ),
            (
                "active as a string",
                with(active.clone(), "active", json!("true")),
                Some(API),
                AccessRejected::Inactive,
            ),
            (
                "another issuer",
                with(active.clone(), "iss", json!("https://evil.example")),
                Some(API),
                TokenRejected::Issuer.into(),
            ),
            (
                "another audience",
                with(active.clone(), "aud", json!("https://other.example")),
                Some(API),
                TokenRejected::Audience.into(),
            ),
            (
                "the client's audience when an API audience is set",
                for_client.clone(),
                Some(API),
                TokenRejected::Audience.into(),
            ),
            (
                "expired",
                with(active.clone(), "exp", json!(NOW - 31)),
                Some(API),
                TokenRejected::Expired.into(),
            ),
            (
                "no sub",
                with(active.clone(), "sub", Value::Null),
                Some(API),
                AccessRejected::Claim("sub"),
            ),
            (
                "a refresh token",
                with(active.clone(), "token_type", json!("refresh_token")),
                Some(API),
                AccessRejected::TokenType("refresh_token".into()),
            ),
            (
                "an unknown token type",
                with(active.clone(), "token_type", json!("N_A")),
                Some(API),
                AccessRejected::TokenType("N_A".into()),
            ),
            (
                "no audience named",
                with(active.clone(), "aud", Value::Null),
                Some(API),
                TokenRejected::Audience.into(),
            ),
            (
                "no api_audience configured (an ID token for the client would pass)",
                for_client.clone(),
                None,
                AccessRejected::NoAudienceConfigured,
            ),
            (
                "an ID token, as Keycloak names it",
                with(active.clone(), "typ", json!("ID")),
                Some(API),
                AccessRejected::Type,
            ),
            (
                "an ID token's nonce",
                with(active.clone(), "nonce", json!("n-1")),
                Some(API),
                AccessRejected::ForeignClaim("nonce"),
            ),
            (
                "a logout token's events",
                with(active.clone(), "events", json!({})),
                Some(API),
                AccessRejected::ForeignClaim("events"),
            ),
        ];
        for (name, answer, api, want) in cases {
            assert_eq!(from_introspection(&answer, &expected(api), now()), Err(want), "{name}");
        }
    }

    #[test]
    fn which_tokens_are_jwts() {
        for (t, jwt) in [
            ("eyJh.eyJi.c2ln", true),
            ("eyJh.eyJi.", true),
            ("opaque-random_token", false),
            ("a.b", false),
            ("a.b.c.d", false),
            (".eyJi.c2ln", false),
            ("eyJh.eyJi.c2l+", false),
            ("eyJh.eyJi.c2l=", false),
            ("", false),
        ] {
            assert_eq!(is_jwt_shaped(t), jwt, "{t}");
        }
    }
}
