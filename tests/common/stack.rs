//! Whole stacks on loopback: the IdP, demo modules and unigate (Pingora)
//! in front, configured by editing values (`StackBuilder`, `MultiBuilder`);
//! `logout_stack`, the demo's modules with logouts sent back to unigate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::cookie::{CookieStore, Jar};
use toml::{Table, Value};
use unigate::demo_module::{DemoAccount, DemoModuleConfig, DemoModuleServer};
use unigate::gateway::server::{GatewayServer, free_port};
use unigate::idp::{IdpConfig, IdpServer};
use url::Url;

use super::{
    CLIENT, Redis, SECRET, TomlEdit, company, current_code, demo_config, gateway_table, location, password,
    portal_module, post_login, redis_store, start_gateway_config, start_idp, test_client, totp_secret,
};

/// The module's host in the single-module stack.
pub const HOST: &str = "portal.localhost";

pub const ALL_HOSTS: &[&str] = &[
    "portal.localhost",
    "bms.localhost",
    "bms-east.localhost",
    "bms-west.localhost",
    "itglue.localhost",
];

type IdpEdit<'a> = Box<dyn FnOnce(&mut IdpConfig, u16) + 'a>;
type ConfigEdit<'a> = Box<dyn FnOnce(&mut Table) + 'a>;
type Accounts<'a> = Box<dyn Fn(&str) -> Vec<DemoAccount> + 'a>;

/// What both builders collect: edits to the IdP's and to unigate's
/// configuration, applied in order when the stack starts.
#[derive(Default)]
struct Edits<'a> {
    idp: Vec<IdpEdit<'a>>,
    gateway: Vec<ConfigEdit<'a>>,
    redis: bool,
}

impl Edits<'_> {
    /// The IdP's configuration with the test client, which may come back
    /// to every host on unigate's `port`; then the edits.
    fn idp_config(&mut self, hosts: &[&str], port: u16) -> IdpConfig {
        let mut cfg = demo_config();
        let mut client = test_client(None, None);
        for h in hosts {
            client
                .redirect_uris
                .push(format!("http://{h}:{port}/_unigate/callback"));
            client.post_logout_redirect_uris.push(format!("http://{h}:{port}/"));
        }
        // As `unigate demo` registers it: My Modules' tiles (moved to this
        // port) start logins at the first host's login initiation.
        client.initiate_login_uri = hosts
            .first()
            .map(|h| url::Url::parse(&format!("http://{h}:{port}/_unigate/login")).unwrap());
        for m in &mut cfg.modules {
            let _ = m.url.set_port(Some(port));
            let _ = m.login_url.set_port(Some(port));
            for i in &mut m.instances {
                let _ = i.url.set_port(Some(port));
            }
        }
        cfg.clients.push(client);
        for edit in self.idp.drain(..) {
            edit(&mut cfg, port);
        }
        cfg
    }

    /// A Redis when asked for (its keys in `[session]`), then the edits.
    async fn apply(&mut self, config: &mut Table) -> Option<Redis> {
        let redis = if self.redis {
            let (redis, keys) = redis_store().await;
            config.table("session").extend(keys);
            Some(redis)
        } else {
            None
        };
        for edit in self.gateway.drain(..) {
            edit(config);
        }
        redis
    }
}

/// The methods both builders share.
macro_rules! edit_methods {
    () => {
        /// Edits the IdP's configuration before it starts.
        pub fn idp(self, f: impl FnOnce(&mut IdpConfig) + 'a) -> Self {
            self.idp_with_port(move |cfg, _| f(cfg))
        }

        /// Edits the IdP's configuration, given unigate's port.
        pub fn idp_with_port(mut self, f: impl FnOnce(&mut IdpConfig, u16) + 'a) -> Self {
            self.edits.idp.push(Box::new(f));
            self
        }

        /// Edits unigate's whole configuration (`[listen]`,
        /// `[identity_provider]`, `[session]`, `[[module]]`…).
        pub fn gateway(mut self, f: impl FnOnce(&mut Table) + 'a) -> Self {
            self.edits.gateway.push(Box::new(f));
            self
        }

        /// Edits `[session]`.
        pub fn session(self, f: impl FnOnce(&mut Table) + 'a) -> Self {
            self.gateway(move |t| f(t.table("session")))
        }

        /// Edits the `[[module]]` named `name`.
        pub fn module(self, name: &'a str, f: impl FnOnce(&mut Table) + 'a) -> Self {
            self.gateway(move |t| f(t.module(name)))
        }

        /// Edits the instance `name` of the module `module`.
        pub fn instance(self, module: &'a str, name: &'a str, f: impl FnOnce(&mut Table) + 'a) -> Self {
            self.gateway(move |t| f(t.instance(module, name)))
        }

        /// Sessions in a `redis-server` of the stack's own.
        pub fn redis(mut self) -> Self {
            self.edits.redis = true;
            self
        }
    };
}

/// The whole stack on loopback: IdP, demo module, unigate (Pingora) in front.
pub struct Stack {
    pub idp: IdpServer,
    pub module: DemoModuleServer,
    pub gw: GatewayServer,
    pub port: u16,
    /// unigate's config file (for reloads).
    pub config: PathBuf,
    pub redis: Option<Redis>,
}

/// The single-module stack: module `portal` on [`HOST`] (the demo portal,
/// or `upstream`), for `portal-users`, with `/logout`, `portal_session`,
/// public `/static/` and CORS for `http://app.localhost`; sessions in memory.
/// `StackBuilder::new().session(|s| { s.set("idle_timeout", "1s"); }).start().await`
#[derive(Default)]
pub struct StackBuilder<'a> {
    edits: Edits<'a>,
    upstream: Option<SocketAddr>,
}

impl<'a> StackBuilder<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    edit_methods!();

    /// The module's upstream, instead of the demo portal.
    pub fn upstream(mut self, addr: SocketAddr) -> Self {
        self.upstream = Some(addr);
        self
    }

    pub async fn start(mut self) -> Stack {
        let port = free_port().unwrap();
        let idp = start_idp(self.edits.idp_config(&[HOST], port)).await;
        let module = portal_module(port).await;
        let mut config = gateway_table(port, idp.issuer());
        config.table("session").set("store", "memory");
        let mut portal = Table::new();
        portal
            .set("name", "portal")
            .set("hosts", vec![HOST])
            .set("upstream", self.upstream.unwrap_or(module.addr).to_string())
            .set("access_groups", vec!["portal-users"])
            .set("login", "automatic")
            .set("logout_paths", vec!["/logout"])
            .set("session_cookies", vec!["portal_session"])
            .set("public_paths", vec!["/static/"])
            .set("cors_origins", vec!["http://app.localhost"]);
        config.set("module", vec![portal]);
        let redis = self.edits.apply(&mut config).await;
        let (gw, config) = start_gateway_config(&config).await;
        Stack {
            idp,
            module,
            gw,
            port,
            config,
            redis,
        }
    }
}

/// Fills in the IdP's login form at `flow` (`/login?flow=…`) as `user`:
/// where the IdP then sends the browser.
async fn through_login_form(idp: &IdpServer, b: &reqwest::Client, flow: &str, user: &str) -> String {
    let code = current_code(&totp_secret(idp, user));
    let r = post_login(b, idp.issuer(), flow, user, &company(idp, user), &password(user), &code).await;
    assert_eq!(r.status(), 302, "IdP login as {user}");
    location(&r)
}

/// The single-module stack as it comes.
pub async fn stack() -> Stack {
    StackBuilder::new().start().await
}

impl Stack {
    /// Rewrites unigate's config file with `edit` applied (a running
    /// unigate watching it reloads).
    pub fn rewrite_config(&self, edit: impl FnOnce(&mut Table)) {
        let mut config: Table = toml::from_str(&std::fs::read_to_string(&self.config).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(&self.config, super::config_text(&config)).unwrap();
    }

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

    /// Follows an authorization request at the IdP, through its login
    /// form as `user` when it asks: where the IdP then sends the browser.
    pub async fn at_idp(&self, b: &reqwest::Client, authorize: &str, user: &str) -> String {
        let r = b.get(authorize).send().await.unwrap();
        let next = location(&r);
        if !next.starts_with("/login?flow=") {
            return next;
        }
        through_login_form(&self.idp, b, &next, user).await
    }

    /// Logs `user` in through unigate, the IdP's forms and the callback;
    /// returns the last response (the redirect back to `path`, or a failed
    /// login's page).
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
        let callback = self.at_idp(b, &authorize, user).await;
        assert!(callback.starts_with(&self.url("/_unigate/callback?")), "{callback}");
        let r = b.get(&callback).send().await.unwrap();
        // A failed login: its page, where the callback sends the browser.
        match super::failed_login_page(b, &r).await {
            Some(page) => page,
            None => r,
        }
    }
}

/// Several modules behind one unigate: a demo module per upstream, named
/// by the `{up:LABEL}` / `{up2:LABEL}` placeholders of the modules'
/// `upstream`/`upstreams` values.
pub struct Multi {
    pub idp: IdpServer,
    pub gw: GatewayServer,
    pub port: u16,
    /// By placeholder (`LABEL` or `LABEL#2`).
    pub modules: HashMap<String, DemoModuleServer>,
    pub hosts: Vec<String>,
    /// unigate's config file (for reloads).
    pub config: PathBuf,
    pub redis: Option<Redis>,
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
                next = through_login_form(&self.idp, b, &next, user).await;
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

/// Several modules behind one unigate, the demo's shape unless replaced
/// (see [`demo_modules`]): `MultiBuilder::demo().module("portal", |m| { m.set("login", "optional"); })`.
/// An upstream written `{up:LABEL}` is a demo module named `LABEL` (with
/// the accounts `accounts(LABEL)`), `{up2:LABEL}` a replica of it.
pub struct MultiBuilder<'a> {
    edits: Edits<'a>,
    hosts: Vec<String>,
    accounts: Accounts<'a>,
    modules: Vec<Table>,
}

impl<'a> MultiBuilder<'a> {
    /// The demo's modules on [`ALL_HOSTS`], with the demo's accounts.
    pub fn demo() -> Self {
        MultiBuilder {
            edits: Edits::default(),
            hosts: ALL_HOSTS.iter().map(|h| h.to_string()).collect(),
            accounts: Box::new(unigate::demo_module::demo_accounts),
            modules: demo_modules(),
        }
    }

    edit_methods!();

    /// The host names unigate answers for (and the IdP may send back to).
    pub fn hosts(mut self, hosts: &[&str]) -> Self {
        self.hosts = hosts.iter().map(|h| h.to_string()).collect();
        self
    }

    /// The accounts of each demo module, by label.
    pub fn accounts(mut self, f: impl Fn(&str) -> Vec<DemoAccount> + 'a) -> Self {
        self.accounts = Box::new(f);
        self
    }

    /// These `[[module]]`s instead of the demo's.
    pub fn modules(mut self, modules: Vec<Table>) -> Self {
        self.modules = modules;
        self
    }

    pub async fn start(mut self) -> Multi {
        let port = free_port().unwrap();
        let hosts: Vec<&str> = self.hosts.iter().map(String::as_str).collect();
        let idp = start_idp(self.edits.idp_config(&hosts, port)).await;
        let mut config = gateway_table(port, idp.issuer());
        config.set("module", std::mem::take(&mut self.modules));
        let redis = self.edits.apply(&mut config).await;
        // The demo modules the placeholders name, firsts before replicas.
        let mut tags = Vec::new();
        placeholders(config.get_mut("module").unwrap(), &mut |s| tags.push(s.clone()));
        tags.sort_by_key(|t| t.starts_with("{up2:"));
        let mut modules = HashMap::new();
        let mut addrs = HashMap::new();
        for tag in tags {
            let (kind, label) = tag[1..tag.len() - 1].split_once(':').unwrap();
            let key = if kind == "up2" {
                format!("{label}#2")
            } else {
                label.to_string()
            };
            // A second upstream is a replica of the first (shared state).
            let m = match modules.get(label) {
                Some(first) if kind == "up2" => {
                    let first: &DemoModuleServer = first;
                    first.replica("127.0.0.1:0".parse().unwrap()).await.unwrap()
                }
                _ => DemoModuleServer::start(DemoModuleConfig {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    name: label.to_string(),
                    title: key.clone(),
                    jwks_url: format!("http://127.0.0.1:{port}/_unigate/jwks.json"),
                    accounts: (self.accounts)(label),
                    scim_token: None,
                })
                .await
                .unwrap(),
            };
            addrs.insert(tag.clone(), m.addr.to_string());
            modules.insert(key, m);
        }
        placeholders(config.get_mut("module").unwrap(), &mut |s| {
            *s = addrs[s.as_str()].clone()
        });
        let (gw, config) = start_gateway_config(&config).await;
        Multi {
            idp,
            gw,
            port,
            modules,
            hosts: self.hosts,
            config,
            redis,
        }
    }
}

/// Every string in `v` that is an upstream placeholder (`{up:…}`, `{up2:…}`).
fn placeholders(v: &mut Value, f: &mut impl FnMut(&mut String)) {
    match v {
        Value::String(s) if s.starts_with("{up") && s.ends_with('}') => f(s),
        Value::Array(a) => a.iter_mut().for_each(|v| placeholders(v, f)),
        Value::Table(t) => t.iter_mut().for_each(|(_, v)| placeholders(v, f)),
        _ => {}
    }
}

/// The demo's shape: portal (one upstream), BMS with two instances (east:
/// two upstreams; west: one), and IT Glue with Unified Login off.
pub fn demo_modules() -> Vec<Table> {
    let mut t: Table = toml::from_str(
        r#"
        [[module]]
        name = "portal"
        display_name = "Demo Portal"
        hosts = ["portal.localhost"]
        upstream = "{up:portal}"
        access_groups = ["portal-users"]
        login = "automatic"
        logout_paths = ["/logout"]
        session_cookies = ["portal_session"]
        login_paths = ["/login"]

        [[module]]
        name = "bms"
        display_name = "BMS"
        hosts = ["bms.localhost"]
        access_groups = ["bms-users"]
        login = "automatic"
        logout_paths = ["/logout"]
        session_cookies = ["portal_session"]
        login_paths = ["/login"]
        health_check_interval = "200ms"

        [[module.instance]]
        name = "east"
        display_name = "Acme East"
        hosts = ["bms-east.localhost"]
        upstreams = ["{up:bms/east}", "{up2:bms/east}"]

        [[module.instance]]
        name = "west"
        display_name = "Acme West"
        hosts = ["bms-west.localhost"]
        upstream = "{up:bms/west}"

        [[module]]
        name = "itglue"
        display_name = "IT Glue"
        hosts = ["itglue.localhost"]
        upstream = "{up:itglue}"
        access_groups = ["itglue-users"]
        login_paths = ["/login"]
        unified_login = false
        "#,
    )
    .unwrap();
    let Some(Value::Array(modules)) = t.remove("module") else {
        unreachable!()
    };
    modules
        .into_iter()
        .map(|m| match m {
            Value::Table(t) => t,
            _ => unreachable!(),
        })
        .collect()
}

/// The link form's CSRF token on this page ("" when there is none).
pub fn link_form_token(page: &str) -> String {
    let Some(at) = page.find(r#"name="csrf_token" value=""#).map(|i| i + 25) else {
        return String::new();
    };
    page[at..at + page[at..].find('"').unwrap()].to_string()
}

/// The admin token of `logout_stack`: the stack's secret file (see
/// `start_gateway`).
pub const ADMIN_TOKEN: &str = SECRET;

/// The demo's modules, with the IdP told to send back- and front-channel
/// logouts to unigate, and an admin listener.
pub async fn logout_stack() -> Multi {
    logout_stack_builder().start().await
}

/// The stack, to start (`.redis()`: its sessions in Redis).
pub fn logout_stack_builder<'a>() -> MultiBuilder<'a> {
    MultiBuilder::demo()
        .gateway(|t| {
            t.table("admin")
                .set("address", "127.0.0.1:0")
                .set("token", "file:secret");
        })
        .idp_with_port(|idp, port| {
            for c in idp.clients.iter_mut().filter(|c| c.client_id == CLIENT) {
                c.backchannel_logout_uri =
                    Some(url::Url::parse(&format!("http://127.0.0.1:{port}/_unigate/backchannel-logout")).unwrap());
                c.frontchannel_logout_uri = Some(
                    url::Url::parse(&format!("http://portal.localhost:{port}/_unigate/frontchannel-logout")).unwrap(),
                );
            }
        })
}
