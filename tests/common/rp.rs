//! unigate as the relying party of the scriptable provider (`fake_op`):
//! in front of a recording module, with a browser, a login whose ID token
//! the test writes, and what the module saw of each request.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::cookie::{CookieStore, Jar};
use serde_json::{Value, json};
use toml::Table;
use unigate::gateway::server::{GatewayServer, free_port};
use unigate::idp::keys::SigningKey;
use url::Url;

use super::fake_op::{Answer, FakeOp};
use super::{HOST, Recorded, TomlEdit, location, query_param, recording_upstream, start_gateway, table_of};

pub struct Rp {
    pub op: FakeOp,
    pub _gw: GatewayServer,
    pub port: u16,
    pub module: Recorded,
}

/// unigate in front of a recording module (module `portal` for
/// `portal-users`, sessions in memory), with the fake provider; `edit`
/// changes the configuration.
pub async fn start_rp(edit: impl FnOnce(&mut Table)) -> Rp {
    start_rp_with(FakeOp::start().await, edit).await
}

pub async fn start_rp_with(op: FakeOp, edit: impl FnOnce(&mut Table)) -> Rp {
    start_rp_full(op, None, edit).await
}

/// With the module at `upstream` (else a recording one).
pub async fn start_rp_full(op: FakeOp, upstream: Option<SocketAddr>, edit: impl FnOnce(&mut Table)) -> Rp {
    let (recording, module) = recording_upstream("the module's page").await;
    let up = upstream.unwrap_or(recording);
    let port = free_port().unwrap();
    let gw = start_gateway(port, &op.base, |t| {
        t.table("session").set("store", "memory");
        t.set("module", vec![portal_at(up)]);
        edit(t);
    })
    .await;
    Rp {
        op,
        _gw: gw,
        port,
        module,
    }
}

/// Module `portal` on [`HOST`] at `up`, for `portal-users`.
pub fn portal_at(up: SocketAddr) -> Table {
    table_of(|m| {
        m.set("name", "portal")
            .set("hosts", vec![HOST])
            .set("upstream", up.to_string())
            .set("access_groups", vec!["portal-users"])
            .set("login", "automatic");
    })
}

/// `[identity_provider]` keys.
pub fn provider(t: &mut Table) -> &mut Table {
    t.table("identity_provider")
}

impl Rp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{path}", self.port)
    }

    pub fn browser(&self) -> reqwest::Client {
        self.browser_with_jar().0
    }

    pub fn browser_with_jar(&self) -> (reqwest::Client, Arc<Jar>) {
        let jar = Arc::new(Jar::default());
        let b = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], self.port)))
            .build()
            .unwrap();
        (b, jar)
    }

    /// The unigate session id in `jar`.
    pub fn session_id(&self, jar: &Jar) -> String {
        let h = jar.cookies(&Url::parse(&self.url("/")).unwrap()).expect("cookies");
        h.to_str()
            .unwrap()
            .split("; ")
            .find_map(|kv| kv.strip_prefix("unigate="))
            .expect("a session cookie")
            .to_string()
    }

    /// Starts a login; returns the authorization request's URL, `state`
    /// and `nonce`.
    pub async fn start(&self, b: &reqwest::Client) -> (String, String, String) {
        let r = b.get(self.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let authorize = location(&r);
        assert!(
            authorize.starts_with(&format!("{}/authorize?", self.op.base)),
            "{authorize}"
        );
        let state = query_param(&authorize, "state").unwrap();
        let nonce = query_param(&authorize, "nonce").unwrap();
        (authorize, state, nonce)
    }

    /// The callback with this query, and, when the login failed, its
    /// stable error page (where the callback sends the browser).
    pub async fn callback(&self, b: &reqwest::Client, query: &str) -> reqwest::Response {
        let r = b
            .get(self.url(&format!("/_unigate/callback?{query}")))
            .send()
            .await
            .unwrap();
        match super::failed_login_page(b, &r).await {
            Some(page) => page,
            None => r,
        }
    }

    pub fn iss(&self) -> String {
        form_urlencoded::byte_serialize(self.op.issuer.as_bytes()).collect()
    }

    /// A whole login whose token response carries an ID token with
    /// `claims` (nonce added) and access token `at-1`; returns the
    /// callback's response.
    pub async fn login(&self, b: &reqwest::Client, claims: Value) -> reqwest::Response {
        self.login_signed(b, claims, &self.op.key).await
    }

    /// `login`, the ID token signed by `key`.
    pub async fn login_signed(&self, b: &reqwest::Client, claims: Value, key: &SigningKey) -> reqwest::Response {
        let (_, state, nonce) = self.start(b).await;
        let mut claims = claims;
        claims["nonce"] = json!(nonce);
        let id_token = key.sign("JWT", &claims).unwrap();
        let tokens = self.op.tokens(&id_token, "at-1");
        self.op.set(|s| s.on_code = Some(Answer::json(tokens)));
        self.callback(b, &format!("code=c-1&state={state}&iss={}", self.iss()))
            .await
    }

    /// The module's page through unigate: its status, and the identity
    /// headers the module got (when it got the request).
    pub async fn page(&self, b: &reqwest::Client) -> (u16, Vec<(String, String)>) {
        self.module.clear();
        let r = b.get(self.url("/")).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = if self.module.lines().is_empty() {
            Vec::new()
        } else {
            self.module.last_headers()
        };
        (status, headers)
    }
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

pub fn all_claims(op: &FakeOp, sub: &str, groups: Value) -> Value {
    let mut c = op.id_claims(sub, None);
    c["email"] = json!(format!("{sub}@example.com"));
    c["name"] = json!("A User");
    c["preferred_username"] = json!(sub);
    c["company"] = json!("acme");
    c["groups"] = groups;
    c
}
