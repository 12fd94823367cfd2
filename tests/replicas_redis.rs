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

/// A session record for the store tests below: user `sub`, IdP session
/// `sid`, ending `expires_at`.
fn record(sub: &str, sid: &str, expires_at: u64) -> unigate::session::redis::Record {
    unigate::session::redis::Record {
        module: "portal".into(),
        identity: unigate::session::Identity {
            sub: sub.into(),
            sid: Some(sid.into()),
            email: format!("{sub}@acme.example").into(),
            name: sub.into(),
            username: sub.into(),
            company: "acme".into(),
            groups: Vec::new(),
            module_user: None,
        },
        id_token: None,
        refresh_token: None,
        access_exp: 0,
        link_pending: false,
        expires_at,
        generation: 0,
    }
}

#[tokio::test]
async fn a_login_stored_while_its_logout_runs_stays_ended() {
    use unigate::session::redis::{IndexKind, id_hash};
    let r = replicas().await;
    let store = r.a.gateway.state.sessions.redis().expect("the shared store").clone();
    let until = unigate::clock::unix_now() + 3600;
    let ttl = Duration::from_secs(600);
    // The logout ran first and found nothing: what arrives after it is
    // refused, a new record and a change alike.
    let h = id_hash("late");
    assert_eq!(store.delete(&[h]).await.unwrap(), [false]);
    assert!(
        !store
            .save(&h, &record("u", "sid-late", until), ttl, false)
            .await
            .unwrap()
    );
    assert!(
        !store
            .save(&h, &record("u", "sid-late", until), ttl, true)
            .await
            .unwrap()
    );
    assert!(store.load(&h).await.unwrap().is_none() && !store.exists(&h).await.unwrap());
    assert_eq!(store.ttl(&h).await.unwrap(), None, "a tombstone is not a session");
    // The race itself, step by step: a login has written its index entry
    // but not yet its record when the logout of its IdP session runs. The
    // logout sees the entry, finds no record, and leaves a tombstone; the
    // record that comes after it is refused.
    let (sid, h) = ("sid-race", id_hash("race"));
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", r.redis.port)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(format!("test:ix:sid:{}", hex::encode(id_hash(sid))))
        .arg(until)
        .arg(hex::encode(h))
        .query_async(&mut c)
        .await
        .unwrap();
    let listed = store.take_index(IndexKind::Sid, sid).await.unwrap();
    assert_eq!(listed, [h], "the logout sees the login's entry");
    assert_eq!(store.delete_indexed(IndexKind::Sid, sid, &listed).await.unwrap(), 0);
    assert!(
        !store.save(&h, &record("racer", sid, until), ttl, false).await.unwrap(),
        "the record after the logout"
    );
    assert!(store.load(&h).await.unwrap().is_none(), "the login survived its logout");
    // Side by side, however they interleave: a login the logout saw does
    // not survive it.
    for i in 0..100 {
        let (sid, h) = (format!("sid-side-{i}"), id_hash(&format!("side-{i}")));
        let rec = record("racer", &sid, until);
        let (saved, listed) = tokio::join!(store.save(&h, &rec, ttl, false), async {
            let listed = store.take_index(IndexKind::Sid, &sid).await.unwrap();
            store.delete_indexed(IndexKind::Sid, &sid, &listed).await.unwrap();
            listed
        });
        saved.unwrap();
        if listed.contains(&h) {
            assert!(store.load(&h).await.unwrap().is_none(), "side by side, {i}");
        }
    }
    // A normal login after all this is stored and found by its logout.
    let h = id_hash("fresh");
    assert!(
        store
            .save(&h, &record("u", "sid-fresh", until), ttl, false)
            .await
            .unwrap()
    );
    let listed = store.take_index(IndexKind::Sid, "sid-fresh").await.unwrap();
    assert_eq!(listed, [h]);
    assert_eq!(
        store
            .delete_indexed(IndexKind::Sid, "sid-fresh", &listed)
            .await
            .unwrap(),
        1
    );
    assert!(store.load(&h).await.unwrap().is_none());
}

#[tokio::test]
async fn an_index_forgets_the_sessions_that_expired() {
    use unigate::session::redis::{IndexKind, id_hash};
    let r = replicas().await;
    let store = r.a.gateway.state.sessions.redis().expect("the shared store").clone();
    let now = unigate::clock::unix_now();
    let ttl = Duration::from_secs(1);
    // A user who logs in every day and never logs out: yesterday's
    // sessions (ended by their absolute timeout) leave the index when the
    // next one is written, and a logout never sees them.
    for i in 0..5 {
        let h = id_hash(&format!("old-{i}"));
        assert!(
            store
                .save(&h, &record("daily", &format!("s{i}"), now + 1), ttl, false)
                .await
                .unwrap()
        );
    }
    let index = format!("test:ix:sub:{}", hex::encode(id_hash("daily")));
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", r.redis.port)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let count = async |c: &mut redis::aio::MultiplexedConnection| -> i64 {
        redis::cmd("ZCARD").arg(&index).query_async(c).await.unwrap()
    };
    assert_eq!(count(&mut c).await, 5);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        store.take_index(IndexKind::Sub, "daily").await.unwrap().is_empty(),
        "expired: not listed"
    );
    let today = id_hash("today");
    assert!(
        store
            .save(
                &today,
                &record("daily", "s9", now + 3600),
                Duration::from_secs(60),
                false
            )
            .await
            .unwrap()
    );
    assert_eq!(count(&mut c).await, 1, "the expired entries were pruned");
    assert_eq!(store.take_index(IndexKind::Sub, "daily").await.unwrap(), [today]);
    // An index kept as a plain set by an earlier version is still read,
    // and emptied by the logout.
    let legacy = format!("test:sub:{}", hex::encode(id_hash("veteran")));
    let _: () = redis::cmd("SADD")
        .arg(&legacy)
        .arg(hex::encode(today))
        .query_async(&mut c)
        .await
        .unwrap();
    let listed = store.take_index(IndexKind::Sub, "veteran").await.unwrap();
    assert_eq!(listed, [today]);
    assert_eq!(
        store.delete_indexed(IndexKind::Sub, "veteran", &listed).await.unwrap(),
        1
    );
    let left: i64 = redis::cmd("EXISTS").arg(&legacy).query_async(&mut c).await.unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_write_counts_only_once_the_replicas_asked_for_hold_it() {
    use unigate::session::redis::{Options, RedisStore, Target, id_hash};
    let master = Redis::start(free_port().unwrap()).await;
    let url = format!("redis://127.0.0.1:{}/0", master.port);
    let store = RedisStore::new(
        Target::Url(&url),
        "a secret of at least thirty-two chars!",
        "w",
        Options {
            wait_replicas: Some(1),
            tls_ca: None,
        },
    )
    .unwrap();
    tokio::spawn(store.clone().run(|_| {}, |_| {}, || {}, || {}));
    wait_until("the store connects", Duration::from_secs(5), async || store.healthy()).await;
    let until = unigate::clock::unix_now() + 3600;
    let h = id_hash("w");
    // No replica: nothing confirms the write, and it does not count.
    let err = store
        .save(&h, &record("u", "sid-w", until), Duration::from_secs(60), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("0 of the 1 replicas") && err.contains("redis_wait_replicas"),
        "{err}"
    );
    assert!(store.delete(&[h]).await.is_err(), "a logout no replica holds");
    // With a replica that copies it, both count.
    let port = free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let master_port = master.port.to_string();
    let _replica = Redis::start_with(
        port,
        &[
            "--dir",
            dir.path().to_str().unwrap(),
            "--replicaof",
            "127.0.0.1",
            &master_port,
        ],
    )
    .await;
    let synced = async || {
        let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let Ok(mut c) = c.get_multiplexed_async_connection().await else {
            return false;
        };
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        info.contains("master_link_status:up")
    };
    wait_until("the replica copies", Duration::from_secs(10), synced).await;
    let h = id_hash("w2");
    assert!(
        store
            .save(&h, &record("u", "sid-w2", until), Duration::from_secs(60), false)
            .await
            .unwrap()
    );
    assert_eq!(store.delete(&[h]).await.unwrap(), [true]);
}

#[tokio::test]
async fn redis_over_tls_is_trusted_through_the_configured_ca_only() {
    use unigate::session::redis::{Options, RedisStore, Target, id_hash};
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca();
    let server = leaf(&ca, &["127.0.0.1"], |_| {});
    let ca_pem = ca.pem();
    for (name, text) in [
        ("ca.pem", &ca_pem),
        ("redis.pem", &server.cert_pem),
        ("redis.key", &server.key_pem),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let port = free_port().unwrap();
    let path = |n: &str| dir.path().join(n).display().to_string();
    let mut redis = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--tls-cert-file",
            &path("redis.pem"),
            "--tls-key-file",
            &path("redis.key"),
        ])
        .args(["--tls-ca-cert-file", &path("ca.pem"), "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("rediss://127.0.0.1:{port}/0");
    let open = |ca: Option<Vec<u8>>| {
        let options = Options {
            wait_replicas: None,
            tls_ca: ca,
        };
        let store = RedisStore::new(
            Target::Url(&url),
            "a secret of at least thirty-two chars!",
            "tls",
            options,
        )
        .unwrap();
        tokio::spawn(store.clone().run(|_| {}, |_| {}, || {}, || {}));
        store
    };
    let trusting = open(Some(ca_pem.clone().into_bytes()));
    wait_until("the store connects over TLS", Duration::from_secs(10), async || {
        trusting.healthy()
    })
    .await;
    let h = id_hash("over-tls");
    let until = unigate::clock::unix_now() + 3600;
    assert!(
        trusting
            .save(&h, &record("u", "sid-tls", until), Duration::from_secs(60), false)
            .await
            .unwrap()
    );
    assert_eq!(trusting.load(&h).await.unwrap().unwrap().identity.sub.as_ref(), "u");
    // The system's roots do not know the test CA: no connection, and the
    // store stays closed.
    let system = open(None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !system.healthy(),
        "a server certificate nobody vouches for was accepted"
    );
    let _ = redis.kill();
    let _ = redis.wait();
}
