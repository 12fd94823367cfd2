//! A session shared by two unigate replicas on one real `redis-server`: a
//! login on replica A works on replica B, and its end reaches both — a
//! back-channel logout posted to B, a front-channel logout loaded on B, an
//! admin revoke on B closing a websocket open on A (also after A's local
//! copy lapsed); a module cookie issued on A refused on B once its login
//! ended, and kept from the module beside another user's session (user
//! switch); a websocket kept while its session is busy on the other
//! replica; a login callback usable once across replicas.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::replicas::{
    browser_with_jar, login, login_as, logout_token, module_cookie_is_expired, replicas, status, url, websocket_on_a,
    whoami,
};
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_login_on_one_replica_works_on_the_other_and_logout_reaches_both() {
    let r = replicas().await;
    let (pa, pb) = (r.a.addr.port(), r.b.addr.port());
    let b = login(&r.idp, pa).await;
    assert_eq!(status(&b, &url(pa, "/ping")).await, 200);
    // The module opens its own session on A (its cookie recorded in Redis).
    let home = b.get(url(pa, "/")).header("accept", "text/html").send().await.unwrap();
    let module_cookie = portal_cookie(&home);
    // Replica B has never seen this session: it finds it in Redis.
    let who: serde_json::Value = b
        .get(url(pb, "/api/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["headers"]["x-kaseyaone-user"], "alice");
    // Both now hold a local copy. A back-channel logout posted to B ends
    // the session on A within a second.
    let cached = r.a.gateway.cached_sessions();
    let sid = cached[0]
        .1
        .identity
        .sid
        .clone()
        .expect("A holds the session, with its sid");
    let token = logout_token(&r.idp, &sid);
    let t = Instant::now();
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{pb}/_unigate/backchannel-logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Within a second of the logout being posted.
    wait_until(
        "A refuses the session",
        Duration::from_secs(1).saturating_sub(t.elapsed()),
        async || status(&b, &url(pa, "/ping")).await == 302,
    )
    .await;
    assert_eq!(status(&b, &url(pb, "/ping")).await, 302);
    // The module's cookie, replayed alone at B (which never saw it issued):
    // refused and expired there too.
    module_cookie_is_expired(&r, pb, &module_cookie).await;
    // The replay, on A this time: the jti is shared.
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{pa}/_unigate/backchannel-logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn an_admin_revoke_on_one_replica_closes_a_websocket_on_the_other() {
    let (r, b, _, session, mut ws) = websocket_on_a(|_| {}).await;
    let (pa, pb) = (r.a.addr.port(), r.b.addr.port());
    // The operator revokes alice on B, by email.
    let res = reqwest::Client::new()
        .post(format!("http://{}/admin/revoke", r.b.admin_addr.unwrap()))
        .bearer_auth(SECRET)
        .json(&json!({"email": session.identity.email}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["revoked"], 1);
    assert!(
        websocket_ends_within(&mut ws, Duration::from_secs(1)).await,
        "the websocket on A was still open 1 s after the revoke on B"
    );
    assert_eq!(status(&b, &url(pb, "/ping")).await, 302);
    assert_eq!(status(&b, &url(pa, "/ping")).await, 302);
}

#[tokio::test]
async fn a_websocket_held_past_the_local_cache_still_closes_on_a_revoke_elsewhere() {
    // Replicas trust their local copy of a session for one second only.
    let (r, b, id, session, mut ws) = websocket_on_a(|s| {
        s.set("redis_local_cache", "1s");
    })
    .await;
    let (pa, pb) = (r.a.addr.port(), r.b.addr.port());
    // The local copy lapses and a new request reloads the session from
    // Redis: the websocket's copy must still hear of the revocation.
    wait_until("A's local copy lapses", Duration::from_secs(3), async || {
        r.a.gateway.cached_sessions().is_empty()
    })
    .await;
    let reloaded =
        r.a.gateway
            .session_by_id(&id)
            .await
            .unwrap()
            .expect("still live in Redis");
    assert!(
        std::sync::Arc::ptr_eq(&reloaded, &session),
        "the reload found the object the websocket holds"
    );
    let res = reqwest::Client::new()
        .post(format!("http://{}/admin/revoke", r.b.admin_addr.unwrap()))
        .bearer_auth(SECRET)
        .json(&json!({"sub": session.identity.sub}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        websocket_ends_within(&mut ws, Duration::from_secs(1)).await,
        "the websocket opened before the reload was still open 1 s after the revoke"
    );
    assert_eq!(status(&b, &url(pa, "/ping")).await, 302);
    assert_eq!(status(&b, &url(pb, "/ping")).await, 302);
}

#[tokio::test]
async fn a_user_switch_and_a_frontchannel_logout_across_replicas() {
    let r = replicas().await;
    let (pa, pb) = (r.a.addr.port(), r.b.addr.port());
    // alice logs in on A, and the module opens its own session there.
    let alice = login(&r.idp, pa).await;
    let home = alice
        .get(url(pa, "/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    let alice_cookie = portal_cookie(&home);
    // B never saw that cookie issued, yet knows whose it is: it passes
    // beside alice's own session…
    let who = whoami(&alice, pb).await;
    assert_eq!(who["headers"]["x-kaseyaone-user"], "alice", "{who}");
    assert_eq!(who["local_session_user"], "alice", "{who}");
    // …and is kept from the module beside bob's, who logs in on B in a
    // browser that carries it.
    let (bob, jar) = browser_with_jar();
    let bob = login_as(&r.idp, pb, "bob", bob).await;
    jar.add_cookie_str(&alice_cookie, &url::Url::parse(&url(pb, "/")).unwrap());
    let who = whoami(&bob, pb).await;
    assert_eq!(who["headers"]["x-kaseyaone-user"], "bob", "{who}");
    assert!(
        who["local_session_user"].is_null(),
        "alice's module session reached the module: {who}"
    );
    // A front-channel logout for alice's IdP session, loaded on B without
    // cookies, ends her session on A within a second.
    let sid =
        r.a.gateway
            .cached_sessions()
            .into_iter()
            .find(|(_, s)| &*s.identity.username == "alice")
            .and_then(|(_, s)| s.identity.sid.as_deref().map(str::to_string))
            .expect("A holds alice's session, with its sid");
    let fcl = url::Url::parse_with_params(
        &format!("http://127.0.0.1:{pb}/_unigate/frontchannel-logout"),
        &[("iss", r.idp.issuer()), ("sid", sid.as_str())],
    )
    .unwrap();
    let t = Instant::now();
    let res = reqwest::Client::new().get(fcl).send().await.unwrap();
    assert_eq!(res.status(), 200);
    wait_until(
        "A refuses alice after the logout on B",
        Duration::from_secs(1).saturating_sub(t.elapsed()),
        async || status(&alice, &url(pa, "/ping")).await == 302,
    )
    .await;
    // Her module cookie alone, on A: expired and sent to log in.
    module_cookie_is_expired(&r, pa, &alice_cookie).await;
    // bob's session lives on, on both replicas, still without alice's
    // module session.
    let who = whoami(&bob, pa).await;
    assert_eq!(who["headers"]["x-kaseyaone-user"], "bob", "{who}");
    assert!(who["local_session_user"].is_null(), "{who}");
    assert_eq!(status(&bob, &url(pb, "/ping")).await, 200);
}

#[tokio::test]
async fn a_websocket_lives_on_while_its_session_is_busy_on_another_replica() {
    let (r, b, _, _, mut ws) = websocket_on_a(|s| {
        s.set("idle_timeout", "2s");
    })
    .await;
    let pb = r.b.addr.port();
    // Busy on B for twice the idle timeout: Redis keeps the session alive,
    // and A's websocket with it. (Keeping busy for that long is the point:
    // a request every 300 ms.)
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        // (Answered by unigate itself: this module speaks only websocket.)
        assert_eq!(status(&b, &url(pb, "/_unigate/launcher")).await, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !websocket_ends_within(&mut ws, Duration::from_millis(100)).await,
        "closed on A while the session was busy on B"
    );
    // Left alone, the session idles out, and the websocket goes with it.
    assert!(
        websocket_ends_within(&mut ws, Duration::from_secs(4)).await,
        "the websocket outlived its idle session"
    );
}

#[tokio::test]
async fn a_login_callback_works_once_across_replicas() {
    let r = replicas().await;
    let (pa, pb) = (r.a.addr.port(), r.b.addr.port());
    let (b, jar) = browser_with_jar();
    let res = b.get(url(pa, "/")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(res.status(), 302);
    let res = b.get(location(&res)).send().await.unwrap();
    let code = current_code(&totp_secret(&r.idp, "alice"));
    let res = post_login(
        &b,
        r.idp.issuer(),
        &location(&res),
        "alice",
        &company(&r.idp, "alice"),
        &password("alice"),
        &code,
    )
    .await;
    let callback = location(&res);
    // The browser's login transaction cookie, as an attacker who copied
    // it would replay it.
    use reqwest::cookie::CookieStore;
    let cookies = jar
        .cookies(&url::Url::parse(&url(pa, "/")).unwrap())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookies.contains("unigate_login_"), "{cookies}");
    assert_eq!(b.get(&callback).send().await.unwrap().status(), 302, "logged in on A");
    // The same callback on B, with the cookie: the state is spent on every
    // replica (not a code exchange the IdP refuses: 502).
    let on_b = callback.replace(&format!(":{pa}/"), &format!(":{pb}/"));
    assert_ne!(on_b, callback);
    let res = reqwest::Client::builder()
        .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .unwrap()
        .get(&on_b)
        .header("cookie", &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("/_unigate/login"));
}
