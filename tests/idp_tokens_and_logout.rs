//! The embedded identity provider's protocol over real sockets: discovery
//! and JWKS, ID tokens checked by a second JOSE implementation, PKCE, code
//! reuse, refresh rotation, logout (back-channel tokens and their retries,
//! front-channel iframes, the confirmation page), bad requests, and key
//! rotation.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use serde_json::Value;

async fn full_login(idp: &unigate::idp::IdpServer, b: &reqwest::Client, user: &str) -> Value {
    let p = pkce();
    let back = login(idp, b, user, &p, &[]).await;
    let code = query_param(&back, "code").unwrap();
    let r = exchange(idp, &code, &p.verifier).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn discovery_and_jwks() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let doc: Value = reqwest::get(format!("{iss}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], iss);
    for ep in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "end_session_endpoint",
    ] {
        assert!(doc[ep].as_str().unwrap().starts_with(&iss), "{ep}");
    }
    assert_eq!(doc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(doc["backchannel_logout_session_supported"], true);
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    let set = jwks(&iss).await;
    assert_eq!(set.keys.len(), 2);
    let raw: Value = reqwest::get(format!("{iss}/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let algs: Vec<&str> = raw["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    assert_eq!(algs, vec!["ES256", "RS256"]);
    for k in raw["keys"].as_array().unwrap() {
        assert!(
            k.get("d").is_none() && k.get("p").is_none(),
            "no private key material in the JWKS"
        );
        assert!(k["kid"].as_str().unwrap().len() >= 43);
    }
}

#[tokio::test]
async fn id_tokens_verify_with_another_jose_implementation() {
    use jwt_simple::prelude::*;
    let mut cfg = demo_config();
    let mut rs = test_client(None, None);
    rs.id_token_alg = jsonwebtoken::Algorithm::RS256;
    cfg.clients.push(rs);
    let idp = start_idp(cfg).await;
    let iss = idp.issuer().to_string();
    let t = full_login(&idp, &browser(), "bob").await;
    let id_token = t["id_token"].as_str().unwrap();
    let raw: serde_json::Value = reqwest::get(format!("{iss}/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap();
    let jwk = raw["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    let b64 = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let opts = VerificationOptions {
        allowed_issuers: Some(HashSet::from_strings(&[&iss])),
        allowed_audiences: Some(HashSet::from_strings(&[CLIENT])),
        required_nonce: Some("nonce-456".into()),
        ..Default::default()
    };
    assert_eq!(jwk["kty"], "RSA");
    let key = RS256PublicKey::from_components(&b64(&jwk["n"]), &b64(&jwk["e"])).unwrap();
    let claims = key
        .verify_token::<serde_json::Value>(id_token, Some(opts.clone()))
        .expect("jwt-simple verifies the RS256 ID token");
    assert_eq!(claims.custom["preferred_username"], "bob");

    // The ES256 default, through jwt-simple too.
    let idp2 = start_idp(demo_config()).await;
    let t = full_login(&idp2, &browser(), "bob").await;
    let id_token = t["id_token"].as_str().unwrap();
    let raw: serde_json::Value = reqwest::get(format!("{}/.well-known/jwks.json", idp2.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap();
    let jwk = raw["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    assert_eq!(jwk["crv"], "P-256");
    let mut sec1 = vec![4u8];
    sec1.extend(b64(&jwk["x"]));
    sec1.extend(b64(&jwk["y"]));
    let key = ES256PublicKey::from_bytes(&sec1).unwrap();
    let opts = VerificationOptions {
        allowed_issuers: Some(HashSet::from_strings(&[idp2.issuer()])),
        ..opts
    };
    key.verify_token::<serde_json::Value>(id_token, Some(opts.clone()))
        .expect("jwt-simple verifies the ES256 ID token");
    // And refuses it with the other provider's key.
    assert!(
        key.verify_token::<serde_json::Value>(t["access_token"].as_str().unwrap(), Some(opts))
            .is_err(),
        "an access token is not for this audience check"
    );
}

#[tokio::test]
async fn pkce_is_required_and_checked() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    // No code_challenge: error back to the client, with iss (RFC 9207).
    let mut u = url::Url::parse(&authorize_url(&iss, "x", &[])).unwrap();
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != "code_challenge" && k != "code_challenge_method")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut().clear().extend_pairs(kept);
    let r = b.get(u.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let loc = location(&r);
    assert!(loc.starts_with(REDIRECT));
    assert_eq!(query_param(&loc, "error").as_deref(), Some("invalid_request"));
    assert_eq!(query_param(&loc, "state").as_deref(), Some("state-123"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some(iss.as_str()));
    // plain is refused.
    let r = b.get(authorize_url(&iss, "x", &[])).send().await.unwrap();
    assert_eq!(query_param(&location(&r), "error").as_deref(), Some("invalid_request"));
    // A wrong verifier fails the exchange.
    let p = pkce();
    let back = login(&idp, &b, "alice", &p, &[]).await;
    let code = query_param(&back, "code").unwrap();
    let r = exchange(&idp, &code, &pkce().verifier).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_grant");
    let r = exchange(&idp, &code, "short").await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn code_reuse_revokes_what_it_issued() {
    let idp = start_idp(demo_config()).await;
    let b = browser();
    let p = pkce();
    let back = login(&idp, &b, "alice", &p, &[]).await;
    let code = query_param(&back, "code").unwrap();
    let first: Value = exchange(&idp, &code, &p.verifier).await.json().await.unwrap();
    let again = exchange(&idp, &code, &p.verifier).await;
    assert_eq!(again.status(), 400);
    assert_eq!(again.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let r = refresh(&idp, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 400, "the refresh token from the reused code is revoked");
    let info = reqwest::Client::new()
        .get(format!("{}/userinfo", idp.issuer()))
        .bearer_auth(first["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 401, "the access token from the reused code is revoked");
}

#[tokio::test]
async fn refresh_rotates_and_detects_reuse() {
    let idp = start_idp(demo_config()).await;
    let t = full_login(&idp, &browser(), "bob").await;
    let r1 = t["refresh_token"].as_str().unwrap().to_string();
    let r = refresh(&idp, &r1).await;
    assert_eq!(r.status(), 200);
    let t2: Value = r.json().await.unwrap();
    let r2 = t2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    let (c, _) = verify(idp.issuer(), t2["id_token"].as_str().unwrap(), CLIENT).await;
    assert_eq!(c["preferred_username"], "bob");
    assert!(c.get("nonce").is_none(), "a refreshed ID token carries no nonce");
    // Reusing the rotated-out token fails and revokes the whole family.
    assert_eq!(refresh(&idp, &r1).await.status(), 400);
    assert_eq!(refresh(&idp, &r2).await.status(), 400, "the newer token is revoked too");
    // A wrong client secret is invalid_client.
    let r = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(CLIENT, Some("wrong"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", r2.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
}

#[tokio::test]
async fn end_session_sends_verified_backchannel_logout_token() {
    let mut rx = receiver().await;
    let mut cfg = demo_config();
    let bcl = format!("http://{}/bcl", rx.addr);
    cfg.clients
        .push(test_client(Some(&bcl), Some("http://127.0.0.1:1/fcl")));
    let idp = start_idp(cfg).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    let t = full_login(&idp, &b, "alice").await;
    let id_token = t["id_token"].as_str().unwrap();
    let (idc, _) = verify(&iss, id_token, CLIENT).await;

    // An unregistered post-logout address is refused on a page.
    let r = b
        .get(format!("{iss}/logout"))
        .query(&[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());

    let r = b
        .get(format!("{iss}/logout"))
        .query(&[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", POST_LOGOUT),
            ("state", "bye-1"),
        ])
        .send()
        .await
        .unwrap();
    // Front-channel iframes are rendered, then the browser goes on.
    assert_eq!(r.status(), 200);
    let refresh_header = r.headers()["refresh"].to_str().unwrap().to_string();
    assert!(refresh_header.contains("logged-out?state=bye-1"), "{refresh_header}");
    let page = r.text().await.unwrap();
    let sid_q = format!(
        "sid={}",
        form_urlencoded::byte_serialize(idc["sid"].as_str().unwrap().as_bytes()).collect::<String>()
    );
    assert!(page.contains("http://127.0.0.1:1/fcl?iss="), "{page}");
    assert!(page.contains(&sid_q), "{page}");

    let token = recv_within(&mut rx.tokens, Duration::from_secs(5))
        .await
        .expect("a logout token arrives");
    let (lc, typ) = verify(&iss, &token, CLIENT).await;
    assert_eq!(typ.as_deref(), Some("logout+jwt"));
    assert_eq!(lc["sid"], idc["sid"]);
    assert_eq!(lc["sub"], idc["sub"]);
    assert!(
        lc["events"]
            .get("http://schemas.openid.net/event/backchannel-logout")
            .is_some()
    );
    assert!(lc.get("nonce").is_none());
    assert!(lc["jti"].as_str().unwrap().len() >= 32);
    assert!(lc["exp"].as_u64().unwrap() > lc["iat"].as_u64().unwrap());

    // The IdP session and its grants are gone.
    let r = b.get(authorize_url(&iss, &pkce().challenge, &[])).send().await.unwrap();
    assert!(location(&r).starts_with("/login?flow="));
    assert_eq!(refresh(&idp, t["refresh_token"].as_str().unwrap()).await.status(), 400);
}

#[tokio::test]
async fn backchannel_delivery_is_retried() {
    let mut rx = receiver().await;
    *rx.status.lock().unwrap() = 503;
    let mut cfg = demo_config();
    cfg.clients
        .push(test_client(Some(&format!("http://{}/bcl", rx.addr)), None));
    let idp = start_idp(cfg).await;
    let b = browser();
    let t = full_login(&idp, &b, "bob").await;
    let r = b
        .get(format!("{}/logout", idp.issuer()))
        .query(&[
            ("id_token_hint", t["id_token"].as_str().unwrap()),
            ("post_logout_redirect_uri", POST_LOGOUT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), POST_LOGOUT);
    let first = recv_within(&mut rx.tokens, Duration::from_secs(5))
        .await
        .expect("first attempt");
    *rx.status.lock().unwrap() = 200;
    let second = recv_within(&mut rx.tokens, Duration::from_secs(5))
        .await
        .expect("a retry after a 503");
    assert_eq!(first, second, "the same token is retried");
}

#[tokio::test]
async fn logout_without_hint_asks_first() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    login(&idp, &b, "bob", &pkce(), &[]).await;
    let r = b.get(format!("{iss}/logout")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Log out of KaseyaOne?"));
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    // A forged form is refused and logs nobody out.
    let r = b
        .post(format!("{iss}/logout/confirm"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = b.get(authorize_url(&iss, &pkce().challenge, &[])).send().await.unwrap();
    assert!(location(&r).starts_with(REDIRECT), "still logged in");
    let r = b
        .post(format!("{iss}/logout/confirm"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("You are logged out"));
    let r = b.get(authorize_url(&iss, &pkce().challenge, &[])).send().await.unwrap();
    assert!(location(&r).starts_with("/login?flow="), "logged out");
}

#[tokio::test]
async fn bad_requests_get_pages_or_oauth_errors() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    let ch = pkce().challenge;
    // Unknown client and unregistered redirect_uri: a page, never a redirect.
    for (k, v) in [("client_id", "nope"), ("redirect_uri", "https://evil.example/cb")] {
        let mut u = url::Url::parse(&authorize_url(&iss, &ch, &[])).unwrap();
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .map(|(a, b)| {
                if a == k {
                    (a.into_owned(), v.to_string())
                } else {
                    (a.into_owned(), b.into_owned())
                }
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(kept);
        let r = b.get(u.as_str()).send().await.unwrap();
        assert_eq!(r.status(), 400, "{k}");
        assert!(r.headers().get("location").is_none());
        assert!(r.text().await.unwrap().contains("cannot be used"));
    }
    // Token endpoint: JSON body, unknown grant, missing client, wrong secret.
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{iss}/token"))
        .json(&serde_json::json!({"grant_type": "authorization_code"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    let r = c
        .post(format!("{iss}/token"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");
    let r = c
        .post(format!("{iss}/token"))
        .form(&[("grant_type", "authorization_code"), ("code", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{iss}/token"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("grant_type", "authorization_code"), ("code", "made-up")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let r = c
        .post(format!("{iss}/token"))
        .basic_auth(CLIENT, Some(SECRET))
        .body("grant_type=a&grant_type=b")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    // Oversized bodies.
    let big = "x".repeat(64 * 1024);
    let r = c
        .post(format!("{iss}/token"))
        .form(&[("grant_type", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    let r = b
        .post(format!("{iss}/login"))
        .form(&[("flow", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("Too much data"));
    // Escaping on a page that echoes input.
    let r = b.get(format!("{iss}/login")).send().await.unwrap();
    let path = location(&r);
    let flow = query_param(&format!("{iss}{path}"), "flow").unwrap();
    let r = b
        .post(format!("{iss}/login"))
        .form(&[
            ("flow", flow.as_str()),
            ("step", "identify"),
            ("username", "\"><img src=x onerror=alert(1)>"),
            ("company", ""),
        ])
        .send()
        .await
        .unwrap();
    let page = r.text().await.unwrap();
    assert!(page.contains("&quot;&gt;&lt;img"), "{page}");
    assert!(!page.contains("<img src=x"));
    // Unknown paths.
    assert_eq!(b.get(format!("{iss}/nope")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn rotated_keys_stay_published_for_the_grace_period() {
    let idp = start_idp(demo_config()).await;
    let t = full_login(&idp, &browser(), "alice").await;
    let before: Vec<String> = jwks(idp.issuer())
        .await
        .keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect();
    idp.provider.rotate_keys(SystemTime::now()).unwrap();
    let after: Vec<String> = jwks(idp.issuer())
        .await
        .keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect();
    assert_eq!(after.len(), 4);
    assert!(before.iter().all(|k| after.contains(k)));
    // A token signed before the rotation still verifies, and new ones use the new key.
    verify(idp.issuer(), t["id_token"].as_str().unwrap(), CLIENT).await;
    let t2 = full_login(&idp, &browser(), "bob").await;
    let kid = jsonwebtoken::decode_header(t2["id_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert!(!before.contains(&kid));
    // id_token_hint signed by the old key is still accepted at logout.
    let r = browser()
        .get(format!("{}/logout", idp.issuer()))
        .query(&[
            ("id_token_hint", t["id_token"].as_str().unwrap()),
            ("post_logout_redirect_uri", POST_LOGOUT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
}
