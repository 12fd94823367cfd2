//! ID token validation by table: good tokens, each rejection, algorithm
//! confusion, embedded keys, header rules, hashes and ages, JWKS entries.

use super::*;
use crate::crypto::keys::SigningKey;
use crate::oidc::test_support::{CLIENT, ISS, NOW, now, with};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use serde_json::{Value, json};

fn good_claims() -> Value {
    json!({
        "iss": ISS, "sub": "user-1", "aud": CLIENT, "azp": CLIENT,
        "exp": NOW + 300, "iat": NOW - 10, "auth_time": NOW - 10,
        "nonce": "n-1", "sid": "s-1", "email": "a@example.com", "groups": ["g"]
    })
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
