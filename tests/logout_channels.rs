//! How a logout reaches unigate, over real sockets with the embedded IdP:
//! Back-Channel Logout 1.0 from another module ending every session (and
//! every invalid logout-token variant refused with the session surviving),
//! Front-Channel Logout 1.0 by `sid`, and the admin revocation API with its
//! audit log. Each runs with the memory store and with Redis.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use unigate::oidc::logout_token::BACKCHANNEL_EVENT;

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
    // Her KaseyaOne session lives on: she logs in again at once (a
    // revocation ends the logins of before it, not those after).
    let (_, r) = s.walk(&b, "alice", &portal).await;
    assert_eq!(r.status(), 200, "a login right after a revocation");
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
