//! unigate in front of the demo module, with the embedded identity
//! provider, over real loopback sockets: the whole login, identity to the
//! module, denials, API clients, bearer tokens, refresh, logout, and the
//! open-redirect corpus.

mod common;

use std::time::Duration;

use common::*;
use reqwest::cookie::CookieStore;
use serde_json::Value;

async fn whoami(s: &Stack, b: &reqwest::Client, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = b.get(s.url("/api/whoami"));
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn login_through_unigate_gives_the_module_a_verified_identity() {
    let s = stack().await;
    let (b, jar) = s.browser();
    let r = s.login(&b, "alice", "/reports?x=1").await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/reports?x=1", "back where the user started");
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["unigate=", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let id = s.session_id(&jar).unwrap();
    assert_eq!(id.len(), 43, "a 256-bit id");
    let page = b.get(s.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Logged in with KaseyaOne as alice@acme-msp.example"),
        "{page}"
    );
    let w: Value = whoami(&s, &b, &[]).await.json().await.unwrap();
    assert_eq!(w["assertion_verified"], true);
    assert_eq!(w["headers"]["x-kaseyaone-user"], "alice");
    assert_eq!(w["headers"]["x-kaseyaone-email"], "alice@acme-msp.example");
    assert_eq!(w["headers"]["x-kaseyaone-company"], "Acme MSP");
    assert_eq!(
        w["headers"]["x-kaseyaone-groups"],
        "portal-users,portal-admins,bms-users,itglue-users"
    );
    assert_eq!(w["assertion"]["aud"], "portal");
    let a = &w["assertion"];
    assert!(a["exp"].as_u64().unwrap() - a["iat"].as_u64().unwrap() <= 60);
    // The next login gets a new id.
    let (b2, jar2) = s.browser();
    s.login(&b2, "alice", "/").await;
    assert_ne!(s.session_id(&jar2).unwrap(), id);
    assert_eq!(b2.get(s.url("/")).send().await.unwrap().status(), 200);
    // Logged in already: the login button goes straight back.
    let r = b2
        .get(s.url("/_unigate/login?return_to=/reports"))
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), location(&r).as_str()), (303, "/reports"));
    // Without unigate's session but with the IdP's, a login is silent:
    // no login form.
    jar2.add_cookie_str("unigate=; Max-Age=0; Path=/", &s.url("/").parse().unwrap());
    assert!(s.session_id(&jar2).is_none());
    let r = b2.get(s.url("/_unigate/login")).send().await.unwrap();
    let r = b2.get(location(&r)).send().await.unwrap();
    assert!(location(&r).contains("/_unigate/callback?code="));
    assert_eq!(s.module.module.live_sessions(), 2);
}

#[tokio::test]
async fn users_outside_the_access_groups_are_refused() {
    let s = stack().await;
    let (b, jar) = s.browser();
    let r = s.login(&b, "carol", "/").await;
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(page.contains("You do not have access to portal"), "{page}");
    assert!(page.contains("administrator"));
    // A way out: the account that was used, another account, My Modules.
    assert!(page.contains("You used the KaseyaOne account <b>carol@"), "{page}");
    let token = assert_ways_out(&page, s.idp.issuer());
    assert!(s.session_id(&jar).is_none(), "no session for a refused user");
    // The same refusal in a second tab (reached, like the first, by the
    // IdP's redirect): the first tab's button still works.
    let r = s.login(&b, "carol", "/").await;
    assert_eq!(r.status(), 403);
    let second = assert_ways_out(&r.text().await.unwrap(), s.idp.issuer());
    assert_ne!(second, "");
    // One click logs out of KaseyaOne: the form's token stands for the
    // confirmation unigate would otherwise ask for; KaseyaOne, getting no
    // ID token, may still ask once.
    let r = b
        .post(s.url("/_unigate/logout"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to = location(&r);
    assert!(
        to.starts_with(&format!("{}/logout?", s.idp.issuer())) && !to.contains("id_token_hint"),
        "{to}"
    );
    // A forged token logs no one out: with no session here, the
    // confirmation is asked for.
    let r = b
        .post(s.url("/_unigate/logout"))
        .form(&[("token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Log out of KaseyaOne?"));
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_module() {
    let s = stack().await;
    let (b, _) = s.browser();
    s.login(&b, "bob", "/").await;
    let spoof = [
        ("X-KaseyaOne-User", "mallory"),
        ("x_kaseyaone_email", "mallory@evil.example"),
        ("X-Forwarded-User", "mallory"),
        ("x-forwarded_email", "mallory@evil.example"),
        ("X-Unigate-Assertion", "forged"),
        ("X-KaseyaOne-Admin", "true"),
    ];
    let w: Value = whoami(&s, &b, &spoof).await.json().await.unwrap();
    let headers = w["headers"].as_object().unwrap();
    assert_eq!(headers["x-kaseyaone-user"], "bob");
    assert_eq!(headers["x-kaseyaone-email"], "bob@acme-msp.example");
    for (k, v) in headers {
        assert!(!v.as_str().unwrap().contains("mallory"), "{k} leaked");
    }
    assert!(!headers.contains_key("x-forwarded-user"));
    assert!(!headers.contains_key("x_kaseyaone_email"));
    assert!(!headers.contains_key("x-kaseyaone-admin"));
    assert_eq!(w["assertion_verified"], true);
    // Unauthenticated, spoofed headers get nobody anywhere.
    let (anon, _) = s.browser();
    let r = anon
        .get(s.url("/"))
        .header("X-KaseyaOne-User", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
}

#[tokio::test]
async fn api_clients_get_401_json_with_cors_for_allowed_origins() {
    let s = stack().await;
    let (b, _) = s.browser();
    for (k, v) in [
        ("accept", "application/json"),
        ("x-requested-with", "XMLHttpRequest"),
        ("sec-fetch-mode", "cors"),
    ] {
        let r = b.get(s.url("/api/whoami")).header(k, v).send().await.unwrap();
        assert_eq!(r.status(), 401, "{k}");
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        assert!(r.headers().get("location").is_none());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthenticated");
    }
    let r = b
        .get(s.url("/api/whoami"))
        .header("accept", "application/json")
        .header("origin", "http://app.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "http://app.localhost");
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    let r = b
        .get(s.url("/api/whoami"))
        .header("accept", "application/json")
        .header("origin", "http://evil.localhost")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Public paths pass without login.
    assert_eq!(b.get(s.url("/static/app.css")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn bearer_access_tokens_are_validated() {
    let s = stack().await;
    let p = pkce();
    let back = login(&s.idp, &browser(), "alice", &p, &[]).await;
    let t: Value = exchange(&s.idp, &query_param(&back, "code").unwrap(), &p.verifier)
        .await
        .json()
        .await
        .unwrap();
    let access = t["access_token"].as_str().unwrap();
    let (b, _) = s.browser();
    let w: Value = b
        .get(s.url("/api/whoami"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(w["headers"]["x-kaseyaone-user"], "alice");
    assert_eq!(w["assertion_verified"], true);
    // Cached by hash: works again.
    let r = b.get(s.url("/api/whoami")).bearer_auth(access).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A tampered token is refused.
    let mut bad = access.to_string();
    bad.pop();
    bad.push(if access.ends_with('A') { 'B' } else { 'A' });
    let r = b.get(s.url("/api/whoami")).bearer_auth(&bad).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    // The ID token of the same login is not a bearer token.
    let r = b
        .get(s.url("/api/whoami"))
        .bearer_auth(t["id_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A valid token of a user outside the access groups is forbidden.
    let p = pkce();
    let back = login(&s.idp, &browser(), "carol", &p, &[]).await;
    let t: Value = exchange(&s.idp, &query_param(&back, "code").unwrap(), &p.verifier)
        .await
        .json()
        .await
        .unwrap();
    let r = b
        .get(s.url("/api/whoami"))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn sessions_refresh_and_a_failed_refresh_logs_in_again() {
    // Access tokens that are always "about to expire": every request refreshes.
    let s = StackBuilder::new()
        .idp(|c| c.tokens.access_token_ttl = Duration::from_secs(30))
        .session(|s| {
            s.set("refresh_before", "60s");
        })
        .start()
        .await;
    let (b, jar) = s.browser();
    s.login(&b, "bob", "/").await;
    let id = s.session_id(&jar).unwrap();
    let session = s.gw.gateway.state.sessions.memory().unwrap().get(&id).unwrap();
    let first = session.tokens.lock().unwrap().refresh_token.clone().unwrap();
    assert_eq!(b.get(s.url("/")).send().await.unwrap().status(), 200);
    wait_until(
        "the refresh token was rotated by a background refresh",
        Duration::from_millis(2500),
        async || {
            let now = session.tokens.lock().unwrap().refresh_token.clone().unwrap();
            now != first && !session.refreshing.load(std::sync::atomic::Ordering::Acquire)
        },
    )
    .await;
    // The IdP ends bob's sessions (password reset): the next refresh fails,
    // and the navigation after it logs in again.
    let user = s.idp.provider.dir.find("Acme MSP", "bob").unwrap();
    s.idp.provider.end_user_sessions(user, std::time::SystemTime::now());
    assert_eq!(
        b.get(s.url("/")).send().await.unwrap().status(),
        200,
        "still served while refreshing"
    );
    wait_until(
        "the failed refresh ends the session",
        Duration::from_millis(2500),
        async || !session.usable(),
    )
    .await;
    let r = b.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(location(&r).starts_with(&format!("{}/authorize?", s.idp.issuer())));
}

#[tokio::test]
async fn logout_ends_both_sessions_and_old_cookies_get_nobody_in() {
    let s = stack().await;
    let (b, jar) = s.browser();
    s.login(&b, "alice", "/").await;
    let page = b.get(s.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Welcome, alice"));
    let url = url::Url::parse(&s.url("/")).unwrap();
    let old_cookies = jar.cookies(&url).unwrap().to_str().unwrap().to_string();
    assert!(old_cookies.contains("portal_session="), "{old_cookies}");
    assert_eq!(s.module.module.live_sessions(), 1);

    let r = b.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let end = location(&r);
    assert!(end.starts_with(&format!("{}/logout?", s.idp.issuer())), "{end}");
    assert!(end.contains("id_token_hint="));
    assert!(end.contains("post_logout_redirect_uri="));
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("unigate=;") && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("portal_session=;") && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    // A failed login's reason (it may name an account) goes with it.
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("unigate_error=;") && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    assert_eq!(s.module.module.live_sessions(), 0, "the module's own session ended");
    // The IdP logs out and sends the browser back.
    let r = b.get(&end).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), s.url("/"));

    // Replaying the old cookies: unigate sends to login; the IdP asks for credentials.
    let (replay, _) = s.browser();
    let r = replay
        .get(s.url("/"))
        .header("cookie", &old_cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(location(&r).starts_with(&format!("{}/authorize?", s.idp.issuer())));
    let r = b.get(location(&r)).send().await.unwrap();
    assert!(
        location(&r).starts_with("/login?flow="),
        "the KaseyaOne session ended too"
    );
    // And the old module cookie is dead at the module itself.
    let direct: Value = reqwest::Client::new()
        .get(format!("http://{}/api/whoami", s.module.addr))
        .header("cookie", &old_cookies)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(direct["local_session_user"].is_null(), "{direct}");
}

#[tokio::test]
async fn a_logout_after_unigates_session_ended_still_ends_the_kaseyaone_session() {
    let s = stack().await;
    let (b, jar) = s.browser();
    s.login(&b, "alice", "/").await;
    // unigate's session ends on its own (an idle timeout shorter than
    // KaseyaOne's); the browser still has its cookie, KaseyaOne its session.
    let url = url::Url::parse(&s.url("/")).unwrap();
    let cookies = jar.cookies(&url).unwrap().to_str().unwrap().to_string();
    let id = cookies
        .split("; ")
        .find_map(|c| c.strip_prefix("unigate="))
        .unwrap()
        .to_string();
    let memory = s.gw.gateway.state.sessions.memory().unwrap();
    assert!(memory.remove(&id).is_some(), "unigate's session ended");
    // The module's logout still sends the browser to KaseyaOne's end
    // session, without an ID token to hint with …
    let r = b.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let end = location(&r);
    assert!(end.starts_with(&format!("{}/logout?", s.idp.issuer())), "{end}");
    assert!(!end.contains("id_token_hint="), "{end}");
    assert!(
        end.contains("client_id=") && end.contains("post_logout_redirect_uri="),
        "{end}"
    );
    // … so KaseyaOne asks the person to confirm, and confirming ends it.
    let r = b.get(&end).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Log out of KaseyaOne?"), "{page}");
    let field = |name: &str| {
        let at = page.find(&format!("name=\"{name}\" value=\"")).unwrap() + name.len() + 15;
        page[at..at + page[at..].find('"').unwrap()].replace("&amp;", "&")
    };
    let form = [
        ("csrf", field("csrf")),
        ("client_id", field("client_id")),
        ("post_logout_redirect_uri", field("post_logout_redirect_uri")),
    ];
    let r = b
        .post(format!("{}/logout/confirm", s.idp.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), s.url("/"), "back to the module");
    // KaseyaOne's session is gone: the next login asks for credentials.
    let r = b.get(s.url("/")).send().await.unwrap();
    let r = b.get(location(&r)).send().await.unwrap();
    assert!(location(&r).starts_with("/login?flow="), "the KaseyaOne session ended");
}

#[tokio::test]
async fn return_urls_from_the_open_redirect_corpus_stay_on_the_origin() {
    let s = StackBuilder::new()
        .session(|s| {
            s.set("login_starts_per_minute", 100000);
        })
        .start()
        .await;
    let (b, _) = s.browser();
    s.login(&b, "alice", "/").await;
    let corpus = include_str!("data/openredirects.txt");
    let mut checked = 0;
    for vector in corpus.lines() {
        let q: String = form_urlencoded::byte_serialize(vector.as_bytes()).collect();
        let r = b
            .get(s.url(&format!("/_unigate/login?return_to={q}")))
            .send()
            .await
            .unwrap();
        // Logged in already: straight to the return path, if it is one.
        assert_eq!(r.status(), 303, "{vector:?}");
        let target = location(&r);
        assert!(
            target.starts_with('/') && !target.starts_with("//") && !target.contains('\\'),
            "{vector:?} -> {target:?}"
        );
        let joined = url::Url::parse(&s.url("/")).unwrap().join(&target).unwrap();
        assert_eq!(joined.host_str(), Some(HOST), "{vector:?} -> {target:?}");
        checked += 1;
    }
    assert!(checked >= 559);
    // The request target itself as the attack: `GET //evil.example/x`.
    let (fresh, _) = s.browser();
    let r = fresh.get(s.url("//evil.example/x")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let authorize = location(&r);
    // A fresh browser logs in for real (the login cookie binds the transaction to it).
    let r = fresh.get(&authorize).send().await.unwrap();
    let login_path = location(&r);
    let code = current_code(&totp_secret(&s.idp, "alice"));
    let r = post_login(
        &fresh,
        s.idp.issuer(),
        &login_path,
        "alice",
        "Acme MSP",
        "alice-demo-pass",
        &code,
    )
    .await;
    let r = fresh.get(location(&r)).send().await.unwrap();
    // The request's canonical path (`//` merged), on this origin: a
    // protocol-relative request target never becomes a return URL.
    assert_eq!(location(&r), "/evil.example/x");
}

#[tokio::test]
async fn callback_errors_are_pages_not_crashes() {
    let s = stack().await;
    let (b, jar) = s.browser();
    // An error from the IdP, with hostile text: shown escaped, with a retry link.
    let r = b.get(s.url("/")).send().await.unwrap();
    let state = query_param(&location(&r), "state").unwrap();
    // (The embedded IdP names itself in every answer, errors too: RFC 9207.)
    let iss: String = form_urlencoded::byte_serialize(s.idp.issuer().as_bytes()).collect();
    let cb = format!(
        "/_unigate/callback?error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={state}&iss={iss}"
    );
    let r = b.get(s.url(&cb)).send().await.unwrap();
    // A failed login is shown at a stable address: a reload shows the
    // same reason, not "this login has expired".
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/_unigate/error");
    for _ in 0..2 {
        let r = failed_login_page(&b, &r).await.unwrap();
        assert_eq!(r.status(), 403);
        let page = r.text().await.unwrap();
        assert!(
            page.contains("access_denied") && page.contains("&lt;script&gt;"),
            "{page}"
        );
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("href=\"/_unigate/login?return_to=%2F\""), "{page}");
    }
    // The reason is sealed: the browser holds nothing it can read or forge.
    let url = url::Url::parse(&s.url("/")).unwrap();
    let cookies = jar.cookies(&url).unwrap().to_str().unwrap().to_string();
    let held = cookies
        .split("; ")
        .find_map(|kv| kv.strip_prefix("unigate_error="))
        .unwrap()
        .to_string();
    assert!(
        !held.contains("access_denied") && held.split('.').count() == 3,
        "{held}"
    );
    // The page is this browser's: another one is offered a login.
    let (other, _) = s.browser();
    let r = other.get(s.url("/_unigate/error")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(!r.text().await.unwrap().contains("access_denied"));
    // The state is spent.
    let r = b.get(s.url(&cb)).send().await.unwrap();
    assert_eq!(failed_login_page(&b, &r).await.unwrap().status(), 400);
    // A callback in another browser than the one that started the login.
    let r = b.get(s.url("/")).send().await.unwrap();
    let state = query_param(&location(&r), "state").unwrap();
    let (other, _) = s.browser();
    let r = other
        .get(s.url(&format!("/_unigate/callback?code=x&state={state}&iss={iss}")))
        .send()
        .await
        .unwrap();
    assert_eq!(failed_login_page(&other, &r).await.unwrap().status(), 400);
    // Garbage.
    let r = b
        .get(s.url("/_unigate/callback?code=%00%ff&state=%ff"))
        .send()
        .await
        .unwrap();
    assert_eq!(failed_login_page(&b, &r).await.unwrap().status(), 400);
    // Unknown host, health.
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/", s.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("There is no module here"));
    assert_eq!(b.get(s.url("/_unigate/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(b.get(s.url("/_unigate/readyz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn local_module_credentials_still_work_directly() {
    let s = stack().await;
    let c = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let r = c
        .post(format!("http://{}/login", s.module.addr))
        .form(&[("username", "localuser"), ("password", "local-pass")])
        .send()
        .await
        .unwrap();
    let page = r.text().await.unwrap();
    assert!(page.contains("Logged in with module credentials"), "{page}");
}
