//! What a logout ends, over real sockets with the embedded IdP: a module
//! session of an ended login refused and expired, the previous user's
//! module session kept out at a user switch (memory store and Redis), and
//! websockets, event streams and chunked feeds closed within a second of a
//! logout or of the session idling out, while quiet ones are left open and
//! a streamed response that ends by itself arrives whole.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_module_session_of_an_ended_login_never_gets_through() {
    dead_module_session(logout_stack().await).await;
}

#[tokio::test]
async fn a_module_session_of_an_ended_login_never_gets_through_with_redis() {
    dead_module_session(logout_stack_builder().redis().start().await).await;
}

async fn dead_module_session(s: Multi) {
    let b = s.browser();
    let portal = s.url("portal.localhost", "/");
    let (_, r) = s.walk(&b, "alice", &portal).await;
    assert_eq!(r.status(), 200);
    let module_cookie = portal_cookie(&r);
    // The session ends (admin revocation) …
    let admin = s.gw.admin_addr.unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{admin}/admin/revoke"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"email": "ALICE@acme-msp.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 1);
    // … and the module's cookie alone, replayed by anyone, is refused and expired.
    let thief = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("portal.localhost", std::net::SocketAddr::from(([127, 0, 0, 1], s.port)))
        .build()
        .unwrap();
    let r = thief
        .get(&portal)
        .header("accept", "text/html")
        .header("cookie", &module_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(location(&r).starts_with(&format!("{}/authorize?", s.idp.issuer())));
    let expired = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("portal_session=;") && c.to_str().unwrap().contains("Max-Age=0"));
    assert!(expired, "the module cookie is expired");
    // An API client gets 401, not the module.
    let r = thief
        .get(s.url("portal.localhost", "/api/whoami"))
        .header("accept", "application/json")
        .header("cookie", &module_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn user_switch_keeps_the_previous_users_module_session_out() {
    user_switch(logout_stack().await).await;
}

#[tokio::test]
async fn user_switch_keeps_the_previous_users_module_session_out_with_redis() {
    user_switch(logout_stack_builder().redis().start().await).await;
}

async fn user_switch(s: Multi) {
    let portal = s.url("portal.localhost", "/");
    // alice's browser, and her portal session cookie.
    let a = s.browser();
    let (_, r) = s.walk(&a, "alice", &portal).await;
    let alice_cookie = portal_cookie(&r);
    let value = alice_cookie.split_once('=').unwrap().1;
    assert!(
        s.gw.gateway
            .state
            .sessions
            .module_cookie_owner(value)
            .await
            .unwrap()
            .is_some(),
        "unigate saw the module issue alice's cookie"
    );
    // bob logs in on a browser that carries alice's portal cookie (without
    // her unigate session it is expired on the way in)…
    let (bob, jar) = s.browser_with_jar();
    jar.add_cookie_str(&alice_cookie, &url::Url::parse(&portal).unwrap());
    let (_, r) = s.walk(&bob, "bob", &portal).await;
    assert_eq!(r.status(), 200);
    let bob_cookie = portal_cookie(&r);
    let page = r.text().await.unwrap();
    assert!(page.contains("Welcome, bob"), "{page}");
    // …and when it turns up again beside bob's session, the module never sees it.
    jar.add_cookie_str(&alice_cookie, &url::Url::parse(&portal).unwrap());
    let who: Value = bob
        .get(s.url("portal.localhost", "/api/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["assertion"]["preferred_username"], "bob");
    assert!(
        who["local_session_user"].is_null(),
        "alice's module session was kept out: {who}"
    );
    // Both at once (a browser sends one cookie per path and domain): bob's
    // own portal cookie first, alice's behind it. Neither reaches the module.
    let portal_url = url::Url::parse(&portal).unwrap();
    let jar_cookies = reqwest::cookie::CookieStore::cookies(&*jar, &portal_url).expect("bob's cookies");
    let jar_cookies = jar_cookies.to_str().unwrap();
    let plain = reqwest::Client::builder()
        .resolve("portal.localhost", std::net::SocketAddr::from(([127, 0, 0, 1], s.port)))
        .build()
        .unwrap();
    let who: Value = plain
        .get(s.url("portal.localhost", "/api/whoami"))
        .header("cookie", format!("{bob_cookie}; {jar_cookies}; {alice_cookie}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["assertion"]["preferred_username"], "bob");
    assert!(
        who["local_session_user"].is_null(),
        "alice's module session, second of two, was kept out: {who}"
    );
    // alice herself, in another login (another browser, so another IdP
    // session and sid): the module session of her first login stays out
    // too, and the module opens a new one.
    let (again, jar) = s.browser_with_jar();
    let (_, r) = s.walk(&again, "alice", &portal).await;
    assert_eq!(r.status(), 200);
    jar.add_cookie_str(&alice_cookie, &portal_url);
    let r = again.get(&portal).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let opened = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("portal_session="));
    assert!(
        opened,
        "the first login's module session reached the module in the second login"
    );
}

#[tokio::test]
async fn a_websocket_is_closed_within_a_second_of_logout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = websocket_upstream().await;
    let s = StackBuilder::new().upstream(up).start().await;
    let (b, jar) = s.browser();
    s.login(&b, "alice", "/").await;
    let id = s.session_id(&jar).unwrap();
    let mut ws = websocket_through(s.port, &id).await;
    // Idle for a while: an open websocket is not closed for nothing (the
    // wait is the point: nothing should happen).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send(Message::text("still")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "still");
    // Logout (the browser's /logout): the websocket ends within a second.
    let r = b.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let t = Instant::now();
    assert!(
        websocket_ends_within(&mut ws, Duration::from_secs(1)).await,
        "the websocket was still open 1 s after logout"
    );
    eprintln!("websocket closed {:?} after logout", t.elapsed());
}

#[tokio::test]
async fn an_event_stream_a_chunked_feed_and_a_download_are_cut_within_a_second_of_logout() {
    let up = stream_upstream().await;
    let s = StackBuilder::new().upstream(up).start().await;
    let (b, _) = s.browser();
    s.login(&b, "alice", "/").await;
    let mut streams = Vec::new();
    for (path, first) in [
        ("/events", "data: hello"),
        ("/feed", "{\"n\":1}"),
        ("/download", "PART1"),
    ] {
        let mut r = b.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let chunk = r.chunk().await.unwrap().expect("the first item");
        assert!(String::from_utf8_lossy(&chunk).starts_with(first), "{path}: {chunk:?}");
        streams.push((path, r));
    }
    // Quiet streams are not closed for nothing (the wait is the point:
    // nothing should happen).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (path, r) in &mut streams {
        let next = tokio::time::timeout(Duration::from_millis(100), r.chunk()).await;
        assert!(next.is_err(), "{path} ended before the logout: {next:?}");
    }
    let r = b.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    for (path, mut r) in streams {
        let ended = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match r.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        let Ok(end) = ended else {
            panic!("{path} was still open 1 s after logout");
        };
        // Cut short, and the client can tell: not a clean end of body.
        assert!(end.is_err(), "{path} looked complete to the client");
    }
}

#[tokio::test]
async fn a_watched_streamed_response_that_ends_by_itself_is_complete() {
    let s = stack().await;
    let (b, _) = s.browser();
    s.login(&b, "alice", "/").await;
    for _ in 0..3 {
        let r = b.get(s.url("/ping/chunked")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("content-length").is_none(), "streamed");
        assert_eq!(r.text().await.unwrap(), "pong", "whole, and cleanly ended");
    }
    assert_eq!(
        b.get(s.url("/ping")).send().await.unwrap().status(),
        200,
        "the session lives on"
    );
}

#[tokio::test]
async fn a_websocket_is_closed_when_its_session_expires() {
    let up = websocket_upstream().await;
    // The session idles out one second after its last request.
    let s = StackBuilder::new()
        .upstream(up)
        .session(|s| {
            s.set("idle_timeout", "1s");
        })
        .start()
        .await;
    let (b, jar) = s.browser();
    s.login(&b, "alice", "/").await;
    let id = s.session_id(&jar).unwrap();
    let mut ws = websocket_through(s.port, &id).await;
    // Expiry is noticed within a second of it, and the websocket goes.
    let t = Instant::now();
    assert!(
        websocket_ends_within(&mut ws, Duration::from_secs(4)).await,
        "the websocket outlived its session"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "closed before the session expired: {:?}",
        t.elapsed()
    );
}
