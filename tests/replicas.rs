//! Several unigate replicas sharing one real `redis-server` (started by the
//! test on a free loopback port): a login on replica A works on replica B;
//! a back-channel logout posted to B ends the session on A within a second;
//! a front-channel logout on B does too, and a module cookie issued on A is
//! refused on B once its login ended, and kept from the module beside
//! another user's session (user switch); an admin revoke on B closes a
//! websocket open on A; session records in Redis are unreadable without the key; Redis killed
//! mid-test fails closed with a 503 page, and everything recovers by itself
//! when it comes back.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use unigate::demo_module::DemoModuleServer;
use unigate::gateway::config::GatewayConfig;
use unigate::gateway::server::{GatewayServer, free_port};
use unigate::oidc::logout_token::BACKCHANNEL_EVENT;

struct Replicas {
    idp: unigate::idp::IdpServer,
    _module: DemoModuleServer,
    a: GatewayServer,
    b: GatewayServer,
    redis: Redis,
    dir: std::path::PathBuf,
}

fn url(port: u16, path: &str) -> String {
    format!("http://{HOST}:{port}{path}")
}

/// A browser for both replicas (one cookie jar: cookies ignore ports).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .unwrap()
}

/// A browser for both replicas, with its cookie jar at hand.
fn browser_with_jar() -> (reqwest::Client, std::sync::Arc<reqwest::cookie::Jar>) {
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let b = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .unwrap();
    (b, jar)
}

/// What the module saw of a request to `/api/whoami` on `port`.
async fn whoami(b: &reqwest::Client, port: u16) -> serde_json::Value {
    let res = b.get(url(port, "/api/whoami")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// A replica on `port` in front of `module`, its sessions in the Redis
/// named by the files of `dir` (`redis_url`, `encryption_key`), with an
/// admin listener; `session` edits its `[session]`.
async fn replica(
    port: u16,
    issuer: &str,
    dir: &std::path::Path,
    module: SocketAddr,
    session: impl FnOnce(&mut toml::Table),
) -> GatewayServer {
    let mut config = gateway_table(port, issuer);
    config.table("identity_provider").remove("api_audience");
    config
        .table("session")
        .set("store", "redis")
        .set("redis_url", "file:redis_url")
        .set("encryption_key", "file:encryption_key")
        .set("redis_prefix", "test");
    session(config.table("session"));
    config
        .table("admin")
        .set("address", "127.0.0.1:0")
        .set("token", "file:secret");
    let portal = table_of(|m| {
        m.set("name", "portal")
            .set("hosts", vec![HOST])
            .set("upstream", module.to_string())
            .set("access_groups", vec!["portal-users"])
            .set("logout_paths", vec!["/logout"])
            .set("session_cookies", vec!["portal_session"]);
    });
    config.set("module", vec![portal]);
    let cfg = GatewayConfig::from_toml(&config_text(&config), dir).unwrap_or_else(|e| panic!("{e}"));
    GatewayServer::start(cfg).await.expect("replica starts")
}

async fn replicas() -> Replicas {
    replicas_in_front_of(None, |_| {}).await
}

/// Two replicas in front of the demo module, or of `upstream`, `session`
/// editing their `[session]`.
async fn replicas_in_front_of(upstream: Option<SocketAddr>, session: impl Fn(&mut toml::Table)) -> Replicas {
    let (pa, pb) = (free_port().unwrap(), free_port().unwrap());
    let redis = Redis::start(free_port().unwrap()).await;
    let mut idp_cfg = demo_config();
    let mut client = test_client(None, None);
    for p in [pa, pb] {
        client
            .redirect_uris
            .push(format!("http://{HOST}:{p}/_unigate/callback"));
        client.post_logout_redirect_uris.push(format!("http://{HOST}:{p}/"));
    }
    idp_cfg.clients.push(client);
    let idp = start_idp(idp_cfg).await;
    // Both replicas sign with their own keys: the module trusts A's.
    let module = portal_module(pa).await;
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    std::fs::write(dir.join("redis_url"), format!("redis://127.0.0.1:{}/0", redis.port)).unwrap();
    std::fs::write(dir.join("encryption_key"), "a-test-key-of-more-than-32-characters!").unwrap();
    let target = upstream.unwrap_or(module.addr);
    let a = replica(pa, idp.issuer(), &dir, target, &session).await;
    let b = replica(pb, idp.issuer(), &dir, target, &session).await;
    Replicas {
        idp,
        _module: module,
        a,
        b,
        redis,
        dir,
    }
}

/// Two replicas in front of a websocket module (`session` editing their
/// `[session]`), alice logged in on A, and a websocket open through A: the
/// replicas, her browser, her session (id and A's object) and the socket.
async fn websocket_on_a(
    session: impl Fn(&mut toml::Table),
) -> (
    Replicas,
    reqwest::Client,
    String,
    std::sync::Arc<unigate::session::Session>,
    Ws,
) {
    let up = websocket_upstream().await;
    let r = replicas_in_front_of(Some(up), session).await;
    let b = login(&r.idp, r.a.addr.port()).await;
    let (id, session) = r.a.gateway.cached_sessions().pop().expect("A holds the session");
    let ws = websocket_through(r.a.addr.port(), &id).await;
    (r, b, id, session, ws)
}

/// Logs alice in through the replica on `port`; returns the browser.
async fn login(idp: &unigate::idp::IdpServer, port: u16) -> reqwest::Client {
    login_as(idp, port, "alice", browser()).await
}

/// Logs `user` in through the replica on `port` with browser `b`.
async fn login_as(idp: &unigate::idp::IdpServer, port: u16, user: &str, b: reqwest::Client) -> reqwest::Client {
    let res = b
        .get(url(port, "/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let res = b.get(location(&res)).send().await.unwrap();
    let next = location(&res);
    assert!(next.starts_with("/login?flow="), "{next}");
    let code = current_code(&totp_secret(idp, user));
    let res = post_login(
        &b,
        idp.issuer(),
        &next,
        user,
        &company(idp, user),
        &password(user),
        &code,
    )
    .await;
    let callback = location(&res);
    let res = b.get(&callback).send().await.unwrap();
    assert_eq!(res.status(), 302, "callback");
    b
}

/// A valid logout token for the IdP session `sid`, signed by the IdP.
fn logout_token(idp: &unigate::idp::IdpServer, sid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    idp.provider
        .keys
        .current(Algorithm::ES256)
        .sign(
            "logout+jwt",
            &json!({"iss": idp.issuer(), "aud": CLIENT, "iat": now, "exp": now + 120,
                    "jti": unigate::idp::store::random_token(), "sid": sid,
                    "events": {BACKCHANNEL_EVENT: {}}}),
        )
        .unwrap()
}

/// A module cookie sent alone to the replica on `port`, after its login
/// ended: expired, and the browser sent to log in.
async fn module_cookie_is_expired(r: &Replicas, port: u16, cookie: &str) {
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .unwrap()
        .get(url(port, "/"))
        .header("accept", "text/html")
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert!(location(&res).starts_with(&format!("{}/authorize?", r.idp.issuer())));
    assert!(
        res.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("portal_session=;")),
        "the module cookie is expired"
    );
}

async fn status(b: &reqwest::Client, u: &str) -> u16 {
    b.get(u)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

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
