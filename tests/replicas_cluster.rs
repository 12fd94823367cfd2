//! Two unigate replicas on a real Redis Cluster (three masters with a
//! replica each, started here on loopback): a login on one works on the
//! other, and a back-channel logout posted to one ends the session on the
//! other within a second, also after the revocation channel's slot moved
//! to another master; a session keeps working while its slot moves (`ASK`,
//! `MOVED`); a master killed — the sessions on its shard fail closed (503)
//! while those on the other shards keep working, a logout there is refused
//! until a replica holds it again, and everything works again, by itself,
//! once its replica is promoted; the master of the revocation channel
//! killed — every session fails closed until its replica takes over.

mod common;

use std::time::{Duration, Instant};

use common::replicas::{
    Replicas, browser_with_jar, login, login_as, logout_token, replicas_in_front_of, status, url, whoami,
};
use common::*;

/// Two replicas on `cluster`, knowing three of its nodes, trusting their
/// copy of a session for `local_cache`, asking `wait` replicas to hold a
/// logout (None: the default, none).
async fn replicas_on(cluster: &RedisCluster, local_cache: &'static str, wait: Option<u32>) -> Replicas {
    let all = cluster.urls();
    let seeds = vec![all[0].clone(), all[3].clone(), all[5].clone()];
    replicas_in_front_of(None, move |s| {
        s.remove("redis_url");
        s.set("redis_cluster", seeds.clone())
            .set("redis_local_cache", local_cache);
        if let Some(n) = wait {
            s.set("redis_wait_replicas", n as i64);
        }
    })
    .await
}

/// The channel revocations travel on.
const REVOKED: &str = "{test:bus}:revoked";

/// How many subscribe to the revocation channel on the node on `port`.
async fn subscribers(port: u16) -> i64 {
    let (_, count): (String, i64) = RedisCluster::ask(port, redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(REVOKED))
        .await
        .unwrap_or_default();
    count
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

/// A back-channel logout of the session in `jar` posted to B ends it on
/// A within a second.
async fn logout_on_b_ends_a_within_a_second(r: &Replicas, b: &reqwest::Client, jar: &reqwest::cookie::Jar) {
    let (pa, pb) = (r.a.addr.port(), r.b.addr.port());
    let sid = sid_of(r, jar, pa).await;
    let t = Instant::now();
    assert_eq!(backchannel_logout(pb, &logout_token(&r.idp, &sid)).await, 200);
    wait_until(
        "A refuses the session",
        Duration::from_secs(1).saturating_sub(t.elapsed()),
        async || status(b, &url(pa, "/ping")).await == 302,
    )
    .await;
}

#[tokio::test]
async fn a_login_on_one_replica_works_on_the_other_and_a_logout_on_it_ends_both() {
    let cluster = RedisCluster::start().await;
    let r = replicas_on(&cluster, "30s", None).await;
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
    let lock_key = format!("test:refreshing:{{{key}}}");
    assert_eq!(cluster.master_of(&lock_key).await, home);
    let slot = async |k: &str| -> i64 {
        RedisCluster::ask(home, redis::cmd("CLUSTER").arg("KEYSLOT").arg(k))
            .await
            .unwrap()
    };
    assert_eq!(
        slot(&lock_key).await,
        slot(&key).await,
        "one slot, not one master by chance"
    );
    store.unlock_refresh(&h, &lock).await.unwrap();
    assert_eq!(whoami(&b, pb).await["headers"]["x-kaseyaone-user"], "alice");
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
    // Both replicas hear revocations on the master that owns the
    // channel's slot, nowhere else: no hop over the cluster bus.
    let bus = cluster.owner_of(REVOKED).await;
    assert_eq!(subscribers(bus).await, 2);
    for n in &cluster.nodes {
        if n.port != bus {
            assert_eq!(subscribers(n.port).await, 0, "subscribed on {}", n.port);
        }
    }
    // The slot moves to another master: the old one ends the
    // subscriptions, the replicas fail closed for a moment, subscribe on
    // the new owner, and hear revocations there.
    let to = *cluster.masters().await.iter().find(|&&m| m != bus).unwrap();
    let channel_slot: i64 = RedisCluster::ask(bus, redis::cmd("CLUSTER").arg("KEYSLOT").arg(REVOKED))
        .await
        .unwrap();
    let to_id = RedisCluster::node_id(to).await;
    for m in cluster.masters().await {
        let _: () = RedisCluster::ask(
            m,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(channel_slot)
                .arg("NODE")
                .arg(&to_id),
        )
        .await
        .unwrap();
    }
    wait_until("both subscribe on the new owner", Duration::from_secs(5), async || {
        subscribers(to).await == 2
    })
    .await;
    assert_eq!(subscribers(bus).await, 0);
    for p in [pa, pb] {
        wait_until("the replica serves again", Duration::from_secs(5), async || {
            status(&b, &url(p, "/ping")).await == 200
        })
        .await;
    }
    logout_on_b_ends_a_within_a_second(&r, &b, &jar).await;
}

#[tokio::test]
async fn a_failed_master_fails_its_sessions_closed_and_the_other_shards_keep_working() {
    let mut cluster = RedisCluster::start().await;
    // No local copies: every request reads its session from the cluster;
    // a logout counts once a replica holds it.
    let r = replicas_on(&cluster, "1ms", Some(1)).await;
    let (pa, pb) = (r.a.addr.port(), r.b.addr.port());
    // The victim: a master other than the revocation channel's (whose
    // loss fails every session closed: the last test).
    let bus = cluster.owner_of(REVOKED).await;
    let victim = *cluster.masters().await.iter().find(|&&m| m != bus).unwrap();
    // Sessions until the victim and another shard hold one each.
    let mut sessions = Vec::new();
    for _ in 0..40 {
        let (b, jar) = browser_with_jar();
        let b = login_as(&r.idp, pa, "alice", b).await;
        let master = cluster.master_of(&session_key(&jar, pa)).await;
        sessions.push((b, jar, master));
        if sessions.iter().any(|s| s.2 == victim) && sessions.iter().any(|s| s.2 != victim) {
            break;
        }
    }
    let (on_victim, elsewhere): (Vec<_>, Vec<_>) = sessions.iter().partition(|s| s.2 == victim);
    assert!(
        !elsewhere.is_empty() && !on_victim.is_empty(),
        "forty sessions on one shard"
    );
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
    // Its new master has no replica yet: a logout of one of its sessions
    // could be lost with it, so it is answered 503 and the IdP retries
    // (whatever part of it was done stays done) ...
    let (b, jar, _) = on_victim[0];
    let sid = sid_of(&r, jar, pa).await;
    assert_eq!(backchannel_logout(pb, &logout_token(&r.idp, &sid)).await, 503);
    // ... until the old master is back, as the new one's replica.
    cluster.restart(victim).await;
    cluster.wait_ok(3, Duration::from_secs(20)).await;
    // A back-channel logout of one of its sessions, posted to B, ends it
    // on A; a new login works on both.
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
    let r = replicas_on(&cluster, "1ms", None).await;
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
    let left: Vec<u8> = RedisCluster::ask(to, redis::cmd("GET").arg(&key)).await.unwrap();
    assert_eq!(left, b"-", "the record is gone: its tombstone is there");
}

#[tokio::test]
async fn the_revocation_channels_master_killed_fails_every_session_closed_until_its_replica_takes_over() {
    let mut cluster = RedisCluster::start().await;
    let r = replicas_on(&cluster, "30s", None).await;
    let (pa, pb) = (r.a.addr.port(), r.b.addr.port());
    let (b, jar) = browser_with_jar();
    let b = login_as(&r.idp, pa, "alice", b).await;
    assert_eq!(status(&b, &url(pb, "/ping")).await, 200);
    let bus = cluster.owner_of(REVOKED).await;
    let replica = cluster.replica_of(bus).await;
    cluster.kill(bus);
    // No replica hears revocations: even a session held in memory, on a
    // shard that lives, is refused.
    for p in [pa, pb] {
        wait_until("the replica fails closed", Duration::from_secs(3), async || {
            status(&b, &url(p, "/ping")).await == 503
        })
        .await;
    }
    // The cluster promotes the replica by itself; both subscribe there
    // and serve again.
    let t = Instant::now();
    wait_until(
        "both subscribe on the promoted replica",
        Duration::from_secs(20),
        async || subscribers(replica).await == 2,
    )
    .await;
    for p in [pa, pb] {
        wait_until("the replica serves again", Duration::from_secs(5), async || {
            status(&b, &url(p, "/ping")).await == 200
        })
        .await;
    }
    eprintln!("serving again {:?} after the promotion began", t.elapsed());
    logout_on_b_ends_a_within_a_second(&r, &b, &jar).await;
}
