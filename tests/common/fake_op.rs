#![allow(dead_code)]
//! A scriptable OpenID Provider on loopback, for what an honest provider
//! never does: each test sets the token, UserInfo and JWKS answers, and
//! reads what unigate asked. The authorization step is the test's: it reads
//! `state` and `nonce` from unigate's redirect and calls the callback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use unigate::idp::keys::SigningKey;

/// One scripted answer: status, content type, body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    pub fn json(v: Value) -> Answer {
        Answer {
            status: 200,
            content_type: "application/json",
            body: v.to_string(),
        }
    }
}

#[derive(Default)]
pub struct Script {
    /// Discovery's `authorization_response_iss_parameter_supported`.
    pub iss_supported: bool,
    /// The JWKS document.
    pub jwks: Value,
    /// Answers of the token endpoint by grant type.
    pub on_code: Option<Answer>,
    pub on_refresh: Option<Answer>,
    pub userinfo: Option<Answer>,
    /// Token answers for particular codes (else `on_code`).
    pub by_code: std::collections::HashMap<String, Answer>,
    /// How long the JWKS endpoint takes to answer.
    pub jwks_delay: std::time::Duration,
    /// How long a refresh takes to answer.
    pub refresh_delay: std::time::Duration,
    /// How long UserInfo takes to answer.
    pub userinfo_delay: std::time::Duration,
    /// Rotate refresh tokens: each refresh answers a new one, and a used
    /// one is refused (`invalid_grant`), as strict providers do.
    pub rotate_refresh: bool,
    pub live_refresh: Option<String>,
    pub refreshes_refused: usize,
    /// What was asked: `token:<grant>`, `userinfo:<bearer>`, `jwks`.
    pub calls: Vec<String>,
}

pub struct FakeOp {
    pub addr: SocketAddr,
    /// Where it is: what unigate's config names.
    pub base: String,
    /// The issuer its discovery and tokens name: `base`, or `base/` for a
    /// provider such as Auth0 whose issuer ends in a slash.
    pub issuer: String,
    pub key: SigningKey,
    pub script: Arc<Mutex<Script>>,
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

impl FakeOp {
    pub async fn start() -> FakeOp {
        Self::start_with(false).await
    }

    /// `slash`: the issuer ends in `/`.
    pub async fn start_with(slash: bool) -> FakeOp {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let base = format!("http://127.0.0.1:{}", addr.port());
        let issuer = if slash { format!("{base}/") } else { base.clone() };
        let key = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
        let script = Arc::new(Mutex::new(Script {
            iss_supported: true,
            jwks: json!({ "keys": [key.jwk] }),
            ..Script::default()
        }));
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state((base.clone(), issuer.clone(), script.clone()));
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        FakeOp {
            addr,
            base,
            issuer,
            key,
            script,
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.script.lock().unwrap().calls.clone()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.calls().iter().filter(|c| c.starts_with(prefix)).count()
    }

    /// The claims of a good ID token for `sub` of the test client.
    pub fn id_claims(&self, sub: &str, nonce: Option<&str>) -> Value {
        let t = now();
        let mut c = json!({
            "iss": self.issuer, "sub": sub, "aud": super::CLIENT,
            "exp": t + 300, "iat": t, "auth_time": t,
        });
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        c
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.key.sign("JWT", claims).unwrap()
    }

    /// A Back-Channel Logout token for the provider session `sid`.
    pub fn logout_token(&self, sid: &str) -> String {
        let t = now();
        let claims = json!({
            "iss": self.issuer, "aud": super::CLIENT, "iat": t, "exp": t + 120,
            "jti": unigate::idp::store::random_token(), "sid": sid,
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        });
        self.key.sign("logout+jwt", &claims).unwrap()
    }

    /// A token response with this ID token (and a refresh token).
    pub fn tokens(&self, id_token: &str, access_token: &str) -> Value {
        json!({
            "access_token": access_token, "token_type": "Bearer", "expires_in": 300,
            "id_token": id_token, "refresh_token": "rt-1",
        })
    }

    pub fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().unwrap())
    }
}

type S = State<(String, String, Arc<Mutex<Script>>)>;

async fn discovery(State((base, issuer, script)): S) -> Response {
    let iss_supported = script.lock().unwrap().iss_supported;
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks"),
        "end_session_endpoint": format!("{base}/logout"),
        "id_token_signing_alg_values_supported": ["ES256"],
        "authorization_response_iss_parameter_supported": iss_supported,
    }))
    .into_response()
}

async fn jwks(State((_, _, script)): S) -> Response {
    let (doc, delay) = {
        let mut s = script.lock().unwrap();
        s.calls.push("jwks".into());
        (s.jwks.clone(), s.jwks_delay)
    };
    tokio::time::sleep(delay).await;
    axum::Json(doc).into_response()
}

fn answer(a: Option<Answer>) -> Response {
    match a {
        Some(a) => (
            StatusCode::from_u16(a.status).unwrap(),
            [(header::CONTENT_TYPE, a.content_type)],
            a.body,
        )
            .into_response(),
        None => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"}))).into_response(),
    }
}

async fn token(State((_, _, script)): S, body: String) -> Response {
    let field = |name: &str| {
        form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (grant, code) = (field("grant_type"), field("code"));
    let (a, delay) = {
        let mut s = script.lock().unwrap();
        s.calls.push(format!("token:{grant}"));
        match grant.as_str() {
            "authorization_code" => (s.by_code.get(&code).cloned().or_else(|| s.on_code.clone()), None),
            "refresh_token" if s.rotate_refresh => {
                let used = field("refresh_token");
                if s.live_refresh.as_deref().unwrap_or("rt-1") != used {
                    s.refreshes_refused += 1;
                    (None, None)
                } else {
                    let next = format!("rt-{}", s.calls.len());
                    s.live_refresh = Some(next.clone());
                    let a = s.on_refresh.clone().map(|mut a| {
                        let mut v: Value = serde_json::from_str(&a.body).unwrap();
                        v["refresh_token"] = json!(next);
                        a.body = v.to_string();
                        a
                    });
                    (a, Some(s.refresh_delay))
                }
            }
            "refresh_token" => (s.on_refresh.clone(), Some(s.refresh_delay)),
            _ => (None, None),
        }
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    answer(a)
}

async fn userinfo(State((_, _, script)): S, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let (a, delay) = {
        let mut s = script.lock().unwrap();
        s.calls.push(format!("userinfo:{bearer}"));
        (s.userinfo.clone(), s.userinfo_delay)
    };
    tokio::time::sleep(delay).await;
    match a {
        Some(a) => answer(Some(a)),
        None => (StatusCode::UNAUTHORIZED, "").into_response(),
    }
}
