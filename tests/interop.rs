//! unigate against a provider nobody here wrote: `oidc-provider`, the
//! certified Node.js OpenID Provider (tests/interop/oidc-provider). Its
//! default puts email, name and groups only in UserInfo; with
//! `OP_CLAIMS_IN_ID_TOKEN=1` also in the ID token. Login, access groups,
//! refresh (a group removed at the provider), RP-initiated logout and
//! back-channel logout, through its real login and logout pages.
//!
//! Needs Node.js: where `node` is missing, each test says so and passes.
//! `npm ci` is run in the fixture's folder when its packages are missing.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{HOST, Recorded, TomlEdit, location, recording_upstream, start_gateway, table_of};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use unigate::gateway::server::{GatewayServer, free_port};
use url::Url;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/oidc-provider")
}

/// Whether Node.js is here; if not, says so on stderr.
fn node_available(test: &str) -> bool {
    let ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED {test}: Node.js is not installed, so the oidc-provider interop test cannot run");
    }
    ok
}

/// Installs the fixture's packages once (`npm ci`, from its lock file).
fn install_fixture() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if fixture_dir().join("node_modules/oidc-provider/package.json").exists() {
            return;
        }
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(fixture_dir())
            .output()
            .expect("npm runs (it comes with Node.js)");
        assert!(
            out.status.success(),
            "npm ci in tests/interop/oidc-provider failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

struct Op {
    _child: Child,
    /// Held open: the provider exits when its stdin closes.
    _stdin: ChildStdin,
    issuer: String,
}

async fn start_op(port: u16, claims_in_id_token: bool) -> Op {
    install_fixture();
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(fixture_dir())
        .env("OP_CLIENT_ID", common::CLIENT)
        .env("OP_CLIENT_SECRET", common::SECRET)
        .env("OP_REDIRECT_URIS", format!("http://{HOST}:{port}/_unigate/callback"))
        .env("OP_POST_LOGOUT_REDIRECT_URIS", format!("http://{HOST}:{port}/"))
        .env(
            "OP_BACKCHANNEL_LOGOUT_URI",
            format!("http://127.0.0.1:{port}/_unigate/backchannel-logout"),
        )
        .env("OP_CLAIMS_IN_ID_TOKEN", if claims_in_id_token { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let stdin = child.stdin.take().unwrap();
    // The provider's warnings (Node.js version, development keys), kept
    // with the test's output.
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(l)) = stderr.next_line().await {
            eprintln!("[oidc-provider] {l}");
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .expect("oidc-provider starts within 30 s")
        .unwrap()
        .expect("oidc-provider prints its issuer");
    let issuer = line.strip_prefix("ISSUER ").expect("an ISSUER line").to_string();
    // The provider logs to stdout too: keep reading, or it dies of EPIPE.
    tokio::spawn(async move {
        while let Ok(Some(l)) = stdout.next_line().await {
            eprintln!("[oidc-provider] {l}");
        }
    });
    Op {
        _child: child,
        _stdin: stdin,
        issuer,
    }
}

struct Setup {
    op: Op,
    _gw: GatewayServer,
    port: u16,
    module: Recorded,
}

/// `refresh_before` in `[session]` when given.
async fn setup(claims_in_id_token: bool, refresh_before: Option<&str>) -> Setup {
    let port = free_port().unwrap();
    let op = start_op(port, claims_in_id_token).await;
    let (up, module) = recording_upstream("the module's page").await;
    let gw = start_gateway(port, &op.issuer, |t| {
        t.table("identity_provider")
            .set("scopes", vec!["openid", "email", "profile", "groups"]);
        let session = t.table("session");
        session.set("store", "memory");
        if let Some(before) = refresh_before {
            session.set("refresh_before", before);
        }
        let portal = table_of(|m| {
            m.set("name", "portal")
                .set("hosts", vec![HOST])
                .set("upstream", up.to_string())
                .set("access_groups", vec!["portal-users"])
                .set("login", "automatic")
                .set("logout_paths", vec!["/logout"]);
        });
        t.set("module", vec![portal]);
    })
    .await;
    Setup {
        op,
        _gw: gw,
        port,
        module,
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{path}", self.port)
    }

    fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], self.port)))
            .build()
            .unwrap()
    }

    /// Follows redirects from `url` as a browser would, until a page
    /// (not a redirect) answers; returns its URL and response.
    async fn follow(&self, b: &reqwest::Client, url: &str) -> (String, reqwest::Response) {
        let mut url = url.to_string();
        for _ in 0..20 {
            let r = b.get(&url).send().await.unwrap();
            if !r.status().is_redirection() {
                return (url, r);
            }
            url = Url::parse(&url).unwrap().join(&location(&r)).unwrap().to_string();
        }
        panic!("too many redirects from {url}");
    }

    /// Logs `user` in from the module's root through the provider's login
    /// page; returns the final page's URL and response.
    async fn login(&self, b: &reqwest::Client, user: &str) -> (String, reqwest::Response) {
        let (at, page) = self.follow(b, &self.url("/")).await;
        assert!(
            at.starts_with(&format!("{}/interaction/", self.op.issuer)),
            "the login page: {at}"
        );
        assert_eq!(page.status(), 200);
        let r = b
            .post(&at)
            .form(&[("prompt", "login"), ("login", user), ("password", "any")])
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_redirection(),
            "the login form is accepted: {}",
            r.status()
        );
        let next = Url::parse(&at).unwrap().join(&location(&r)).unwrap().to_string();
        self.follow(b, &next).await
    }

    /// The module's page through unigate: status and the identity headers.
    async fn page(&self, b: &reqwest::Client) -> (u16, Vec<(String, String)>) {
        self.module.clear();
        let r = b.get(self.url("/")).send().await.unwrap();
        let status = r.status().as_u16();
        let h = if self.module.lines().is_empty() {
            Vec::new()
        } else {
            self.module.last_headers()
        };
        (status, h)
    }

    /// Confirms the provider's logout page reached at `at`.
    async fn confirm_logout(&self, b: &reqwest::Client, at: &str, page: reqwest::Response) -> String {
        assert!(at.starts_with(&format!("{}/session/end", self.op.issuer)), "{at}");
        let html = page.text().await.unwrap();
        let xsrf = html
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("the logout form's xsrf in {html}"))
            .to_string();
        let r = b
            .post(format!("{}/session/end/confirm", self.op.issuer))
            .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection(), "logout confirmed: {}", r.status());
        location(&r)
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

async fn until_page(s: &Setup, b: &reqwest::Client, want: u16) -> bool {
    for _ in 0..100 {
        if s.page(b).await.0 == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn oidc_provider_with_claims_only_in_userinfo() {
    if !node_available("oidc_provider_with_claims_only_in_userinfo") {
        return;
    }
    let s = setup(false, None).await;
    let b = s.browser();
    let (at, r) = s.login(&b, "alice").await;
    assert_eq!(at, s.url("/"), "back on the module");
    assert_eq!(r.status(), 200);
    let (status, h) = s.page(&b).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-kaseyaone-groups"), Some("portal-users,staff"));
    assert_eq!(header(&h, "x-kaseyaone-email"), Some("alice@example.com"));
    assert_eq!(header(&h, "x-kaseyaone-name"), Some("Alice Adams"));
    assert_eq!(header(&h, "x-kaseyaone-user"), Some("alice"));
    // bob is not in portal-users.
    let b = s.browser();
    let (_, r) = s.login(&b, "bob").await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn oidc_provider_with_claims_in_the_id_token() {
    if !node_available("oidc_provider_with_claims_in_the_id_token") {
        return;
    }
    let s = setup(true, None).await;
    let b = s.browser();
    let (_, r) = s.login(&b, "alice").await;
    assert_eq!(r.status(), 200);
    let (status, h) = s.page(&b).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-kaseyaone-groups"), Some("portal-users,staff"));
}

#[tokio::test]
async fn oidc_provider_refresh_carries_a_group_removal() {
    if !node_available("oidc_provider_refresh_carries_a_group_removal") {
        return;
    }
    // Access tokens live an hour; refreshing 2 h ahead refreshes at once.
    for claims_in_id_token in [false, true] {
        let s = setup(claims_in_id_token, Some("2h")).await;
        let b = s.browser();
        let (_, r) = s.login(&b, "alice").await;
        assert_eq!(r.status(), 200);
        let r = reqwest::Client::new()
            .post(format!("{}/__test/groups?user=alice", s.op.issuer))
            .body(r#"["staff"]"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(
            until_page(&s, &b, 403).await,
            "alice loses the module at the next refresh (claims in the ID token: {claims_in_id_token})"
        );
    }
}

#[tokio::test]
async fn oidc_provider_rp_initiated_logout_ends_both_sessions() {
    if !node_available("oidc_provider_rp_initiated_logout_ends_both_sessions") {
        return;
    }
    let s = setup(false, None).await;
    let b = s.browser();
    let (_, r) = s.login(&b, "alice").await;
    assert_eq!(r.status(), 200);
    // The module's logout: unigate ends its session and sends the browser
    // to the provider's end-session page, which asks to confirm.
    let (at, page) = s.follow(&b, &s.url("/logout")).await;
    let back = s.confirm_logout(&b, &at, page).await;
    assert!(back.starts_with(&s.url("/")), "back to the module: {back}");
    // Both sessions ended: the module's root leads to the provider's login
    // page again, not silently back in.
    let (at, _) = s.follow(&b, &s.url("/")).await;
    assert!(at.starts_with(&format!("{}/interaction/", s.op.issuer)), "{at}");
}

#[tokio::test]
async fn oidc_provider_back_channel_logout_ends_the_session() {
    if !node_available("oidc_provider_back_channel_logout_ends_the_session") {
        return;
    }
    let s = setup(false, None).await;
    let b = s.browser();
    let (_, r) = s.login(&b, "alice").await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.page(&b).await.0, 200);
    // The user logs out at the provider itself (another tab): it tells
    // unigate by a back-channel logout token.
    let (at, page) = s.follow(&b, &format!("{}/session/end", s.op.issuer)).await;
    s.confirm_logout(&b, &at, page).await;
    assert!(until_page(&s, &b, 302).await, "the unigate session ended");
}
