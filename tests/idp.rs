//! The embedded identity provider over real sockets: discovery, the login
//! forms with TOTP, the token endpoint, sessions, logout, My Modules,
//! throttling and password recovery.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

async fn jwks(issuer: &str) -> JwkSet {
    reqwest::get(format!("{issuer}/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Verifies a JWT against the provider's JWKS; returns its claims and header typ.
async fn verify(issuer: &str, jwt: &str, aud: &str) -> (Value, Option<String>) {
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    let set = jwks(issuer).await;
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("kid published");
    let mut v = Validation::new(header.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[issuer]);
    let data = jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .expect("signature and claims verify");
    (data.claims, header.typ)
}

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
async fn full_login_with_password_and_totp() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    let p = pkce();
    let back = login(&idp, &b, "alice", &p, &[]).await;
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some("state-123"));
    assert_eq!(query_param(&back, "iss").as_deref(), Some(iss.as_str()));
    let code = query_param(&back, "code").unwrap();
    let r = exchange(&idp, &code, &p.verifier).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    let id_token = t["id_token"].as_str().unwrap();
    let access = t["access_token"].as_str().unwrap();
    let (c, typ) = verify(&iss, id_token, CLIENT).await;
    assert_eq!(typ.as_deref(), Some("JWT"));
    assert_eq!(c["iss"], iss);
    assert_eq!(c["aud"], CLIENT);
    assert_eq!(c["azp"], CLIENT);
    assert_eq!(c["nonce"], "nonce-456");
    assert_eq!(c["email"], "alice@acme-msp.example");
    assert_eq!(c["preferred_username"], "alice");
    assert_eq!(c["name"], "Alice Admin");
    assert_eq!(c["company"], "Acme MSP");
    assert_eq!(
        c["groups"],
        serde_json::json!(["portal-users", "bms-users", "itglue-users"])
    );
    assert_eq!(c["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(c["at_hash"], unigate::idp::oauth::at_hash(access));
    assert_eq!(c["sub"], unigate::idp::directory::subject_for("Acme MSP", "alice"));
    for k in ["exp", "iat", "auth_time", "sid"] {
        assert!(!c[k].is_null(), "{k}");
    }
    // RFC 9068: an access token for the API (its own audience), not the client.
    let (ac, atyp) = verify(&iss, access, API_AUDIENCE).await;
    assert_eq!(atyp.as_deref(), Some("at+jwt"));
    assert_eq!(ac["sub"], c["sub"]);
    assert_eq!(ac["aud"], API_AUDIENCE);
    assert_eq!(ac["client_id"], CLIENT);
    for k in ["iss", "exp", "iat", "jti", "scope", "sid", "groups"] {
        assert!(!ac[k].is_null(), "{k}");
    }
    let info: Value = reqwest::Client::new()
        .get(format!("{iss}/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], c["sub"]);
    assert_eq!(info["email"], "alice@acme-msp.example");
    let bad = reqwest::Client::new()
        .get(format!("{iss}/userinfo"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(
        bad.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
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
async fn idp_session_gives_silent_login_and_prompts_are_honoured() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    login(&idp, &b, "alice", &pkce(), &[]).await;
    // Already logged in: straight back with a code, no prompt.
    let p = pkce();
    let r = b.get(authorize_url(&iss, &p.challenge, &[])).send().await.unwrap();
    let loc = location(&r);
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let code = query_param(&loc, "code").unwrap();
    assert_eq!(exchange(&idp, &code, &p.verifier).await.status(), 200);
    // prompt=none also works with the session...
    let r = b
        .get(authorize_url(&iss, &p.challenge, &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert!(query_param(&location(&r), "code").is_some());
    // ...and without one is login_required.
    let r = browser()
        .get(authorize_url(&iss, &p.challenge, &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    assert_eq!(query_param(&loc, "error").as_deref(), Some("login_required"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some(iss.as_str()));
    // prompt=login asks again.
    let r = b
        .get(authorize_url(&iss, &p.challenge, &[("prompt", "login")]))
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("/login?flow="));
    // max_age older than the login asks again; a generous one does not.
    // (The wait is the point: the login is now over a second old.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = b
        .get(authorize_url(&iss, &p.challenge, &[("max_age", "0")]))
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("/login?flow="));
    let r = b
        .get(authorize_url(&iss, &p.challenge, &[("max_age", "3600")]))
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with(REDIRECT));
    // login_hint pre-fills the username, escaped.
    let r = browser()
        .get(authorize_url(&iss, &p.challenge, &[("login_hint", "carol<script>")]))
        .send()
        .await
        .unwrap();
    let c = browser();
    let _ = c;
    let login_path = location(&r);
    let b2 = browser();
    let r = b2
        .get(authorize_url(&iss, &p.challenge, &[("login_hint", "carol<script>")]))
        .send()
        .await
        .unwrap();
    let login_path2 = location(&r);
    assert_ne!(login_path, login_path2);
    let page = b2
        .get(format!("{iss}{login_path2}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("value=\"carol&lt;script&gt;\""), "{page}");
    assert!(!page.contains("carol<script>"));
    // A flow id from another browser is refused.
    let stolen = browser().get(format!("{iss}{login_path2}")).send().await.unwrap();
    assert_eq!(stolen.status(), 400);
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

async fn home_page(idp: &unigate::idp::IdpServer, user: &str, query: &str) -> String {
    let iss = idp.issuer();
    let b = browser();
    let r = b.get(format!("{iss}/login")).send().await.unwrap();
    let login_path = location(&r);
    let code = current_code(&totp_secret(idp, user));
    let r = post_login(&b, iss, &login_path, user, &company(idp, user), &password(user), &code).await;
    assert_eq!(location(&r), "/");
    b.get(format!("{iss}/{query}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn my_modules_tiles_follow_groups() {
    let idp = start_idp(demo_config()).await;
    let alice = home_page(&idp, "alice", "").await;
    assert!(alice.contains("My Modules"));
    assert!(
        alice.contains(r#"class="tile arrow" href="http://portal.localhost:8080/" data-module="portal""#),
        "{alice}"
    );
    assert!(
        alice.contains(r#"class="tile file" href="/?choose=bms" data-module="bms""#),
        "{alice}"
    );
    assert!(
        alice.contains(r#"class="tile lock" href="http://itglue.localhost:8080/login" data-module="itglue""#),
        "{alice}"
    );
    assert!(!alice.contains("Choose an Instance"));

    let bob = home_page(&idp, "bob", "").await;
    assert!(bob.contains(r#"data-module="portal""#));
    assert!(!bob.contains(r#"data-module="bms""#), "bob is not in bms-users");
    assert!(!bob.contains(r#"data-module="itglue""#), "bob is not in itglue-users");

    let dialog = home_page(&idp, "alice", "?choose=bms").await;
    assert!(dialog.contains("Choose an Instance"));
    assert!(
        dialog.contains(r#"href="http://bms-east.localhost:8080/">Acme East"#),
        "{dialog}"
    );
    assert!(dialog.contains(r#"href="http://bms-west.localhost:8080/">Acme West"#));
    let bob_dialog = home_page(&idp, "bob", "?choose=bms").await;
    assert!(
        !bob_dialog.contains("Choose an Instance"),
        "no dialog for a module bob may not access"
    );

    let dave = home_page(&idp, "dave", "").await;
    assert!(dave.contains("You have no modules yet."));
}

async fn attempt(idp: &unigate::idp::IdpServer, user: &str, company: &str, pw: &str, code: &str) -> (u16, String) {
    let b = browser();
    let r = b.get(format!("{}/login", idp.issuer())).send().await.unwrap();
    let path = location(&r);
    let r = post_login(&b, idp.issuer(), &path, user, company, pw, code).await;
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn failures_are_generic_and_throttled() {
    let mut cfg = demo_config();
    cfg.login.max_failures_per_user = 3;
    cfg.login.max_failures_per_ip = 6;
    let idp = start_idp(cfg).await;
    let good = current_code(&totp_secret(&idp, "alice"));
    let wrong_code = if good == "000000" { "111111" } else { "000000" };
    // Wrong password, unknown user, wrong company, wrong code: one message.
    let cases = [
        ("alice", "Acme MSP", "nope-nope-nope", good.as_str()),
        ("nobody", "Acme MSP", "alice-demo-pass", good.as_str()),
        ("alice", "Acme MSP", "alice-demo-pass", wrong_code),
    ];
    let mut pages = Vec::new();
    for (u, c, p, code) in cases {
        let (status, page) = attempt(&idp, u, c, p, code).await;
        assert_eq!(status, 401);
        let msg = page
            .split("role=\"alert\">")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_string();
        pages.push(msg);
    }
    assert!(pages[0].starts_with("Invalid username/password"), "{}", pages[0]);
    assert_eq!(pages[0], pages[1]);
    assert_eq!(pages[0], pages[2]);
    // alice has 2 failures: the third locks her.
    let (_, page) = attempt(&idp, "alice", "Acme MSP", "wrong-again", &good).await;
    assert!(page.contains("Too many failed login attempts"), "{page}");
    // Now even the right values are refused, and the page says why.
    let (status, page) = attempt(&idp, "alice", "acme msp", "alice-demo-pass", &good).await;
    assert_eq!(status, 401);
    assert!(
        page.contains("Too many failed login attempts") && page.contains("try again in 15 minutes"),
        "{page}"
    );
    // Bob, from the same address, is not locked by alice's failures...
    let bob_code = current_code(&totp_secret(&idp, "bob"));
    let (status, _) = attempt(&idp, "bob", "Acme MSP", "bob-demo-pass", &bob_code).await;
    assert_eq!(status, 302);
    // ...until the address itself has failed too often.
    for i in 0..3 {
        attempt(&idp, &format!("ghost{i}"), "Acme MSP", "x", "123456").await;
    }
    let (status, page) = attempt(&idp, "bob", "Acme MSP", "bob-demo-pass", &bob_code).await;
    assert_eq!(status, 401);
    assert!(page.contains("Too many failed login attempts"));
}

#[tokio::test]
async fn totp_codes_are_single_use_when_replay_protection_is_on() {
    let mut cfg = demo_config();
    cfg.login.totp_replay_protection = true;
    let idp = start_idp(cfg).await;
    let code = current_code(&totp_secret(&idp, "carol"));
    let (status, _) = attempt(&idp, "carol", "Globex IT", "carol-demo-pass", &code).await;
    assert_eq!(status, 302);
    let (status, page) = attempt(&idp, "carol", "Globex IT", "carol-demo-pass", &code).await;
    assert_eq!(status, 401, "the same code a second time");
    assert!(page.contains("Invalid username/password"));
}

async fn wait_for_mail(dir: &std::path::Path, n: usize) -> Vec<String> {
    for _ in 0..100 {
        let mut mails: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        if mails.len() >= n {
            mails.sort();
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no mail in {}", dir.display());
}

#[tokio::test]
async fn forgot_password_through_the_outbox() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let outbox = idp.provider.outbox.dir().to_path_buf();
    let b = browser();
    // Unknown accounts get the same answer and no mail.
    let r = b
        .post(format!("{iss}/recover/password"))
        .form(&[("username", "nobody"), ("company", "Acme MSP")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let unknown_page = r.text().await.unwrap();
    let r = b
        .post(format!("{iss}/recover/password"))
        .form(&[("username", "bob"), ("company", "acme msp")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), unknown_page);
    let mails = wait_for_mail(&outbox, 1).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.contains("To: bob@acme-msp.example"), "{mail}");
    let link = mail
        .lines()
        .find(|l| l.contains("/recover/reset?token="))
        .unwrap()
        .trim()
        .to_string();
    assert!(link.starts_with(&iss));
    let r = b.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = query_param(&link, "token").unwrap();
    let r = b
        .post(format!("{iss}/recover/reset"))
        .form(&[("token", token.as_str()), ("password", "short"), ("confirm", "short")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "too short, and the link still works");
    let newpw = "bob-brand-new-password";
    let r = b
        .post(format!("{iss}/recover/reset"))
        .form(&[("token", token.as_str()), ("password", newpw), ("confirm", newpw)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Password changed"));
    // The link works once.
    assert_eq!(b.get(&link).send().await.unwrap().status(), 400);
    let r = b
        .post(format!("{iss}/recover/reset"))
        .form(&[
            ("token", token.as_str()),
            ("password", "another-password-1"),
            ("confirm", "another-password-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The new password logs in; the old one does not.
    let code = current_code(&totp_secret(&idp, "bob"));
    assert_eq!(attempt(&idp, "bob", "Acme MSP", "bob-demo-pass", &code).await.0, 401);
    assert_eq!(attempt(&idp, "bob", "Acme MSP", newpw, &code).await.0, 302);

    // Forgot username and forgot company name also write mail.
    b.post(format!("{iss}/recover/username"))
        .form(&[("email", "carol@globex.example"), ("company", "Globex IT")])
        .send()
        .await
        .unwrap();
    b.post(format!("{iss}/recover/company"))
        .form(&[("email", "ALICE@acme-msp.example")])
        .send()
        .await
        .unwrap();
    let mails = wait_for_mail(&outbox, 3).await;
    assert!(
        mails
            .iter()
            .any(|m| m.contains("Subject: Your KaseyaOne username") && m.contains("  carol"))
    );
    assert!(
        mails
            .iter()
            .any(|m| m.contains("Subject: Your KaseyaOne company name") && m.contains("  Acme MSP"))
    );
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
