//! Access rules inside a module, over loopback with the embedded IdP: an
//! `/admin/` area for `portal-admins` (alice is one, bob is not) whatever
//! the path's spelling, its 403 naming the missing group (a page, or JSON
//! for a script), a billing page that asks for a login at most five
//! minutes old (step-up through the IdP and back to the page; 401
//! `insufficient_user_authentication` for a script), and bearer tokens and
//! websocket upgrades held to the same rules.

mod common;

use common::*;
use serde_json::Value;
use toml::Table;

/// The portal with the demo's rules: `/admin/` for portal-admins, a
/// public health page inside it, `/billing/` with a five-minute login age,
/// `/old/` closed.
async fn ruled_stack() -> Stack {
    StackBuilder::new()
        .module("portal", |m| {
            with_rules(
                m,
                r#"
                [[rule]]
                paths = ["=/admin/health"]
                public = true
                [[rule]]
                paths = ["/admin/"]
                access_groups = ["portal-admins"]
                [[rule]]
                paths = ["/billing/"]
                max_login_age = "5m"
                [[rule]]
                paths = ["/old/"]
                deny = true
                "#,
            )
        })
        .start()
        .await
}

/// Sets the module's `[[rule]]` entries from TOML text.
fn with_rules(m: &mut Table, rules: &str) {
    let rules: Table = toml::from_str(rules).unwrap();
    m.insert("rule".into(), rules["rule"].clone());
}

async fn get(b: &reqwest::Client, url: &str, accept: &str) -> reqwest::Response {
    b.get(url).header("accept", accept).send().await.unwrap()
}

#[tokio::test]
async fn the_admin_area_is_for_portal_admins_whatever_the_spelling() {
    let s = ruled_stack().await;
    let (alice, _) = s.browser();
    assert_eq!(s.login(&alice, "alice", "/admin/").await.status(), 302);
    let r = get(&alice, &s.url("/admin/"), "text/html").await;
    assert_eq!(r.status(), 200);
    assert!(text(r).await.contains("Administration"));

    let (bob, _) = s.browser();
    s.login(&bob, "bob", "/").await;
    assert_eq!(
        get(&bob, &s.url("/reports"), "text/html").await.status(),
        200,
        "the rest of the portal"
    );
    let r = get(&bob, &s.url("/admin/"), "text/html").await;
    assert_eq!(r.status(), 403);
    let page = text(r).await;
    assert!(page.contains(r#"data-reason="area-forbidden""#), "{page}");
    assert!(
        page.contains("portal-admins") && page.contains("this part of"),
        "{page}"
    );
    assert!(page.contains("bob@"), "the page names the account: {page}");
    // A script gets the same reason as JSON.
    let r = get(&bob, &s.url("/admin/users"), "application/json").await;
    assert_eq!(r.status(), 403);
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["error"], "forbidden");
    assert_eq!(j["required_groups"], serde_json::json!(["portal-admins"]));
    // The spellings that could walk into the area: each is refused or
    // never reaches the module, and none is answered by its page.
    for path in [
        "/admin",
        "/admin/../admin/",
        "/%61dmin/",
        "/admin;x=1/",
        "/x/../admin/",
        "/admin/./",
    ] {
        let r = get(&bob, &s.url(path), "text/html").await;
        let status = r.status();
        let body = text(r).await;
        assert!(
            status == 403 || status == 400,
            "{path}: {status} {}",
            &body[..body.len().min(200)]
        );
        assert!(!body.contains("Administration"), "{path} reached the admin page");
    }
    let r = get(&bob, &s.url("//admin/"), "text/html").await;
    assert_ne!(r.status(), 200, "//admin/");
    // The public page inside it, for anyone, logged in or not.
    let (anon, _) = s.browser();
    assert_ne!(get(&anon, &s.url("/admin/health"), "text/html").await.status(), 302);
    // A closed area: no one, not even alice.
    assert_eq!(get(&alice, &s.url("/old/x"), "text/html").await.status(), 403);
    assert_eq!(get(&anon, &s.url("/old/x"), "text/html").await.status(), 403);
    // A websocket upgrade into the area is decided like any request.
    let r = bob
        .get(s.url("/admin/live"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "an upgrade into the admin area");
}

/// A rule whose groups replace the module's lets their members log in
/// from a browser, to that part of the module only.
#[tokio::test]
async fn members_of_a_rules_own_groups_log_in_to_that_part_only() {
    let s = StackBuilder::new()
        .module("portal", |m| {
            with_rules(
                m,
                r#"
                [[rule]]
                paths = ["/reports"]
                methods = ["GET"]
                access_groups = ["bms-users"]
                replace_module_groups = true
                "#,
            )
        })
        .start()
        .await;
    // carol is in bms-users, not in the portal's portal-users.
    let (carol, _) = s.browser();
    let r = s.login(&carol, "carol", "/reports").await;
    assert_eq!(r.status(), 302, "logged in");
    assert_eq!(location(&r), "/reports");
    assert_eq!(get(&carol, &s.url("/reports"), "text/html").await.status(), 200);
    let r = get(&carol, &s.url("/"), "text/html").await;
    assert_eq!(r.status(), 403, "the rest of the portal is not hers");
    assert!(text(r).await.contains("carol@"));
    let r = carol.post(s.url("/reports")).send().await.unwrap();
    assert_eq!(r.status(), 403, "nor other methods");
    // dave is in no group at all: refused at login, as before.
    let (dave, _) = s.browser();
    assert_eq!(s.login(&dave, "dave", "/reports").await.status(), 403);
}

/// Makes the browser's session look as if its login happened `age` seconds
/// ago (its ID token's `auth_time`).
fn age_login(s: &Stack, jar: &reqwest::cookie::Jar, age: u64) {
    use base64::Engine;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let id = s.session_id(jar).expect("a session");
    let store = s.gw.gateway.state.sessions.memory().expect("the memory store");
    let session = store.get(&id).expect("the session");
    let then = unigate::gateway::unix_now() - age;
    let jwt = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"ES256"}"#),
        b64(&format!(r#"{{"sub":"x","auth_time":{then}}}"#)),
        b64("sig")
    );
    session.tokens.lock().unwrap().id_token = Some(unigate::session::IdToken::new(&jwt));
}

#[tokio::test]
async fn billing_asks_for_a_recent_login_and_comes_back_to_the_page() {
    let s = ruled_stack().await;
    let (b, jar) = s.browser();
    s.login(&b, "alice", "/").await;
    // Logged in just now: the page opens.
    let r = get(&b, &s.url("/billing/"), "text/html").await;
    assert_eq!(r.status(), 200);
    assert!(text(r).await.contains("Billing"));
    // Ten minutes later.
    age_login(&s, &jar, 600);
    assert_eq!(
        get(&b, &s.url("/reports"), "text/html").await.status(),
        200,
        "elsewhere it still works"
    );
    // A script is told why, and how recent a login it needs (RFC 9470).
    let r = get(&b, &s.url("/billing/"), "application/json").await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(
        challenge.contains(r#"error="insufficient_user_authentication""#) && challenge.contains("max_age=300"),
        "{challenge}"
    );
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["error"], "insufficient_user_authentication");
    assert_eq!(j["max_age"], 300);
    // A browser goes to KaseyaOne, which asks again (max_age, and
    // prompt=login), and comes back to the page with a fresh login.
    let r = get(&b, &s.url("/billing/?month=11"), "text/html").await;
    assert_eq!(r.status(), 302);
    let authorize = location(&r);
    assert!(
        authorize.starts_with(&format!("{}/authorize?", s.idp.issuer())),
        "{authorize}"
    );
    assert_eq!(query_param(&authorize, "max_age").as_deref(), Some("300"));
    assert_eq!(query_param(&authorize, "prompt").as_deref(), Some("login"));
    // KaseyaOne asks for the login again (prompt=login): its form first.
    let r = b.get(&authorize).send().await.unwrap();
    assert!(location(&r).starts_with("/login?flow="), "KaseyaOne asks again");
    let callback = s.at_idp(&b, &authorize, "alice").await;
    assert!(callback.starts_with(&s.url("/_unigate/callback?")), "{callback}");
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/billing/?month=11", "back to the page");
    let r = get(&b, &s.url("/billing/?month=11"), "text/html").await;
    assert_eq!(r.status(), 200);
    // The new session's login is the one just made.
    let id = s.session_id(&jar).unwrap();
    let store = s.gw.gateway.state.sessions.memory().unwrap();
    let auth_time = store.get(&id).unwrap().auth_time().expect("the IdP's auth_time");
    assert!(unigate::gateway::unix_now() - auth_time < 60, "{auth_time}");
}

/// A browser without a session that opens the billing page asks
/// KaseyaOne for a login at most five minutes old at once (`max_age`,
/// without `prompt=login`: a recent KaseyaOne session is enough), and
/// lands on the page in one trip.
#[tokio::test]
async fn a_first_login_to_billing_asks_for_a_recent_one_at_once() {
    let s = ruled_stack().await;
    let (b, _) = s.browser();
    let r = get(&b, &s.url("/billing/"), "text/html").await;
    assert_eq!(r.status(), 302);
    let authorize = location(&r);
    assert_eq!(query_param(&authorize, "max_age").as_deref(), Some("300"));
    assert_eq!(query_param(&authorize, "prompt"), None);
    let callback = s.at_idp(&b, &authorize, "alice").await;
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(location(&r), "/billing/");
    assert_eq!(get(&b, &s.url("/billing/"), "text/html").await.status(), 200);
    // Elsewhere, nothing is asked.
    let (b, _) = s.browser();
    let r = get(&b, &s.url("/admin/"), "text/html").await;
    assert_eq!(query_param(&location(&r), "max_age"), None);
    // The same from a KaseyaOne link (third-party-initiated login).
    let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    for (target, max_age) in [("/billing/?m=1", Some("300")), ("/reports", None)] {
        let initiate = s.url(&format!(
            "/_unigate/login?iss={}&target_link_uri={}",
            enc(s.idp.issuer()),
            enc(&s.url(target))
        ));
        let r = get(&b, &initiate, "text/html").await;
        assert_eq!(r.status(), 302, "{target}");
        let authorize = location(&r);
        assert!(authorize.starts_with(s.idp.issuer()), "{authorize}");
        assert_eq!(query_param(&authorize, "max_age").as_deref(), max_age, "{target}");
        assert_eq!(query_param(&authorize, "prompt"), None);
    }
}

/// Logs `user` in at the IdP with the test client; its access token.
async fn access_token(s: &Stack, user: &str) -> String {
    let p = pkce();
    let back = login(&s.idp, &browser(), user, &p, &[]).await;
    let r = exchange(&s.idp, &query_param(&back, "code").unwrap(), &p.verifier).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    t["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn bearer_tokens_meet_the_same_rules() {
    let s = ruled_stack().await;
    let (c, _) = s.browser();
    let call = async |token: &str, path: &str| {
        c.get(s.url(path))
            .header("accept", "application/json")
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    };
    let (alice, bob) = (access_token(&s, "alice").await, access_token(&s, "bob").await);
    assert_eq!(call(&alice, "/admin/").await.status(), 200);
    let r = call(&bob, "/admin/").await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["required_groups"],
        serde_json::json!(["portal-admins"])
    );
    assert_eq!(call(&bob, "/reports").await.status(), 200, "outside the area");
    // The billing page needs a login at most five minutes old: the token
    // says when its user logged in, and it was just now.
    let fresh = claims(&alice)["auth_time"].as_u64();
    let r = call(&alice, "/billing/").await;
    match fresh {
        Some(_) => assert_eq!(r.status(), 200),
        None => {
            // A token that does not say is not taken as recent.
            assert_eq!(r.status(), 401);
            let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_string();
            assert!(challenge.contains("insufficient_user_authentication"), "{challenge}");
        }
    }
    assert_eq!(call(&alice, "/old/").await.status(), 403);
}

#[tokio::test]
async fn a_step_up_login_must_come_back_recent_even_from_a_provider_that_ignores_max_age() {
    use common::fake_op::{Answer, now};
    use common::rp::{all_claims, start_rp};
    use serde_json::json;
    let rp = start_rp(|t| {
        let rules: Table = toml::from_str("[[rule]]\npaths = [\"/billing/\"]\nmax_login_age = \"5m\"").unwrap();
        t.module("portal").insert("rule".into(), rules["rule"].clone());
    })
    .await;
    let (b, _) = rp.browser_with_jar();
    // Logged in ten minutes ago, at the provider.
    let mut claims = all_claims(&rp.op, "u1", json!(["portal-users"]));
    claims["auth_time"] = json!(now() - 600);
    assert_eq!(rp.login(&b, claims.clone()).await.status(), 302);
    assert_eq!(b.get(rp.url("/reports")).send().await.unwrap().status(), 200);
    // The billing page asks for a login at most five minutes old.
    let step_up = async || {
        let r = b.get(rp.url("/billing/")).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let authorize = location(&r);
        assert!(
            authorize.starts_with(&format!("{}/authorize?", rp.op.base)),
            "{authorize}"
        );
        assert_eq!(query_param(&authorize, "max_age").as_deref(), Some("300"));
        (
            query_param(&authorize, "state").unwrap(),
            query_param(&authorize, "nonce").unwrap(),
        )
    };
    let answer = async |auth_time: u64, state: &str, nonce: &str| {
        let mut c = claims.clone();
        c["auth_time"] = json!(auth_time);
        c["nonce"] = json!(nonce);
        let id_token = rp.op.key.sign("JWT", &c).unwrap();
        let tokens = rp.op.tokens(&id_token, "at-1");
        rp.op.set(|s| s.on_code = Some(Answer::json(tokens)));
        rp.callback(&b, &format!("code=c-1&state={state}&iss={}", rp.iss()))
            .await
    };
    // The provider ignores max_age and answers with the same old login:
    // refused, and the page is still not open.
    let (state, nonce) = step_up().await;
    let r = answer(now() - 600, &state, &nonce).await;
    assert_eq!(r.status(), 502, "an ID token whose auth_time is too old");
    assert_eq!(b.get(rp.url("/billing/")).send().await.unwrap().status(), 302);
    // A fresh login: back to the page, which opens.
    let (state, nonce) = step_up().await;
    let r = answer(now() - 5, &state, &nonce).await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/billing/");
    assert_eq!(b.get(rp.url("/billing/")).send().await.unwrap().status(), 200);
}
