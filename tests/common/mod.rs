//! Shared test fixtures: an embedded identity provider on a free loopback
//! port with the demo directory, an HTTP client that logs in through the
//! real forms, and a small server that records back-channel logout tokens.
#![allow(dead_code)]

pub mod fake_op;

use reqwest::cookie::{CookieStore, Jar};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use unigate::demo_module::{DemoAccount, DemoModuleConfig, DemoModuleServer};
use unigate::gateway::config::GatewayConfig;
use unigate::gateway::server::{GatewayServer, free_port};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::redirect::Policy;
use tokio::sync::mpsc;
use unigate::idp::config::Client;
use unigate::idp::directory::totp_code;
use unigate::idp::{IdpConfig, IdpServer};
use unigate::secret::Secret;
use url::Url;

pub const SECRET: &str = "test-client-secret-0123456789";
pub const CLIENT: &str = "test-app";
pub const REDIRECT: &str = "http://127.0.0.1:1/cb";
pub const POST_LOGOUT: &str = "http://127.0.0.1:1/logged-out";
/// The `aud` of the test client's access tokens, and unigate's
/// `api_audience` in every test stack.
pub const API_AUDIENCE: &str = "https://api.unigate.test";

/// Demo passwords, as the README lists them.
pub fn password(user: &str) -> String {
    format!("{user}-demo-pass")
}

pub fn demo_config() -> IdpConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut cfg = IdpConfig::load(&root.join("idp.demo.toml")).expect("demo config loads");
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.login.totp_replay_protection = false;
    cfg.outbox_dir = tempfile::tempdir().unwrap().keep();
    cfg
}

pub fn test_client(backchannel: Option<&str>, frontchannel: Option<&str>) -> Client {
    Client {
        client_id: CLIENT.into(),
        client_secret: Secret::new(SECRET),
        redirect_uris: vec![REDIRECT.into()],
        post_logout_redirect_uris: vec![POST_LOGOUT.into()],
        backchannel_logout_uri: backchannel.map(|u| Url::parse(u).unwrap()),
        frontchannel_logout_uri: frontchannel.map(|u| Url::parse(u).unwrap()),
        id_token_alg: jsonwebtoken::Algorithm::ES256,
        api_audience: Some(API_AUDIENCE.into()),
        opaque_access_tokens: false,
    }
}

pub async fn start_idp(mut cfg: IdpConfig) -> IdpServer {
    if !cfg.clients.iter().any(|c| c.client_id == CLIENT) {
        cfg.clients.push(test_client(None, None));
    }
    IdpServer::start(cfg).await.expect("idp starts")
}

/// A browser-like HTTP client: keeps cookies, does not follow redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap()
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let verifier = format!("v{}", unigate::idp::store::random_token());
    let challenge = unigate::idp::oauth::pkce_s256(&verifier);
    Pkce { verifier, challenge }
}

pub fn authorize_url(issuer: &str, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut u = Url::parse(&format!("{issuer}/authorize")).unwrap();
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("client_id", CLIENT)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid email profile")
            .append_pair("state", "state-123")
            .append_pair("nonce", "nonce-456")
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    u.to_string()
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on {}", r.status()))
        .to_str()
        .unwrap()
        .to_string()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    u.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

pub fn current_code(cfg_user_secret: &[u8]) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp_code(cfg_user_secret, now)
}

pub fn totp_secret(idp: &IdpServer, user: &str) -> Vec<u8> {
    idp.provider
        .cfg
        .users
        .iter()
        .find(|u| u.username == user)
        .unwrap()
        .totp_secret
        .clone()
}

pub fn company(idp: &IdpServer, user: &str) -> String {
    idp.provider
        .cfg
        .users
        .iter()
        .find(|u| u.username == user)
        .unwrap()
        .company
        .clone()
}

/// Posts the three login forms starting from a `/login?flow=…` path, with
/// the given password and code; returns the final response.
pub async fn post_login(
    b: &reqwest::Client,
    issuer: &str,
    login_path: &str,
    user: &str,
    company: &str,
    password: &str,
    code: &str,
) -> reqwest::Response {
    let flow = query_param(&format!("{issuer}{login_path}"), "flow").expect("flow id");
    let page = b.get(format!("{issuer}{login_path}")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let step = |step: &'static str, fields: Vec<(&'static str, String)>| {
        let mut form = vec![("flow", flow.clone()), ("step", step.to_string())];
        form.extend(fields);
        b.post(format!("{issuer}/login")).form(&form).send()
    };
    let r = step("identify", vec![("username", user.into()), ("company", company.into())])
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "identify step");
    let r = step("password", vec![("password", password.into())]).await.unwrap();
    if r.status() != 302 {
        // Throttled before the password is even checked.
        return r;
    }
    step("code", vec![("code", code.into())]).await.unwrap()
}

/// A whole interactive login through the forms; returns the redirect back
/// to the client (with `code`, `state`, `iss`).
pub async fn login(idp: &IdpServer, b: &reqwest::Client, user: &str, pkce: &Pkce, extra: &[(&str, &str)]) -> String {
    let issuer = idp.issuer();
    let r = b
        .get(authorize_url(issuer, &pkce.challenge, extra))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let login_path = location(&r);
    assert!(login_path.starts_with("/login?flow="), "{login_path}");
    let code = current_code(&totp_secret(idp, user));
    let r = post_login(
        b,
        issuer,
        &login_path,
        user,
        &company(idp, user),
        &password(user),
        &code,
    )
    .await;
    assert_eq!(r.status(), 302, "code step: {}", r.text().await.unwrap_or_default());
    location(&r)
}

pub async fn exchange(idp: &IdpServer, code: &str, verifier: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
}

pub async fn refresh(idp: &IdpServer, refresh_token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
        ])
        .send()
        .await
        .unwrap()
}

pub fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

/// A server that records what is POSTed to `/bcl` and answers with the
/// status the test sets.
pub struct Receiver {
    pub addr: SocketAddr,
    pub tokens: mpsc::UnboundedReceiver<String>,
    pub status: Arc<Mutex<u16>>,
}

pub async fn receiver() -> Receiver {
    use axum::routing::post;
    let (tx, rx) = mpsc::unbounded_channel();
    let status = Arc::new(Mutex::new(200u16));
    let st = status.clone();
    let app = axum::Router::new().route(
        "/bcl",
        post(move |body: String| {
            let tx = tx.clone();
            let st = st.clone();
            async move {
                let token = form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "logout_token")
                    .map(|(_, v)| v.into_owned());
                let _ = tx.send(token.unwrap_or_default());
                axum::http::StatusCode::from_u16(*st.lock().unwrap()).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        addr,
        tokens: rx,
        status,
    }
}

pub async fn recv_within(rx: &mut mpsc::UnboundedReceiver<String>, d: Duration) -> Option<String> {
    tokio::time::timeout(d, rx.recv()).await.ok().flatten()
}

/// The whole stack on loopback: IdP, demo module, unigate (Pingora) in front.
pub const HOST: &str = "portal.localhost";

pub struct Stack {
    pub idp: IdpServer,
    pub module: DemoModuleServer,
    pub gw: GatewayServer,
    pub port: u16,
}

impl Stack {
    pub fn url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{path}", self.port)
    }

    /// A browser: cookies kept (and readable), no redirects followed, the
    /// module's host name resolved to loopback.
    pub fn browser(&self) -> (reqwest::Client, Arc<Jar>) {
        let jar = Arc::new(Jar::default());
        let c = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], self.port)))
            .build()
            .unwrap();
        (c, jar)
    }

    pub fn session_id(&self, jar: &Jar) -> Option<String> {
        let url = url::Url::parse(&self.url("/")).unwrap();
        let h = jar.cookies(&url)?;
        let h = h.to_str().ok()?.to_string();
        h.split("; ")
            .find_map(|kv| kv.strip_prefix("unigate=").map(str::to_string))
    }

    /// Logs `user` in through unigate, the IdP's forms and the callback;
    /// returns the last response (the redirect back to `path`).
    pub async fn login(&self, b: &reqwest::Client, user: &str, path: &str) -> reqwest::Response {
        let r = b.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 302, "unauthenticated navigation redirects");
        let authorize = location(&r);
        assert!(
            authorize.starts_with(&format!("{}/authorize?", self.idp.issuer())),
            "{authorize}"
        );
        for p in ["code_challenge_method=S256", "state=", "nonce=", "code_challenge="] {
            assert!(authorize.contains(p), "{p} in {authorize}");
        }
        let r = b.get(&authorize).send().await.unwrap();
        let next = location(&r);
        let callback = if next.starts_with("/login?flow=") {
            let code = current_code(&totp_secret(&self.idp, user));
            let r = post_login(
                b,
                self.idp.issuer(),
                &next,
                user,
                &company(&self.idp, user),
                &password(user),
                &code,
            )
            .await;
            assert_eq!(r.status(), 302);
            location(&r)
        } else {
            next
        };
        assert!(callback.starts_with(&self.url("/_unigate/callback?")), "{callback}");
        b.get(&callback).send().await.unwrap()
    }
}

pub async fn stack_with(edit_idp: impl FnOnce(&mut unigate::idp::IdpConfig), extra_gw: &str) -> Stack {
    stack_with_upstream(edit_idp, extra_gw, None).await
}

/// The stack, with the module's upstream replaced by `upstream` when given.
pub async fn stack_with_upstream(
    edit_idp: impl FnOnce(&mut unigate::idp::IdpConfig),
    extra_gw: &str,
    upstream: Option<SocketAddr>,
) -> Stack {
    stack_full(edit_idp, extra_gw, upstream, "").await
}

/// The stack, with extra keys for the `[[module]]` too.
pub async fn stack_full(
    edit_idp: impl FnOnce(&mut unigate::idp::IdpConfig),
    extra_gw: &str,
    upstream: Option<SocketAddr>,
    extra_module: &str,
) -> Stack {
    let port = free_port().unwrap();
    let mut idp_cfg = demo_config();
    let mut client = test_client(None, None);
    client
        .redirect_uris
        .push(format!("http://{HOST}:{port}/_unigate/callback"));
    client.post_logout_redirect_uris.push(format!("http://{HOST}:{port}/"));
    idp_cfg.clients.push(client);
    edit_idp(&mut idp_cfg);
    let idp = start_idp(idp_cfg).await;
    let module = portal_module(port).await;
    let text = format!(
        r#"
        [session]
        store = "memory"
        {extra_gw}
        [[module]]
        name = "portal"
        hosts = ["{HOST}"]
        upstream = "{upstream}"
        access_groups = ["portal-users"]
        logout_paths = ["/logout"]
        session_cookies = ["portal_session"]
        public_paths = ["/static/"]
        cors_origins = ["http://app.localhost"]
        {extra_module}
        "#,
        upstream = upstream.unwrap_or(module.addr),
    );
    let gw = start_gateway(port, idp.issuer(), &text).await;
    Stack { idp, module, gw, port }
}

/// The demo portal module, trusting the assertions of the unigate on `port`.
pub async fn portal_module(port: u16) -> DemoModuleServer {
    DemoModuleServer::start(DemoModuleConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        name: "portal".into(),
        title: "Demo Portal".into(),
        jwks_url: format!("http://127.0.0.1:{port}/_unigate/jwks.json"),
        accounts: vec![DemoAccount::new("localuser", "", Some("local-pass"))],
        scim_token: None,
    })
    .await
    .unwrap()
}

pub async fn stack() -> Stack {
    stack_with(|_| {}, "").await
}

/// Several modules behind one unigate: a demo module per upstream, named
/// by the `{up:LABEL}` / `{up2:LABEL}` placeholders of `modules_toml`.
pub struct Multi {
    pub idp: IdpServer,
    pub gw: GatewayServer,
    pub port: u16,
    /// By placeholder (`LABEL` or `LABEL#2`).
    pub modules: std::collections::HashMap<String, DemoModuleServer>,
    pub hosts: Vec<String>,
}

impl Multi {
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    pub fn module(&self, key: &str) -> &DemoModuleServer {
        &self.modules[key]
    }

    /// A browser: cookies kept, redirects not followed, every host on loopback.
    pub fn browser(&self) -> reqwest::Client {
        self.browser_with_jar().0
    }

    /// A browser and its cookie jar.
    pub fn browser_with_jar(&self) -> (reqwest::Client, Arc<Jar>) {
        let jar = Arc::new(Jar::default());
        let mut b = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none());
        for h in &self.hosts {
            b = b.resolve(h, SocketAddr::from(([127, 0, 0, 1], self.port)));
        }
        (b.build().unwrap(), jar)
    }

    /// Follows redirects by hand through unigate and the IdP, logging in
    /// as `user` through the IdP's forms when asked; returns the first
    /// response that is not a redirect.
    pub async fn walk(&self, b: &reqwest::Client, user: &str, url: &str) -> (String, reqwest::Response) {
        let mut url = url.to_string();
        for _ in 0..20 {
            let r = b.get(&url).header("accept", "text/html").send().await.unwrap();
            // The hops, shown if the test fails.
            eprintln!("walk: GET {url} -> {} {:?}", r.status(), r.headers().get("location"));
            if !r.status().is_redirection() {
                return (url, r);
            }
            let mut next = location(&r);
            if next.starts_with("/login?flow=") {
                let code = current_code(&totp_secret(&self.idp, user));
                let r = post_login(
                    b,
                    self.idp.issuer(),
                    &next,
                    user,
                    &company(&self.idp, user),
                    &password(user),
                    &code,
                )
                .await;
                assert_eq!(r.status(), 302, "IdP login as {user}");
                next = location(&r);
            }
            url = if next.starts_with('/') {
                let u = Url::parse(&url).unwrap();
                format!("{}://{}{next}", u.scheme(), u.authority())
            } else {
                next
            };
        }
        panic!("too many redirects from {url}");
    }
}

pub async fn multi(
    hosts: &[&str],
    accounts: impl Fn(&str) -> Vec<DemoAccount>,
    gw_extra: &str,
    modules_toml: &str,
) -> Multi {
    multi_with(hosts, accounts, gw_extra, modules_toml, |_, _| {}).await
}

/// `multi`, with the IdP's configuration edited first (given unigate's port).
pub async fn multi_with(
    hosts: &[&str],
    accounts: impl Fn(&str) -> Vec<DemoAccount>,
    gw_extra: &str,
    modules_toml: &str,
    edit_idp: impl FnOnce(&mut IdpConfig, u16),
) -> Multi {
    let port = free_port().unwrap();
    let mut idp_cfg = demo_config();
    let mut client = test_client(None, None);
    for h in hosts {
        client
            .redirect_uris
            .push(format!("http://{h}:{port}/_unigate/callback"));
        client.post_logout_redirect_uris.push(format!("http://{h}:{port}/"));
    }
    idp_cfg.clients.push(client);
    edit_idp(&mut idp_cfg, port);
    let idp = start_idp(idp_cfg).await;
    let mut modules = std::collections::HashMap::new();
    let mut text = modules_toml.to_string();
    while let Some(start) = text.find("{up") {
        let end = start + text[start..].find('}').unwrap();
        let tag = &text[start + 1..end];
        let (second, label) = match tag.split_once(':').unwrap() {
            ("up", l) => (false, l.to_string()),
            (_, l) => (true, l.to_string()),
        };
        let key = if second { format!("{label}#2") } else { label.clone() };
        // A second upstream is a replica of the first (shared state).
        let m = match modules.get(&label) {
            Some(first) if second => {
                let first: &DemoModuleServer = first;
                first.replica("127.0.0.1:0".parse().unwrap()).await.unwrap()
            }
            _ => DemoModuleServer::start(DemoModuleConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                name: label.clone(),
                title: key.clone(),
                jwks_url: format!("http://127.0.0.1:{port}/_unigate/jwks.json"),
                accounts: accounts(&label),
                scim_token: None,
            })
            .await
            .unwrap(),
        };
        text.replace_range(start..=end, &m.addr.to_string());
        modules.insert(key, m);
    }
    let gw = start_gateway(port, idp.issuer(), &format!("{gw_extra}\n{text}")).await;
    Multi {
        idp,
        gw,
        port,
        modules,
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
    }
}

/// unigate on `port` with the test client of `issuer`, then `rest` (its
/// `[session]`, `[[module]]`s…).
pub async fn start_gateway(port: u16, issuer: &str, rest: &str) -> GatewayServer {
    start_gateway_file(port, issuer, "", rest).await.0
}

/// The gateway's config text: `listen` keys added to `[listen]`, `rest`
/// after `[identity_provider]`.
pub fn gateway_toml(port: u16, issuer: &str, listen: &str, rest: &str) -> String {
    format!(
        r#"
        [listen]
        address = "127.0.0.1:{port}"
        public_url = "http://localhost:{port}"
        threads = 1
        work_stealing = true
        {listen}
        [identity_provider]
        issuer = "{issuer}"
        client_id = "{CLIENT}"
        client_secret = "file:secret"
        api_audience = "{API_AUDIENCE}"
        {rest}
        "#
    )
}

/// Starts unigate from a config file (written next to its secret); returns
/// the server and the file, for reloads.
pub async fn start_gateway_file(
    port: u16,
    issuer: &str,
    listen: &str,
    rest: &str,
) -> (GatewayServer, std::path::PathBuf) {
    let secret_dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(secret_dir.join("secret"), SECRET).unwrap();
    let text = gateway_toml(port, issuer, listen, rest);
    let path = secret_dir.join("unigate.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = GatewayConfig::load(&path).unwrap_or_else(|e| panic!("gateway config: {e}\n{text}"));
    (GatewayServer::start(cfg).await.expect("gateway starts"), path)
}

/// The demo's shape, for `multi`: portal (one upstream), BMS with two
/// instances (east: two upstreams; west: one), and IT Glue with Unified
/// Login off. The `*_extra` keys go into the portal module and the instances.
pub fn demo_modules(portal_extra: &str, east_extra: &str, west_extra: &str) -> String {
    format!(
        r#"
        [[module]]
        name = "portal"
        display_name = "Demo Portal"
        hosts = ["portal.localhost"]
        upstream = "{{up:portal}}"
        access_groups = ["portal-users"]
        logout_paths = ["/logout"]
        session_cookies = ["portal_session"]
        login_paths = ["/login"]
        {portal_extra}

        [[module]]
        name = "bms"
        display_name = "BMS"
        hosts = ["bms.localhost"]
        access_groups = ["bms-users"]
        logout_paths = ["/logout"]
        session_cookies = ["portal_session"]
        login_paths = ["/login"]
        health_check_interval = "200ms"

        [[module.instance]]
        name = "east"
        display_name = "Acme East"
        hosts = ["bms-east.localhost"]
        upstreams = ["{{up:bms/east}}", "{{up2:bms/east}}"]
        {east_extra}

        [[module.instance]]
        name = "west"
        display_name = "Acme West"
        hosts = ["bms-west.localhost"]
        upstream = "{{up:bms/west}}"
        {west_extra}

        [[module]]
        name = "itglue"
        display_name = "IT Glue"
        hosts = ["itglue.localhost"]
        upstream = "{{up:itglue}}"
        access_groups = ["itglue-users"]
        login_paths = ["/login"]
        unified_login = false
        "#
    )
}

pub const ALL_HOSTS: &[&str] = &[
    "portal.localhost",
    "bms.localhost",
    "bms-east.localhost",
    "bms-west.localhost",
    "itglue.localhost",
];

/// A websocket echo module: every message comes back.
pub async fn websocket_upstream() -> std::net::SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A module whose every answer is endless: `/events` an event stream,
/// `/download` a body delimited by closing the connection, anything else
/// an NDJSON feed (chunked). Each sends one item, then holds its
/// connection until the other side goes away.
pub async fn stream_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Some(head) = request_head(&mut s).await else {
                    return;
                };
                let start = if head.starts_with(b"GET /download ") {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\nPART1"
                        .to_string()
                } else {
                    let (ct, item) = if head.starts_with(b"GET /events ") {
                        ("text/event-stream", "data: hello\n\n")
                    } else {
                        ("application/x-ndjson", "{\"n\":1}\n")
                    };
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{item}\r\n",
                        item.len()
                    )
                };
                if s.write_all(start.as_bytes()).await.is_ok() {
                    let _ = s.read(&mut [0u8; 64]).await;
                }
            });
        }
    });
    addr
}

/// A `redis-server` of our own; killed when dropped.
pub struct Redis {
    pub child: std::process::Child,
    pub port: u16,
}

impl Redis {
    pub async fn start(port: u16) -> Redis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server (scripts/test does)");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Redis { child, port }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A websocket through unigate on `port` with session `id`, checked with
/// one echoed message.
pub async fn websocket_through(port: u16, id: &str) -> Ws {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://127.0.0.1:{port}/live"
    ))
    .unwrap();
    req.headers_mut()
        .insert("host", format!("{HOST}:{port}").parse().unwrap());
    req.headers_mut()
        .insert("cookie", format!("unigate={id}").parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket through unigate");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "ping");
    ws
}

/// True when the websocket ends (closed, reset, or a Close frame) within `d`.
pub async fn websocket_ends_within(ws: &mut Ws, d: Duration) -> bool {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(d, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Reads an HTTP request head (up to the blank line) from a test
/// upstream's connection; false when the client went away first.
pub async fn read_request_head(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    request_head(s).await.is_some()
}

/// The bytes of an HTTP request head (up to the blank line) read from a
/// test upstream's connection; None when the client went away first.
pub async fn request_head(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    Some(got)
}

/// The `portal_session=…` pair the module set in this response.
pub fn portal_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("portal_session="))
        .expect("the module set its session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// The link form's CSRF token on this page ("" when there is none).
pub fn link_form_token(page: &str) -> String {
    let Some(at) = page.find(r#"name="csrf_token" value=""#).map(|i| i + 25) else {
        return String::new();
    };
    page[at..at + page[at..].find('"').unwrap()].to_string()
}

/// A Redis for one test, and the `[session]` keys that use it.
pub async fn redis_store() -> (Redis, String) {
    let redis = Redis::start(unigate::gateway::server::free_port().unwrap()).await;
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(dir.join("redis_url"), format!("redis://127.0.0.1:{}/0", redis.port)).unwrap();
    std::fs::write(dir.join("key"), "a-test-key-of-more-than-32-characters!").unwrap();
    let keys = format!(
        "[session]\nstore = \"redis\"\nredis_url = \"file:{}\"\nencryption_key = \"file:{}\"\n",
        dir.join("redis_url").display(),
        dir.join("key").display()
    );
    (redis, keys)
}

/// The request heads a test module received, in order.
#[derive(Clone, Default)]
pub struct Recorded(pub Arc<Mutex<Vec<String>>>);

impl Recorded {
    /// The request lines received (`GET /x HTTP/1.1`).
    pub fn lines(&self) -> Vec<String> {
        let heads = self.0.lock().unwrap();
        heads
            .iter()
            .map(|h| h.lines().next().unwrap_or_default().to_string())
            .collect()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// The headers of the last request, names lower-cased.
    pub fn last_headers(&self) -> Vec<(String, String)> {
        let heads = self.0.lock().unwrap();
        let head = heads.last().expect("the module got a request");
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    }
}

/// A module that records every request head and answers `200` with
/// `body` (keep-alive: unigate may reuse the connection).
pub async fn recording_upstream(body: &'static str) -> (SocketAddr, Recorded) {
    use tokio::io::AsyncWriteExt;
    let rec = Recorded::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let r = rec.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                while let Some(head) = request_head(&mut s).await {
                    r.0.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rec)
}
