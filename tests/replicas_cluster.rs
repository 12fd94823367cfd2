//! Two unigate replicas on a real Redis Cluster (three masters with a
//! replica each, started here on loopback): a login on one works on the
//! other, and a back-channel logout posted to one ends the session on the
//! other within a second, also after the nodes they subscribe on went; a
//! session keeps working while its slot moves to another master (`ASK`,
//! `MOVED`); a master killed — the sessions on its shard fail closed (503)
//! while those on the other shards keep working, and everything works
//! again, by itself, once its replica is promoted.

mod common;

use std::time::{Duration, Instant};

use common::replicas::{Replicas, browser_with_jar, login, login_as, logout_token, replicas_in_front_of, status, url};
use common::*;

/// Two replicas on `cluster`, knowing three of its nodes, trusting their
/// copy of a session for `local_cache`.
async fn replicas_on(cluster: &RedisCluster, local_cache: &'static str) -> Replicas {
    let all = cluster.urls();
    let seeds = vec![all[0].clone(), all[3].clone(), all[5].clone()];
    replicas_in_front_of(None, move |s| {
        s.remove("redis_url");
        s.set("redis_cluster", seeds.clone())
            .set("redis_local_cache", local_cache);
    })
    .await
}

/// The id of the session in `jar` (logged in through `port`).
fn session_id(jar: &reqwest::cookie::Jar, port: u16) -> String {
    use reqwest::cookie::CookieStore;
    let cookies = jar.cookies(&url(port, "/").parse().unwrap()).expect("cookies");
    cookies
        .to_str()
        .unwrap()
        .split("; ")
        .find_map(|kv| kv.strip_prefix("unigate="))
        .expect("a session cookie")
        .to_string()
}

/// The Redis key of the session in `jar` (logged in through `port`).
fn session_key(jar: &reqwest::cookie::Jar, port: u16) -> String {
    let id = session_id(jar, port);
    format!("test:s:{}", hex::encode(unigate::session::redis::id_hash(&id)))
}

/// The IdP session (`sid`) of the session in `jar`, as `port`'s replica
/// reads it from the store.
async fn sid_of(r: &Replicas, jar: &reqwest::cookie::Jar, port: u16) -> String {
    let id = session_id(jar, port);
    // The session object itself when the replica still has one, else what
    // the record read says.
    let mut sid = None;
    let held =
        r.a.gateway
            .state
            .sessions
            .get(&id, unigate::clock::unix_now(), |rec| {
                sid = rec.identity.sid.as_deref().map(str::to_string);
                None
            })
            .await
            .unwrap();
    held.and_then(|s| s.identity.sid.as_deref().map(str::to_string))
        .or(sid)
        .expect("the record names its IdP session")
}

/// Posts a back-channel logout token to the replica on `port`.
async fn backchannel_logout(port: u16, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/_unigate/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_login_on_one_replica_works_on_the_other_and_a_logout_on_it_ends_both() {
    let mut cluster = RedisCluster::start().await;
    let r = replicas_on(&cluster, "30s").await;
    let (pa, pb) = (r.a.addr.port(), r.b.addr.port());
    let (b, jar) = browser_with_jar();
    let b = login_as(&r.idp, pa, "alice", b).await;
    assert_eq!(status(&b, &url(pa, "/ping")).await, 200);
    // The record is on one of the masters, and the right to refresh it on
    // the same one (a hash tag); B, which never saw the session, finds it.
    let key = session_key(&jar, pa);
    let home = cluster.master_of(&key).await;
    let store = r.a.gateway.state.sessions.redis().expect("the shared store");
    let h = unigate::session::redis::id_hash(&session_id(&jar, pa));
    let lock = store
        .lock_refresh(&h, Duration::from_secs(5))
        .await
        .unwrap()
        .expect("taken");
    assert_eq!(cluster.master_of(&format!("test:refreshing:{{{key}}}")).await, home);
    store.unlock_refresh(&h, &lock).await.unwrap();
    let who: serde_json::Value = b
        .get(url(pb, "/api/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["headers"]["x-kaseyaone-user"], "alice");
    // Both hold a copy now. A back-channel logout posted to B ends it on A
    // within a second: the revocation crossed the cluster.
    let sid = r.a.gateway.cached_sessions()[0].1.identity.sid.clone().expect("a sid");
    let token = logout_token(&r.idp, &sid);
    let t = Instant::now();
    assert_eq!(backchannel_logout(pb, &token).await, 200);
    wait_until(
        "A refuses the session",
        Duration::from_secs(1).saturating_sub(t.elapsed()),
        async || status(&b, &url(pa, "/ping")).await == 302,
    )
    .await;
    assert_eq!(status(&b, &url(pb, "/ping")).await, 302);
    // Its logout token is a replay on A: the jti is shared.
    assert_eq!(backchannel_logout(pa, &token).await, 400);
    // And a new login works on either.
    let (b, jar) = browser_with_jar();
    let b = login_as(&r.idp, pb, "alice", b).await;
    assert_eq!(status(&b, &url(pa, "/ping")).await, 200);
    // The replicas subscribe on replica nodes (a master's failover leaves
    // them alone). Those nodes go: A and B fail closed for a moment,
    // subscribe elsewhere, and hear revocations again.
    let mut subscribed = Vec::new();
    for n in &cluster.nodes {
        let (_, count): (String, i64) =
            RedisCluster::ask(n.port, redis::cmd("PUBSUB").arg("NUMSUB").arg("test:revoked"))
                .await
                .unwrap();
        if count > 0 {
            subscribed.push(n.port);
        }
    }
    assert!(!subscribed.is_empty());
    for &p in &subscribed {
        let role: String = RedisCluster::ask(p, redis::cmd("INFO").arg("replication"))
            .await
            .unwrap();
        assert!(role.contains("role:slave"), "subscribed on a master");
        cluster.kill(p);
    }
    for p in [pa, pb] {
        wait_until("the replica serves again", Duration::from_secs(5), async || {
            status(&b, &url(p, "/ping")).await == 200
        })
        .await;
    }
    let sid = sid_of(&r, &jar, pa).await;
    let t = Instant::now();
    assert_eq!(backchannel_logout(pb, &logout_token(&r.idp, &sid)).await, 200);
    wait_until(
        "A refuses the session",
        Duration::from_secs(1).saturating_sub(t.elapsed()),
        async || status(&b, &url(pa, "/ping")).await == 302,
    )
    .await;
}

#[tokio::test]
async fn a_failed_master_fails_its_sessions_closed_and_the_other_shards_keep_working() {
    let mut cluster = RedisCluster::start().await;
    // No local copies: every request reads its session from the cluster.
    let r = replicas_on(&cluster, "1ms").await;
    let (pa, pb) = (r.a.addr.port(), r.b.addr.port());
    // Sessions until two shards hold one each.
    let mut sessions = Vec::new();
    for _ in 0..20 {
        let (b, jar) = browser_with_jar();
        let b = login_as(&r.idp, pa, "alice", b).await;
        let master = cluster.master_of(&session_key(&jar, pa)).await;
        sessions.push((b, jar, master));
        if sessions.iter().any(|s| s.2 != sessions[0].2) {
            break;
        }
    }
    let victim = sessions[0].2;
    let (on_victim, elsewhere): (Vec<_>, Vec<_>) = sessions.iter().partition(|s| s.2 == victim);
    assert!(!elsewhere.is_empty(), "twenty sessions on one shard");
    for (b, _, _) in &sessions {
        for p in [pa, pb] {
            assert_eq!(status(b, &url(p, "/ping")).await, 200);
        }
    }
    // The victim's replica waits to be told (below): the outage lasts as
    // long as this test needs to look at it.
    let replica = cluster.replica_of(victim).await;
    let _: () = RedisCluster::ask(
        replica,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-replica-no-failover")
            .arg("yes"),
    )
    .await
    .unwrap();
    cluster.kill(victim);
    // A session on the dead shard: the 503 page, on both replicas.
    let dead = &on_victim[0].0;
    for p in [pb, pa] {
        wait_until(
            "the dead shard's session fails closed",
            Duration::from_secs(5),
            async || status(dead, &url(p, "/ping")).await == 503,
        )
        .await;
    }
    let res = dead
        .get(url(pb, "/ping"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("session store cannot be reached"));
    // The others keep working, on both replicas, before and after the
    // cluster holds the master failed.
    let others_work = async || {
        for (b, _, _) in &elsewhere {
            for p in [pa, pb] {
                assert_eq!(status(b, &url(p, "/ping")).await, 200, "a session on a live shard");
            }
        }
    };
    others_work().await;
    wait_until(
        "the cluster holds the master failed",
        Duration::from_secs(10),
        async || {
            others_work().await;
            RedisCluster::marked_failed(replica, victim).await
        },
    )
    .await;
    others_work().await;
    assert_eq!(status(dead, &url(pa, "/ping")).await, 503, "still no master for it");
    // Its replica takes over: everything works again by itself.
    let _: () = RedisCluster::ask(replica, redis::cmd("CLUSTER").arg("FAILOVER").arg("TAKEOVER"))
        .await
        .unwrap();
    cluster.wait_ok(2, Duration::from_secs(10)).await;
    for (_, jar, _) in &on_victim {
        assert_eq!(
            cluster.master_of(&session_key(jar, pa)).await,
            replica,
            "the record was copied"
        );
    }
    let t = Instant::now();
    for (b, _, _) in &on_victim {
        for p in [pa, pb] {
            wait_until(
                "the dead shard's sessions work again",
                Duration::from_secs(5),
                async || status(b, &url(p, "/ping")).await == 200,
            )
            .await;
        }
    }
    eprintln!("sessions of the failed shard back {:?} after the takeover", t.elapsed());
    others_work().await;
    // A back-channel logout of one of its sessions, posted to B, ends it
    // on A; a new login works on both.
    let (b, jar, _) = on_victim[0];
    let sid = sid_of(&r, jar, pa).await;
    assert_eq!(backchannel_logout(pb, &logout_token(&r.idp, &sid)).await, 200);
    wait_until("A refuses the session", Duration::from_secs(1), async || {
        status(b, &url(pa, "/ping")).await == 302
    })
    .await;
    let fresh = login(&r.idp, pb).await;
    assert_eq!(status(&fresh, &url(pa, "/ping")).await, 200);
}

#[tokio::test]
async fn a_session_keeps_working_while_its_slot_moves_to_another_master() {
    let cluster = RedisCluster::start().await;
    let r = replicas_on(&cluster, "1ms").await;
    let (pa, pb) = (r.a.addr.port(), r.b.addr.port());
    let (b, jar) = browser_with_jar();
    let b = login_as(&r.idp, pa, "alice", b).await;
    let key = session_key(&jar, pa);
    let from = cluster.master_of(&key).await;
    let to = *cluster.masters().await.iter().find(|&&m| m != from).unwrap();
    let slot: i64 = RedisCluster::ask(from, redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key))
        .await
        .unwrap();
    let (from_id, to_id) = (RedisCluster::node_id(from).await, RedisCluster::node_id(to).await);
    let works = async || {
        for p in [pa, pb] {
            assert_eq!(status(&b, &url(p, "/ping")).await, 200, "the session on {p}");
        }
    };
    works().await;
    // Being moved: `to` imports the slot, `from` hands its keys over; a
    // request for a key already gone is sent on (`ASK`).
    let setslot = |state: &str, id: &str| {
        let mut c = redis::cmd("CLUSTER");
        c.arg("SETSLOT").arg(slot).arg(state).arg(id);
        c
    };
    let _: () = RedisCluster::ask(to, &setslot("IMPORTING", &from_id)).await.unwrap();
    let _: () = RedisCluster::ask(from, &setslot("MIGRATING", &to_id)).await.unwrap();
    works().await;
    let keys: Vec<String> = RedisCluster::ask(from, redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(100))
        .await
        .unwrap();
    assert!(keys.contains(&key));
    let _: () = RedisCluster::ask(
        from,
        redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys),
    )
    .await
    .unwrap();
    works().await;
    // Moved: every master knows the slot's new home (`MOVED`).
    for m in cluster.masters().await {
        let _: () = RedisCluster::ask(m, &setslot("NODE", &to_id)).await.unwrap();
    }
    works().await;
    assert_eq!(cluster.master_of(&key).await, to);
    // A back-channel logout posted to B ends it, at its new home.
    let sid = sid_of(&r, &jar, pa).await;
    assert_eq!(backchannel_logout(pb, &logout_token(&r.idp, &sid)).await, 200);
    assert_eq!(status(&b, &url(pa, "/ping")).await, 302);
    assert!(
        RedisCluster::ask::<i64>(to, redis::cmd("EXISTS").arg(&key)).await == Ok(0),
        "the record is gone"
    );
}
