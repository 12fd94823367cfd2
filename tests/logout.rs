//! Logout everywhere (issue 5), over real sockets with the embedded IdP:
//! Back-Channel Logout 1.0 (and every invalid logout-token variant refused
//! with the session surviving), Front-Channel Logout 1.0, the module's own
//! session refused after a logout, the user switch, a websocket closed on
//! logout, and the admin revocation API.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use unigate::oidc::logout_token::BACKCHANNEL_EVENT;

/// The admin token: the stack's secret file (see `start_gateway`).
const ADMIN_TOKEN: &str = SECRET;

/// The demo's modules, with the IdP told to send back- and front-channel
/// logouts to unigate, and an admin listener.
async fn logout_stack() -> Multi {
    logout_stack_builder().start().await
}

/// The stack, to start (`.redis()`: its sessions in Redis).
fn logout_stack_builder<'a>() -> MultiBuilder<'a> {
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

/// The IdP session id and user of the (one) live session.
fn the_session(s: &Multi) -> (String, String) {
    let (sid, sub) = match s.gw.gateway.cached_sessions().pop() {
        Some((_, session)) => (
            session.identity.sid.as_deref().map(str::to_string),
            session.identity.sub.to_string(),
        ),
        None => (
            s.gw.gateway.state.sessions.memory().unwrap().sids().into_iter().next(),
            s.gw.gateway
                .state
                .sessions
                .memory()
                .unwrap()
                .subs()
                .into_iter()
                .next()
                .unwrap_or_default(),
        ),
    };
    (sid.expect("a session with a sid"), sub)
}

/// The audit log (JSON lines of the `unigate::audit` target) of every
/// stack in this test binary, captured from the first call on.
fn audit_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("unigate::audit=info"))
            .with_writer(move || Capture(sink.clone()))
            .try_init()
            .expect("the only subscriber of this test binary");
        buf
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The audit lines of calls made with user agent `agent`.
fn audit_lines(agent: &str) -> Vec<Value> {
    let log = audit_log();
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["fields"]["user_agent"] == agent)
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What a module page answers now: 200 (in), or where it redirects.
async fn page(b: &reqwest::Client, url: &str) -> (u16, String) {
    let r = b.get(url).header("accept", "text/html").send().await.unwrap();
    let status = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, loc)
}

/// Posts a logout token to unigate's back-channel endpoint.
async fn post_logout_token(s: &Multi, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/_unigate/backchannel-logout", s.port))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
}

fn sign(s: &Multi, typ: &str, claims: &Value) -> String {
    s.idp.provider.keys.current(Algorithm::ES256).sign(typ, claims).unwrap()
}

fn logout_claims(s: &Multi, sid: &str) -> Value {
    json!({
        "iss": s.idp.issuer(), "aud": CLIENT, "iat": now(), "exp": now() + 120,
        "jti": unigate::idp::store::random_token(), "sid": sid,
        "events": { BACKCHANNEL_EVENT: {} }
    })
}

#[tokio::test]
async fn backchannel_logout_from_another_module_ends_every_session_and_the_module_sessions() {
    backchannel_everywhere(logout_stack().await).await;
}

#[tokio::test]
async fn backchannel_logout_from_another_module_ends_every_session_and_the_module_sessions_with_redis() {
    backchannel_everywhere(logout_stack_builder().redis().start().await).await;
}

async fn backchannel_everywhere(s: Multi) {
    let b = s.browser();
    let portal = s.url("portal.localhost", "/");
    let (_, r) = s.walk(&b, "alice", &portal).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Welcome, alice"));
    assert_eq!(
        s.module("portal").module.live_sessions(),
        1,
        "the portal opened its own session"
    );
    let east = s.url("bms-east.localhost", "/");
    let (_, r) = s.walk(&b, "alice", &east).await;
    assert_eq!(r.status(), 200);

    // Log out of BMS East: unigate sends the browser to the IdP, which ends
    // its session and tells unigate by back channel.
    let r = b.get(s.url("bms-east.localhost", "/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let end = location(&r);
    let r = b.get(&end).send().await.unwrap();
    assert!(r.status().is_success() || r.status().is_redirection(), "{}", r.status());
    // Within a second the portal session is gone on the server side.
    wait_until("the portal session ends", Duration::from_secs(1), async || {
        page(&b, &portal).await.0 == 302
    })
    .await;
    let (_, loc) = page(&b, &portal).await;
    assert!(loc.starts_with(&format!("{}/authorize?", s.idp.issuer())), "{loc}");
    assert!(
        s.gw.gateway.local_sessions() == 0 && s.gw.gateway.cached_sessions().is_empty(),
        "both sessions ended"
    );
}

#[tokio::test]
async fn a_module_session_of_an_ended_login_never_gets_through() {
    dead_module_session(logout_stack().await).await;
}

#[tokio::test]
async fn a_module_session_of_an_ended_login_never_gets_through_with_redis() {
    dead_module_session(logout_stack_builder().redis().start().await).await;
}

async fn dead_module_session(s: Multi) {
    let b = s.browser();
    let portal = s.url("portal.localhost", "/");
    let (_, r) = s.walk(&b, "alice", &portal).await;
    assert_eq!(r.status(), 200);
    let module_cookie = portal_cookie(&r);
    // The session ends (admin revocation) …
    let admin = s.gw.admin_addr.unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{admin}/admin/revoke"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"email": "ALICE@acme-msp.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 1);
    // … and the module's cookie alone, replayed by anyone, is refused and expired.
    let thief = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("portal.localhost", std::net::SocketAddr::from(([127, 0, 0, 1], s.port)))
        .build()
        .unwrap();
    let r = thief
        .get(&portal)
        .header("accept", "text/html")
        .header("cookie", &module_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(location(&r).starts_with(&format!("{}/authorize?", s.idp.issuer())));
    let expired = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("portal_session=;") && c.to_str().unwrap().contains("Max-Age=0"));
    assert!(expired, "the module cookie is expired");
    // An API client gets 401, not the module.
    let r = thief
        .get(s.url("portal.localhost", "/api/whoami"))
        .header("accept", "application/json")
        .header("cookie", &module_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn user_switch_keeps_the_previous_users_module_session_out() {
    user_switch(logout_stack().await).await;
}

#[tokio::test]
async fn user_switch_keeps_the_previous_users_module_session_out_with_redis() {
    user_switch(logout_stack_builder().redis().start().await).await;
}

async fn user_switch(s: Multi) {
    let portal = s.url("portal.localhost", "/");
    // alice's browser, and her portal session cookie.
    let a = s.browser();
    let (_, r) = s.walk(&a, "alice", &portal).await;
    let alice_cookie = portal_cookie(&r);
    let value = alice_cookie.split_once('=').unwrap().1;
    assert!(
        s.gw.gateway
            .state
            .sessions
            .module_cookie_owner(value)
            .await
            .unwrap()
            .is_some(),
        "unigate saw the module issue alice's cookie"
    );
    // bob logs in on a browser that carries alice's portal cookie (without
    // her unigate session it is expired on the way in)…
    let (bob, jar) = s.browser_with_jar();
    jar.add_cookie_str(&alice_cookie, &url::Url::parse(&portal).unwrap());
    let (_, r) = s.walk(&bob, "bob", &portal).await;
    assert_eq!(r.status(), 200);
    let bob_cookie = portal_cookie(&r);
    let page = r.text().await.unwrap();
    assert!(page.contains("Welcome, bob"), "{page}");
    // …and when it turns up again beside bob's session, the module never sees it.
    jar.add_cookie_str(&alice_cookie, &url::Url::parse(&portal).unwrap());
    let who: Value = bob
        .get(s.url("portal.localhost", "/api/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["assertion"]["preferred_username"], "bob");
    assert!(
        who["local_session_user"].is_null(),
        "alice's module session was kept out: {who}"
    );
    // Both at once (a browser sends one cookie per path and domain): bob's
    // own portal cookie first, alice's behind it. Neither reaches the module.
    let portal_url = url::Url::parse(&portal).unwrap();
    let jar_cookies = reqwest::cookie::CookieStore::cookies(&*jar, &portal_url).expect("bob's cookies");
    let jar_cookies = jar_cookies.to_str().unwrap();
    let plain = reqwest::Client::builder()
        .resolve("portal.localhost", std::net::SocketAddr::from(([127, 0, 0, 1], s.port)))
        .build()
        .unwrap();
    let who: Value = plain
        .get(s.url("portal.localhost", "/api/whoami"))
        .header("cookie", format!("{bob_cookie}; {jar_cookies}; {alice_cookie}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["assertion"]["preferred_username"], "bob");
    assert!(
        who["local_session_user"].is_null(),
        "alice's module session, second of two, was kept out: {who}"
    );
    // alice herself, in another login (another browser, so another IdP
    // session and sid): the module session of her first login stays out
    // too, and the module opens a new one.
    let (again, jar) = s.browser_with_jar();
    let (_, r) = s.walk(&again, "alice", &portal).await;
    assert_eq!(r.status(), 200);
    jar.add_cookie_str(&alice_cookie, &portal_url);
    let r = again.get(&portal).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let opened = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("portal_session="));
    assert!(
        opened,
        "the first login's module session reached the module in the second login"
    );
}

#[tokio::test]
async fn every_invalid_logout_token_gets_400_and_the_session_survives() {
    invalid_logout_tokens(logout_stack().await).await;
}

#[tokio::test]
async fn every_invalid_logout_token_gets_400_and_the_session_survives_with_redis() {
    invalid_logout_tokens(logout_stack_builder().redis().start().await).await;
}

async fn invalid_logout_tokens(s: Multi) {
    let b = s.browser();
    let portal = s.url("portal.localhost", "/");
    let (_, r) = s.walk(&b, "alice", &portal).await;
    assert_eq!(r.status(), 200);
    // The IdP session id of alice's (only) session.
    let (sid, _) = the_session(&s);
    let good = logout_claims(&s, &sid);
    let edit = |k: &str, v: Value| {
        let mut c = good.clone();
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v;
        }
        c["jti"] = json!(unigate::idp::store::random_token());
        c
    };
    let other_key = unigate::idp::keys::SigningKey::generate(Algorithm::ES256).unwrap();
    let header_b64 = |h: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string())
    };
    let alg_none = format!(
        "{}.{}.",
        header_b64(&json!({"alg": "none", "typ": "logout+jwt"})),
        header_b64(&edit("jti", json!("none-1")))
    );
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &edit("jti", json!("hs-1")),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut neither = good.clone();
    neither.as_object_mut().unwrap().remove("sid");
    neither.as_object_mut().unwrap().remove("sub");
    neither["jti"] = json!("neither-1");
    // An ID token: what the IdP issued at login.
    let id_token = {
        let claims = json!({
            "iss": s.idp.issuer(), "aud": CLIENT, "sub": "x", "sid": sid, "iat": now(), "exp": now() + 300,
            "nonce": "n", "jti": "id-1"
        });
        sign(&s, "JWT", &claims)
    };
    // The IdP's key id and payload, another key's signature.
    let forged = {
        let claims = edit("jti", json!("sig-1"));
        let genuine = sign(&s, "logout+jwt", &claims);
        let other = other_key.sign("logout+jwt", &claims).unwrap();
        format!(
            "{}.{}",
            genuine.rsplit_once('.').unwrap().0,
            other.rsplit_once('.').unwrap().1
        )
    };
    let cases: Vec<(&str, String)> = vec![
        ("bad signature", forged),
        ("alg none", alg_none),
        ("wrong alg (HS256 with the client secret)", hs256),
        (
            "wrong iss",
            sign(&s, "logout+jwt", &edit("iss", json!("https://evil.example"))),
        ),
        (
            "wrong aud",
            sign(&s, "logout+jwt", &edit("aud", json!("another-client"))),
        ),
        ("expired", sign(&s, "logout+jwt", &edit("exp", json!(now() - 300)))),
        ("missing events", sign(&s, "logout+jwt", &edit("events", Value::Null))),
        (
            "events not an object",
            sign(&s, "logout+jwt", &edit("events", json!("logout"))),
        ),
        ("nonce present", sign(&s, "logout+jwt", &edit("nonce", json!("n")))),
        ("neither sub nor sid", sign(&s, "logout+jwt", &neither)),
        ("an ID token", id_token),
        ("not a JWT", "not-a-token".to_string()),
    ];
    for (what, token) in cases {
        let r = post_logout_token(&s, &token).await;
        assert_eq!(r.status(), 400, "{what}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{what}");
        assert_eq!(page(&b, &portal).await.0, 200, "{what}: the session survives");
    }
    // Signed by a key the IdP does not publish: unigate fetches the JWKS
    // again at once (the IdP may have rotated, even right after start);
    // the key is not there, so the token is refused.
    let unknown = other_key.sign("logout+jwt", &edit("jti", Value::Null)).unwrap();
    let r = post_logout_token(&s, &unknown).await;
    assert_eq!(r.status(), 400, "unknown key, not in a fresh JWKS");
    assert_eq!(page(&b, &portal).await.0, 200, "unknown key: the session survives");
    // Again at once: within the cooldown after that fetch, unigate cannot
    // tell a forgery from a key rotated since, so the IdP is asked to
    // retry (503, Retry-After), and nothing ends.
    let r = post_logout_token(&s, &unknown).await;
    assert_eq!(r.status(), 503, "unknown key within the JWKS cooldown");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "temporarily_unavailable");
    assert_eq!(page(&b, &portal).await.0, 200, "unknown key: the session survives");
    // A missing token.
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/_unigate/backchannel-logout", s.port))
        .form(&[("other", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A valid token for another sid: 200, nothing ends.
    let other = logout_claims(&s, "some-other-sid");
    let r = post_logout_token(&s, &sign(&s, "logout+jwt", &other)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(page(&b, &portal).await.0, 200);
    // Its jti again, now naming alice's sid: a replay, refused, and her
    // session survives.
    let mut replay = good.clone();
    replay["jti"] = other["jti"].clone();
    let r = post_logout_token(&s, &sign(&s, "logout+jwt", &replay)).await;
    assert_eq!(r.status(), 400, "jti replay");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(page(&b, &portal).await.0, 200, "jti replay: the session survives");
    // The valid token: 200, the session ends; its replay: 400.
    let token = sign(&s, "logout+jwt", &good);
    let r = post_logout_token(&s, &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(page(&b, &portal).await.0, 302, "logged out");
    let r = post_logout_token(&s, &token).await;
    assert_eq!(r.status(), 400, "jti replay");
    // Already gone: a fresh token for the same sid is still 200.
    let r = post_logout_token(&s, &sign(&s, "logout+jwt", &logout_claims(&s, &sid))).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn frontchannel_logout_finds_the_sessions_by_sid_and_only_the_idp_may_frame_it() {
    frontchannel(logout_stack().await).await;
}

#[tokio::test]
async fn frontchannel_logout_finds_the_sessions_by_sid_and_only_the_idp_may_frame_it_with_redis() {
    frontchannel(logout_stack_builder().redis().start().await).await;
}

async fn frontchannel(s: Multi) {
    let b = s.browser();
    let portal = s.url("portal.localhost", "/");
    let (_, r) = s.walk(&b, "alice", &portal).await;
    assert_eq!(r.status(), 200);
    let (sid, _) = the_session(&s);
    // No cookies (a third-party iframe sends none): found by sid.
    let anon = reqwest::Client::new();
    let bad = anon
        .get(format!(
            "http://127.0.0.1:{}/_unigate/frontchannel-logout?iss=https://evil.example&sid={sid}",
            s.port
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(page(&b, &portal).await.0, 200, "wrong iss: nothing ends");
    let missing = anon
        .get(format!(
            "http://127.0.0.1:{}/_unigate/frontchannel-logout?iss={}",
            s.port,
            s.idp.issuer()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let url = url::Url::parse_with_params(
        &format!("http://127.0.0.1:{}/_unigate/frontchannel-logout", s.port),
        &[("iss", s.idp.issuer()), ("sid", sid.as_str())],
    )
    .unwrap();
    let r = anon.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert_eq!(csp, format!("frame-ancestors {}", s.idp.issuer()));
    assert_eq!(page(&b, &portal).await.0, 302, "logged out");
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_revokes_by_sub_or_email() {
    admin_api(logout_stack().await).await;
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_revokes_by_sub_or_email_with_redis() {
    admin_api(logout_stack_builder().redis().start().await).await;
}

async fn admin_api(s: Multi) {
    audit_log();
    let b = s.browser();
    let portal = s.url("portal.localhost", "/");
    let (_, r) = s.walk(&b, "alice", &portal).await;
    assert_eq!(r.status(), 200);
    let admin = format!("http://{}/admin/revoke", s.gw.admin_addr.unwrap());
    // The user agent tells this test's audit lines from another's.
    let agent = format!("admin-test/{}", s.port);
    let c = reqwest::Client::builder().user_agent(&agent).build().unwrap();
    for token in [None, Some("wrong-token-0123456789")] {
        let mut rb = c.post(&admin).json(&json!({"email": "alice@acme-msp.example"}));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
    }
    assert_eq!(page(&b, &portal).await.0, 200, "refused calls change nothing");
    for body in [json!({}), json!({"sub": "a", "email": "b"}), json!("x")] {
        let r = c
            .post(&admin)
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    let (_, sub) = the_session(&s);
    let r = c
        .post(&admin)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"sub": sub}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 1);
    assert_eq!(page(&b, &portal).await.0, 302);
    // Calls the API has no handler for.
    let base = format!("http://{}", s.gw.admin_addr.unwrap());
    assert_eq!(c.get(&admin).send().await.unwrap().status(), 405);
    assert_eq!(c.get(format!("{base}/admin/nope")).send().await.unwrap().status(), 404);
    assert_eq!(c.get(format!("{base}/metrics")).send().await.unwrap().status(), 200);
    // Every call, refused ones too, is in the audit log, with the caller.
    let lines = audit_lines(&agent);
    let outcomes: Vec<&str> = lines.iter().map(|l| l["fields"]["outcome"].as_str().unwrap()).collect();
    let want = [
        "unauthorized",
        "unauthorized",
        "bad_request",
        "bad_request",
        "bad_request",
        "ok",
        "405",
        "404",
        "200",
    ];
    assert_eq!(outcomes, want, "{lines:?}");
    assert_eq!(lines[7]["fields"]["action"], "GET /admin/nope");
    for l in &lines {
        assert!(l["fields"]["caller"].as_str().unwrap().starts_with("127.0.0.1:"), "{l}");
        assert_eq!(l["target"], "unigate::audit");
        assert!(!l.to_string().contains(ADMIN_TOKEN), "the token is never logged: {l}");
    }
    let ok = &lines[5]["fields"];
    assert_eq!(ok["revoked"], 1);
    assert!(ok["target_user"].as_str().unwrap().contains(sub.as_str()), "{ok}");
}

#[tokio::test]
async fn a_websocket_is_closed_within_a_second_of_logout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = websocket_upstream().await;
    let s = StackBuilder::new().upstream(up).start().await;
    let (b, jar) = s.browser();
    s.login(&b, "alice", "/").await;
    let id = s.session_id(&jar).unwrap();
    let mut ws = websocket_through(s.port, &id).await;
    // Idle for a while: an open websocket is not closed for nothing (the
    // wait is the point: nothing should happen).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send(Message::text("still")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "still");
    // Logout (the browser's /logout): the websocket ends within a second.
    let r = b.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let t = Instant::now();
    assert!(
        websocket_ends_within(&mut ws, Duration::from_secs(1)).await,
        "the websocket was still open 1 s after logout"
    );
    eprintln!("websocket closed {:?} after logout", t.elapsed());
}

#[tokio::test]
async fn an_event_stream_a_chunked_feed_and_a_download_are_cut_within_a_second_of_logout() {
    let up = stream_upstream().await;
    let s = StackBuilder::new().upstream(up).start().await;
    let (b, _) = s.browser();
    s.login(&b, "alice", "/").await;
    let mut streams = Vec::new();
    for (path, first) in [
        ("/events", "data: hello"),
        ("/feed", "{\"n\":1}"),
        ("/download", "PART1"),
    ] {
        let mut r = b.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let chunk = r.chunk().await.unwrap().expect("the first item");
        assert!(String::from_utf8_lossy(&chunk).starts_with(first), "{path}: {chunk:?}");
        streams.push((path, r));
    }
    // Quiet streams are not closed for nothing (the wait is the point:
    // nothing should happen).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (path, r) in &mut streams {
        let next = tokio::time::timeout(Duration::from_millis(100), r.chunk()).await;
        assert!(next.is_err(), "{path} ended before the logout: {next:?}");
    }
    let r = b.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    for (path, mut r) in streams {
        let ended = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match r.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        let Ok(end) = ended else {
            panic!("{path} was still open 1 s after logout");
        };
        // Cut short, and the client can tell: not a clean end of body.
        assert!(end.is_err(), "{path} looked complete to the client");
    }
}

#[tokio::test]
async fn a_watched_streamed_response_that_ends_by_itself_is_complete() {
    let s = stack().await;
    let (b, _) = s.browser();
    s.login(&b, "alice", "/").await;
    for _ in 0..3 {
        let r = b.get(s.url("/ping/chunked")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("content-length").is_none(), "streamed");
        assert_eq!(r.text().await.unwrap(), "pong", "whole, and cleanly ended");
    }
    assert_eq!(
        b.get(s.url("/ping")).send().await.unwrap().status(),
        200,
        "the session lives on"
    );
}

#[tokio::test]
async fn a_websocket_is_closed_when_its_session_expires() {
    let up = websocket_upstream().await;
    // The session idles out one second after its last request.
    let s = StackBuilder::new()
        .upstream(up)
        .session(|s| {
            s.set("idle_timeout", "1s");
        })
        .start()
        .await;
    let (b, jar) = s.browser();
    s.login(&b, "alice", "/").await;
    let id = s.session_id(&jar).unwrap();
    let mut ws = websocket_through(s.port, &id).await;
    // Expiry is noticed within a second of it, and the websocket goes.
    let t = Instant::now();
    assert!(
        websocket_ends_within(&mut ws, Duration::from_secs(4)).await,
        "the websocket outlived its session"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "closed before the session expired: {:?}",
        t.elapsed()
    );
}
