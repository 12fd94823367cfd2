//! The Redis that unigate replicas share: session records unreadable
//! without the key; Redis killed mid-test failing closed with a 503 (and a
//! websocket closed), everything recovering by itself when it comes back;
//! the master found through Redis Sentinel; a change never written over a
//! record deleted meanwhile; a logout token's `jti` a replay only once its
//! logout is done.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::replicas::{Replicas, browser, login, logout_token, replica, replicas, status, url, websocket_on_a};
use common::*;
use unigate::gateway::server::free_port;

#[tokio::test]
async fn tokens_in_redis_are_sealed() {
    let r = replicas().await;
    let _b = login(&r.idp, r.a.addr.port()).await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", r.redis.port)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("test:s:*").query_async(&mut c).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let raw: Vec<u8> = redis::cmd("GET").arg(&keys[0]).query_async(&mut c).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    for plain in ["eyJ", "alice", "refresh", "portal"] {
        assert!(!text.contains(plain), "`{plain}` readable in Redis");
    }
    // The session id itself is not a key either: only its hash.
    let (id, _) = &r.a.gateway.cached_sessions()[0];
    assert!(!keys[0].contains(id.as_str()) && !text.contains(id.as_str()));
}

#[tokio::test]
async fn redis_down_fails_closed_and_recovers_by_itself() {
    let mut r = replicas().await;
    let pa = r.a.addr.port();
    let b = login(&r.idp, pa).await;
    assert_eq!(status(&b, &url(pa, "/ping")).await, 200);
    let sid = r.a.gateway.cached_sessions()[0]
        .1
        .identity
        .sid
        .as_deref()
        .map(str::to_string)
        .expect("a sid");
    r.redis.kill();
    // Within moments: a clear 503 page, for the session and for new logins.
    let ping = || b.get(url(pa, "/ping")).header("accept", "text/html").send();
    wait_until("A answers 503 without Redis", Duration::from_secs(3), async || {
        ping().await.unwrap().status() == 503
    })
    .await;
    let res = ping().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("session store cannot be reached"));
    let fresh = browser();
    assert_eq!(status(&fresh, &url(pa, "/")).await, 503, "no new logins either");
    // A module cookie unigate cannot look up is not waved through: an API
    // client gets a JSON 503 rather than the module.
    let res = fresh
        .get(url(pa, "/api/whoami"))
        .header("accept", "application/json")
        .header("cookie", "portal_session=never-seen-by-this-replica")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    // A back-channel logout that cannot be carried out is not acknowledged:
    // 503, so that the IdP sends it again.
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{pa}/_unigate/backchannel-logout"))
        .form(&[("logout_token", logout_token(&r.idp, &sid).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["cache-control"], "no-store");
    // Redis comes back (empty: it kept nothing): unigate reconnects alone.
    r.redis = Redis::start(r.redis.port).await;
    wait_until("A recovers with Redis back", Duration::from_secs(10), async || {
        status(&fresh, &url(pa, "/")).await == 302
    })
    .await;
    let b = login(&r.idp, pa).await;
    assert_eq!(status(&b, &url(pa, "/ping")).await, 200);
    let _ = &r.dir;
}

#[tokio::test]
async fn the_master_is_found_through_redis_sentinel() {
    let r = replicas().await;
    // A sentinel watching the test's redis-server as `testmaster`.
    let sport = free_port().unwrap();
    let conf = r.dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sport}\nbind 127.0.0.1\nsentinel monitor testmaster 127.0.0.1 {} 1\n",
            r.redis.port
        ),
    )
    .unwrap();
    let mut sentinel = Redis {
        child: Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel"),
        port: sport,
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", sport)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The IdP knows A's callback: this replica takes A's place.
    let a_port = r.a.addr.port();
    let Replicas {
        idp,
        _module: module,
        a,
        b,
        redis: master,
        dir,
    } = r;
    a.shutdown().await;
    b.shutdown().await;
    let _c = replica(a_port, idp.issuer(), &dir, module.addr, |s| {
        s.remove("redis_url");
        s.set("redis_sentinels", vec![format!("redis://127.0.0.1:{sport}")])
            .set("redis_sentinel_master", "testmaster");
    })
    .await;
    let b = login(&idp, a_port).await;
    assert_eq!(status(&b, &url(a_port, "/ping")).await, 200);
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", master.port)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("test:s:*").query_async(&mut conn).await.unwrap();
    assert_eq!(keys.len(), 1, "the session went to the master the sentinel named");
    sentinel.kill();
}

#[tokio::test]
async fn a_session_revoked_meanwhile_is_never_written_back() {
    let r = replicas().await;
    let pa = r.a.addr.port();
    let b = login(&r.idp, pa).await;
    let (id, held) = r.a.gateway.cached_sessions().pop().expect("A holds the session");
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", r.redis.port)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("test:s:*").query_async(&mut c).await.unwrap();
    assert_eq!(keys.len(), 1);
    // A revocation elsewhere has deleted the record; its message has not
    // reached A yet, while A finishes a change (a link) to the session.
    let _: () = redis::cmd("DEL").arg(&keys[0]).query_async(&mut c).await.unwrap();
    let tokens = held.tokens.lock().unwrap().clone();
    let successor = std::sync::Arc::new(r.a.gateway.build_session(
        unigate::gateway::config::RouteId(0),
        held.identity.clone(),
        tokens,
        held.expires_at,
    ));
    let stored = r.a.gateway.replace_session(&id, &held, successor).await.unwrap();
    assert!(!stored, "the change was written over a revoked session");
    let keys: Vec<String> = redis::cmd("KEYS").arg("test:s:*").query_async(&mut c).await.unwrap();
    assert!(keys.is_empty(), "the session came back: {keys:?}");
    assert_eq!(status(&b, &url(pa, "/ping")).await, 302, "ended on A too");
}

#[tokio::test]
async fn a_logout_tokens_jti_is_a_replay_only_once_its_logout_is_done() {
    let r = replicas().await;
    let (a, b) = (&r.a.gateway, &r.b.gateway);
    assert!(a.state.sessions.claim_jti("j-1").await.unwrap(), "first sight");
    // Its logout failed half-way (the store went away): the IdP's retry,
    // on any replica, may carry it out.
    assert!(
        b.state.sessions.claim_jti("j-1").await.unwrap(),
        "a claim whose logout never finished"
    );
    b.state.sessions.finish_jti("j-1").await;
    assert!(
        !a.state.sessions.claim_jti("j-1").await.unwrap(),
        "done: a replay everywhere"
    );
    assert!(!b.state.sessions.claim_jti("j-1").await.unwrap());
    assert!(a.state.sessions.claim_jti("j-2").await.unwrap(), "another jti");
}

#[tokio::test]
async fn a_websocket_closes_when_its_replica_loses_redis() {
    let (mut r, _b, _, _, mut ws) = websocket_on_a(|_| {}).await;
    // Cut off from Redis, A would not hear of a revocation elsewhere: the
    // websocket does not go on unchecked (noticed within a second).
    r.redis.kill();
    assert!(
        websocket_ends_within(&mut ws, Duration::from_secs(2)).await,
        "the websocket outlived the replica's connection to Redis"
    );
}
