//! Two unigate replicas sharing one real `redis-server` (started on a free
//! loopback port) in front of the demo portal, with the IdP: a browser for
//! both, logging in through either, a logout token, and what the module saw.

use std::net::SocketAddr;
use std::time::SystemTime;

use jsonwebtoken::Algorithm;
use serde_json::json;
use unigate::demo_module::DemoModuleServer;
use unigate::gateway::config::GatewayConfig;
use unigate::gateway::server::{GatewayServer, free_port};
use unigate::oidc::logout_token::BACKCHANNEL_EVENT;

use super::{
    CLIENT, HOST, Redis, SECRET, TomlEdit, Ws, company, config_text, current_code, demo_config, gateway_table,
    location, password, portal_module, post_login, start_idp, table_of, test_client, totp_secret, websocket_through,
    websocket_upstream,
};

pub struct Replicas {
    pub idp: unigate::idp::IdpServer,
    pub _module: DemoModuleServer,
    pub a: GatewayServer,
    pub b: GatewayServer,
    pub redis: Redis,
    pub dir: std::path::PathBuf,
}

pub fn url(port: u16, path: &str) -> String {
    format!("http://{HOST}:{port}{path}")
}

/// A browser for both replicas (one cookie jar: cookies ignore ports).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .unwrap()
}

/// A browser for both replicas, with its cookie jar at hand.
pub fn browser_with_jar() -> (reqwest::Client, std::sync::Arc<reqwest::cookie::Jar>) {
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
pub async fn whoami(b: &reqwest::Client, port: u16) -> serde_json::Value {
    let res = b.get(url(port, "/api/whoami")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// A replica on `port` in front of `module`, its sessions in the Redis
/// named by the files of `dir` (`redis_url`, `encryption_key`), with an
/// admin listener; `session` edits its `[session]`.
pub async fn replica(
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
            .set("login", "automatic")
            .set("logout_paths", vec!["/logout"])
            .set("session_cookies", vec!["portal_session"]);
    });
    config.set("module", vec![portal]);
    let cfg = GatewayConfig::from_toml(&config_text(&config), dir).unwrap_or_else(|e| panic!("{e}"));
    GatewayServer::start(cfg).await.expect("replica starts")
}

pub async fn replicas() -> Replicas {
    replicas_in_front_of(None, |_| {}).await
}

/// Two replicas in front of the demo module, or of `upstream`, `session`
/// editing their `[session]`.
pub async fn replicas_in_front_of(upstream: Option<SocketAddr>, session: impl Fn(&mut toml::Table)) -> Replicas {
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
pub async fn websocket_on_a(
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
pub async fn login(idp: &unigate::idp::IdpServer, port: u16) -> reqwest::Client {
    login_as(idp, port, "alice", browser()).await
}

/// Logs `user` in through the replica on `port` with browser `b`.
pub async fn login_as(idp: &unigate::idp::IdpServer, port: u16, user: &str, b: reqwest::Client) -> reqwest::Client {
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
pub fn logout_token(idp: &unigate::idp::IdpServer, sid: &str) -> String {
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
pub async fn module_cookie_is_expired(r: &Replicas, port: u16, cookie: &str) {
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

pub async fn status(b: &reqwest::Client, u: &str) -> u16 {
    b.get(u)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
