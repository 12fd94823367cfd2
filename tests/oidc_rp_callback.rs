//! unigate as an OpenID Connect relying party at the callback, against a
//! provider that does what the specifications allow but KaseyaOne does not
//! (no `iss` promised, an issuer ending in a slash, key rotation right after
//! start) and what they forbid (a repeated or unsigned parameter, a wrong
//! token type, an ID token of another kind): each rule over real sockets.

mod common;

use std::time::Duration;

use common::fake_op::{Answer, FakeOp, now};
use common::rp::{all_claims, start_rp, start_rp_with};
use common::{HOST, TomlEdit, query_param, wait_until};
use serde_json::{Value, json};
use unigate::idp::keys::SigningKey;

#[tokio::test]
async fn callback_rules_refuse_before_any_token_request() {
    let rp = start_rp(|_| {}).await;
    let b = rp.browser();
    let (_, state, nonce) = rp.start(&b).await;
    let iss = rp.iss();
    let cases = [
        (
            "no iss from a provider that promises it",
            format!("code=c&state={state}"),
        ),
        (
            "iss of another provider",
            format!("code=c&state={state}&iss=https%3A%2F%2Fevil.example"),
        ),
        ("two codes", format!("code=c&code=d&state={state}&iss={iss}")),
        ("two states", format!("code=c&state={state}&state=x&iss={iss}")),
        ("two iss", format!("code=c&state={state}&iss={iss}&iss={iss}")),
        ("an id_token", format!("code=c&state={state}&iss={iss}&id_token=a.b.c")),
        (
            "an access_token",
            format!("code=c&state={state}&iss={iss}&access_token=t"),
        ),
        (
            "a token_type",
            format!("code=c&state={state}&iss={iss}&token_type=Bearer"),
        ),
    ];
    for (name, query) in &cases {
        let r = rp.callback(&b, query).await;
        assert_eq!(r.status(), 400, "{name}");
        assert_eq!(rp.op.count("token"), 0, "{name}: no token request");
    }
    // The login itself is still good: the sound answer logs in.
    let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
    c["nonce"] = json!(nonce);
    let tokens = rp.op.tokens(&rp.op.sign(&c), "at-1");
    rp.op.set(|s| s.on_code = Some(Answer::json(tokens)));
    let r = rp.callback(&b, &format!("code=c&state={state}&iss={iss}")).await;
    assert_eq!(r.status(), 302);
    assert_eq!(rp.op.count("token"), 1);
}

#[tokio::test]
async fn a_provider_that_does_not_promise_iss_may_leave_it_out() {
    let op = FakeOp::start().await;
    op.set(|s| s.iss_supported = false);
    let rp = start_rp_with(op, |_| {}).await;
    let b = rp.browser();
    let (_, state, nonce) = rp.start(&b).await;
    let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
    c["nonce"] = json!(nonce);
    let tokens = rp.op.tokens(&rp.op.sign(&c), "at-1");
    rp.op.set(|s| s.on_code = Some(Answer::json(tokens)));
    assert_eq!(rp.callback(&b, &format!("code=c&state={state}")).await.status(), 302);
}

#[tokio::test]
async fn an_issuer_ending_in_a_slash_is_named_exactly_as_discovery_spells_it() {
    // Auth0's issuer is `https://tenant.auth0.com/`; an operator writes it
    // with or without the slash.
    let rp = start_rp_with(FakeOp::start_with(true).await, |_| {}).await;
    assert!(rp.op.issuer.ends_with('/'));
    let b = rp.browser();
    let r = rp.login(&b, all_claims(&rp.op, "alice", json!(["portal-users"]))).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    // Without the slash, the token names another issuer.
    let b = rp.browser();
    let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
    c["iss"] = json!(rp.op.base);
    assert_eq!(rp.login(&b, c).await.status(), 502);
}

#[tokio::test]
async fn the_token_response_must_be_of_type_bearer() {
    let rp = start_rp(|_| {}).await;
    for (token_type, want) in [
        (None, 502),
        (Some("DPoP"), 502),
        (Some("mac"), 502),
        (Some("bearer"), 302),
        (Some("Bearer"), 302),
    ] {
        let b = rp.browser();
        let (_, state, nonce) = rp.start(&b).await;
        let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
        c["nonce"] = json!(nonce);
        let mut tokens = rp.op.tokens(&rp.op.sign(&c), "at-1");
        match token_type {
            Some(t) => tokens["token_type"] = json!(t),
            None => {
                tokens.as_object_mut().unwrap().remove("token_type");
            }
        }
        rp.op.set(|s| s.on_code = Some(Answer::json(tokens)));
        let r = rp.callback(&b, &format!("code=c&state={state}&iss={}", rp.iss())).await;
        assert_eq!(r.status(), want, "{token_type:?}");
    }
}

#[tokio::test]
async fn id_token_rules_at_the_callback() {
    use unigate::oidc::id_token::left_half_hash;
    let rp = start_rp(|_| {}).await;
    let alg = jsonwebtoken::Algorithm::ES256;
    let good = |nonce: &str| {
        let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
        c["nonce"] = json!(nonce);
        c["at_hash"] = json!(left_half_hash(alg, "at-1"));
        c["c_hash"] = json!(left_half_hash(alg, "c-1"));
        c
    };
    type Edit<'a> = Box<dyn Fn(&mut Value) -> Option<String> + 'a>;
    let kid = rp.op.key.kid.clone();
    let key = &rp.op.key;
    let cases: Vec<(&str, Edit)> = vec![
        ("good", Box::new(|_| None)),
        (
            "at_hash of another access token",
            Box::new(move |c| {
                c["at_hash"] = json!(left_half_hash(alg, "other"));
                None
            }),
        ),
        (
            "c_hash of another code",
            Box::new(move |c| {
                c["c_hash"] = json!(left_half_hash(alg, "other"));
                None
            }),
        ),
        (
            "issued 11 minutes ago",
            Box::new(|c| {
                c["iat"] = json!(now() - 660 - 61);
                None
            }),
        ),
        ("a logout token", Box::new(|c| Some(key.sign("logout+jwt", c).unwrap()))),
        ("an access token", Box::new(|c| Some(key.sign("at+jwt", c).unwrap()))),
        (
            "a critical header extension",
            Box::new(move |c| {
                Some(
                    key.sign_with_header(&json!({"alg": "ES256", "kid": kid, "crit": ["exp"], "exp": 1}), c)
                        .unwrap(),
                )
            }),
        ),
    ];
    for (name, edit) in cases {
        let b = rp.browser();
        let (_, state, nonce) = rp.start(&b).await;
        let mut c = good(&nonce);
        let token = edit(&mut c).unwrap_or_else(|| rp.op.sign(&c));
        let tokens = rp.op.tokens(&token, "at-1");
        rp.op.set(|s| s.on_code = Some(Answer::json(tokens)));
        let r = rp
            .callback(&b, &format!("code=c-1&state={state}&iss={}", rp.iss()))
            .await;
        let want = if name == "good" { 302 } else { 502 };
        assert_eq!(r.status(), want, "{name}");
    }
}

#[tokio::test]
async fn a_key_rotation_right_after_start_is_followed_at_once() {
    let rp = start_rp(|_| {}).await;
    assert_eq!(rp.op.count("jwks"), 1, "loaded at start");
    // The provider rotates to a new key the moment unigate has started.
    let next = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
    rp.op.set(|s| s.jwks = json!({"keys": [next.jwk]}));
    let c = all_claims(&rp.op, "alice", json!(["portal-users"]));
    let r = rp.login_signed(&rp.browser(), c.clone(), &next).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    assert_eq!(rp.op.count("jwks"), 2, "one re-fetch");
    // An ID token comes from the provider itself: a kid it does not
    // publish is looked up again (at most once a second), and still
    // refused. (The wait is the point: past the one-second cooldown.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stranger = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
    let r = rp.login_signed(&rp.browser(), c.clone(), &stranger).await;
    assert_eq!(r.status(), 502);
    assert_eq!(rp.op.count("jwks"), 3);
    // Bearer tokens anyone can send: one fetch, then the cooldown.
    let bearer = |jti: &str| {
        let t = now();
        stranger
            .sign(
                "at+jwt",
                &json!({"iss": rp.op.issuer, "sub": "x", "aud": common::API_AUDIENCE, "client_id": "c",
                        "exp": t + 60, "iat": t, "jti": jti}),
            )
            .unwrap()
    };
    for (jti, fetches) in [("j1", 4), ("j2", 4), ("j3", 4)] {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/", rp.port))
            .header("host", format!("{HOST}:{}", rp.port))
            .header("accept", "application/json")
            .bearer_auth(bearer(jti))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{jti}");
        assert_eq!(rp.op.count("jwks"), fetches, "{jti}");
    }
    // And those made-up kids hold back no login after a real rotation
    // (once the one-second cooldown has passed: the wait is the point).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newest = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
    rp.op.set(|s| s.jwks = json!({"keys": [newest.jwk]}));
    let r = rp.login_signed(&rp.browser(), c, &newest).await;
    assert_eq!(r.status(), 302);
    assert_eq!(rp.op.count("jwks"), 5);
}

#[tokio::test]
async fn many_logins_with_a_new_key_at_once_share_one_jwks_fetch() {
    let rp = start_rp(|_| {}).await;
    let next = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
    // The new key, served slowly: the callbacks overlap while it loads.
    rp.op.set(|s| {
        s.jwks = json!({"keys": [next.jwk]});
        s.jwks_delay = Duration::from_millis(300);
    });
    let mut logins = Vec::new();
    for i in 0..8 {
        let b = rp.browser();
        let (_, state, nonce) = rp.start(&b).await;
        // Each login its own code, with an ID token carrying its nonce.
        let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
        c["nonce"] = json!(nonce);
        let code = format!("code-{i}");
        let tokens = rp.op.tokens(&next.sign("JWT", &c).unwrap(), "at-1");
        rp.op.set(|s| {
            s.by_code.insert(code.clone(), Answer::json(tokens));
        });
        logins.push((b, format!("code={code}&state={state}&iss={}", rp.iss())));
    }
    let started = std::time::Instant::now();
    let answers = futures_util::future::join_all(logins.iter().map(|(b, q)| rp.callback(b, q))).await;
    for r in &answers {
        assert_eq!(r.status(), 302);
    }
    assert_eq!(rp.op.count("jwks"), 2, "one fetch at start, one for all eight");
    assert!(
        started.elapsed() < Duration::from_millis(8 * 300),
        "the fetch was shared, not queued"
    );
}

#[tokio::test]
async fn jwks_entries_that_cannot_be_used_do_not_stop_the_others() {
    let op = FakeOp::start().await;
    let jwk = serde_json::to_value(&op.key.jwk).unwrap();
    op.set(|s| {
        s.jwks = json!({"keys": [
            {"kty": "AKP", "alg": "ML-DSA-44", "kid": "pq", "pub": "AAAA"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-999", "kid": "odd", "x": "AA", "y": "AA"},
            jwk,
        ]})
    });
    let rp = start_rp_with(op, |_| {}).await;
    let b = rp.browser();
    let r = rp.login(&b, all_claims(&rp.op, "alice", json!(["portal-users"]))).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn a_module_max_age_is_asked_for_and_auth_time_checked() {
    let rp = start_rp(|t| {
        t.module("portal").set("max_age", "5m");
    })
    .await;
    let b = rp.browser();
    let (authorize, _, _) = rp.start(&b).await;
    assert_eq!(query_param(&authorize, "max_age").as_deref(), Some("300"));
    for (name, auth_time, want) in [
        ("no auth_time", None, 502),
        ("a login 10 minutes old", Some(now() - 600), 502),
        ("a login a minute old", Some(now() - 60), 302),
    ] {
        let b = rp.browser();
        let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
        match auth_time {
            Some(t) => c["auth_time"] = json!(t),
            None => {
                c.as_object_mut().unwrap().remove("auth_time");
            }
        }
        assert_eq!(rp.login(&b, c).await.status(), want, "{name}");
    }
}

/// A Back-Channel Logout of the provider session that arrives while its
/// login is still finishing (here, a slow UserInfo: after the code
/// exchange, before the session is stored) ends that login too: the
/// person is told, and nothing of it is left to use.
#[tokio::test]
async fn a_logout_while_the_login_finishes_ends_it() {
    let rp = start_rp(|_| {}).await;
    let b = rp.browser();
    rp.op.set(|s| {
        s.userinfo = Some(Answer::json(json!({"sub": "alice", "groups": ["portal-users"]})));
        s.userinfo_delay = Duration::from_secs(3);
    });
    // Issued just now: the logout comes within the same second or the
    // next, and still ends it.
    let mut claims = rp.op.id_claims("alice", None);
    claims["sid"] = json!("op-sid-1");
    let logout = async {
        wait_until("UserInfo is asked", Duration::from_secs(5), async || {
            rp.op.count("userinfo") == 1
        })
        .await;
        let r = rp
            .browser()
            .post(rp.url("/_unigate/backchannel-logout"))
            .form(&[("logout_token", rp.op.logout_token("op-sid-1"))])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the logout itself is done");
    };
    let (r, ()) = tokio::join!(rp.login(&b, claims), logout);
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("logged out of KaseyaOne while this login was finishing"),
        "{page}"
    );
    assert_eq!(rp.page(&b).await.0, 302, "no session was left");
    // A new KaseyaOne session logs in as usual.
    rp.op.set(|s| s.userinfo_delay = Duration::ZERO);
    let mut claims = rp.op.id_claims("alice", None);
    claims["sid"] = json!("op-sid-2");
    assert_eq!(rp.login(&b, claims).await.status(), 302);
    assert_eq!(rp.page(&b).await.0, 200);
}
