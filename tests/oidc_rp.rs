//! unigate as an OpenID Connect relying party against a provider that
//! does what the specifications allow but KaseyaOne does not (claims only
//! in UserInfo, nested group claims, key rotation right after start), and
//! what they forbid (a repeated or unsigned parameter, a wrong token type,
//! an ID token of another kind or another user): each rule at the
//! callback and at refresh, over real sockets.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::cookie::{CookieStore, Jar};
use url::Url;

use common::fake_op::{Answer, FakeOp, now};
use common::{
    HOST, Recorded, TomlEdit, location, query_param, recording_upstream, start_gateway, table_of, wait_until,
};
use serde_json::{Value, json};
use toml::Table;
use unigate::gateway::server::{GatewayServer, free_port};
use unigate::idp::keys::SigningKey;

struct Rp {
    op: FakeOp,
    _gw: GatewayServer,
    port: u16,
    module: Recorded,
}

/// unigate in front of a recording module (module `portal` for
/// `portal-users`, sessions in memory), with the fake provider; `edit`
/// changes the configuration.
async fn start_rp(edit: impl FnOnce(&mut Table)) -> Rp {
    start_rp_with(FakeOp::start().await, edit).await
}

async fn start_rp_with(op: FakeOp, edit: impl FnOnce(&mut Table)) -> Rp {
    start_rp_full(op, None, edit).await
}

/// With the module at `upstream` (else a recording one).
async fn start_rp_full(op: FakeOp, upstream: Option<SocketAddr>, edit: impl FnOnce(&mut Table)) -> Rp {
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
fn portal_at(up: SocketAddr) -> Table {
    table_of(|m| {
        m.set("name", "portal")
            .set("hosts", vec![HOST])
            .set("upstream", up.to_string())
            .set("access_groups", vec!["portal-users"]);
    })
}

/// `[identity_provider]` keys.
fn provider(t: &mut Table) -> &mut Table {
    t.table("identity_provider")
}

impl Rp {
    fn url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{path}", self.port)
    }

    fn browser(&self) -> reqwest::Client {
        self.browser_with_jar().0
    }

    fn browser_with_jar(&self) -> (reqwest::Client, Arc<Jar>) {
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
    fn session_id(&self, jar: &Jar) -> String {
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
    async fn start(&self, b: &reqwest::Client) -> (String, String, String) {
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

    async fn callback(&self, b: &reqwest::Client, query: &str) -> reqwest::Response {
        b.get(self.url(&format!("/_unigate/callback?{query}")))
            .send()
            .await
            .unwrap()
    }

    fn iss(&self) -> String {
        form_urlencoded::byte_serialize(self.op.issuer.as_bytes()).collect()
    }

    /// A whole login whose token response carries an ID token with
    /// `claims` (nonce added) and access token `at-1`; returns the
    /// callback's response.
    async fn login(&self, b: &reqwest::Client, claims: Value) -> reqwest::Response {
        self.login_signed(b, claims, &self.op.key).await
    }

    /// `login`, the ID token signed by `key`.
    async fn login_signed(&self, b: &reqwest::Client, claims: Value, key: &SigningKey) -> reqwest::Response {
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
    async fn page(&self, b: &reqwest::Client) -> (u16, Vec<(String, String)>) {
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

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn all_claims(op: &FakeOp, sub: &str, groups: Value) -> Value {
    let mut c = op.id_claims(sub, None);
    c["email"] = json!(format!("{sub}@example.com"));
    c["name"] = json!("A User");
    c["preferred_username"] = json!(sub);
    c["company"] = json!("acme");
    c["groups"] = groups;
    c
}

#[tokio::test]
async fn claims_only_in_userinfo_log_the_user_in() {
    let rp = start_rp(|_| {}).await;
    let b = rp.browser();
    rp.op.set(|s| {
        s.userinfo = Some(Answer::json(json!({
            "sub": "alice", "email": "alice@example.com", "name": "Alice Adams",
            "preferred_username": "alice", "groups": ["portal-users", "staff"],
        })))
    });
    let r = rp.login(&b, rp.op.id_claims("alice", None)).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    assert!(
        rp.op.calls().contains(&"userinfo:at-1".to_string()),
        "{:?}",
        rp.op.calls()
    );
    let (status, h) = rp.page(&b).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-kaseyaone-groups"), Some("portal-users,staff"));
    assert_eq!(header(&h, "x-kaseyaone-email"), Some("alice@example.com"));
    assert_eq!(header(&h, "x-kaseyaone-user"), Some("alice"));
}

#[tokio::test]
async fn claims_in_the_id_token_need_no_userinfo_call() {
    let rp = start_rp(|_| {}).await;
    let b = rp.browser();
    let r = rp.login(&b, all_claims(&rp.op, "alice", json!(["portal-users"]))).await;
    assert_eq!(r.status(), 302);
    assert_eq!(rp.op.count("userinfo"), 0, "{:?}", rp.op.calls());
    // Asked anyway with `userinfo = "always"`, and it has the last word.
    let rp = rp_always().await;
    let b = rp.browser();
    rp.op
        .set(|s| s.userinfo = Some(Answer::json(json!({"sub": "alice", "groups": "portal-users"}))));
    let r = rp.login(&b, all_claims(&rp.op, "alice", json!(["staff"]))).await;
    assert_eq!(r.status(), 302);
    assert_eq!(rp.op.count("userinfo"), 1);
    let (status, h) = rp.page(&b).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-kaseyaone-groups"), Some("portal-users"));
}

async fn rp_always() -> Rp {
    start_rp(|t| {
        provider(t).set("userinfo", "always");
    })
    .await
}

#[tokio::test]
async fn a_userinfo_answer_that_is_wrong_fails_the_login_closed() {
    let rp = start_rp(|_| {}).await;
    let other_key = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
    let signed_by_other = other_key
        .sign("JWT", &json!({"sub": "alice", "groups": ["portal-users"]}))
        .unwrap();
    let cases: Vec<(&str, Option<Answer>)> = vec![
        (
            "another sub",
            Some(Answer::json(json!({"sub": "mallory", "groups": ["portal-users"]}))),
        ),
        ("no sub", Some(Answer::json(json!({"groups": ["portal-users"]})))),
        ("401", None),
        (
            "500",
            Some(Answer {
                status: 500,
                content_type: "application/json",
                body: "{}".into(),
            }),
        ),
        (
            "not JSON",
            Some(Answer {
                status: 200,
                content_type: "text/html",
                body: "<html>hello</html>".into(),
            }),
        ),
        ("a JSON list", Some(Answer::json(json!([{"sub": "alice"}])))),
        (
            "mistyped groups",
            Some(Answer::json(json!({"sub": "alice", "groups": 5}))),
        ),
        (
            "signed by a key the provider does not publish",
            Some(Answer {
                status: 200,
                content_type: "application/jwt",
                body: signed_by_other,
            }),
        ),
    ];
    for (name, answer) in cases {
        let b = rp.browser();
        rp.op.set(|s| s.userinfo = answer);
        let r = rp.login(&b, rp.op.id_claims("alice", None)).await;
        assert_eq!(r.status(), 502, "{name}");
        assert!(r.text().await.unwrap().contains("userinfo_failed"), "{name}");
        assert_eq!(rp.page(&b).await.0, 302, "{name}: no session");
    }
}

#[tokio::test]
async fn a_signed_userinfo_answer_is_verified_and_read() {
    let rp = start_rp(|_| {}).await;
    let b = rp.browser();
    let jwt = rp
        .op
        .key
        .sign(
            "JWT",
            &json!({"iss": rp.op.issuer, "aud": common::CLIENT, "sub": "alice", "groups": ["portal-users"]}),
        )
        .unwrap();
    rp.op.set(|s| {
        s.userinfo = Some(Answer {
            status: 200,
            content_type: "application/jwt",
            body: jwt,
        })
    });
    let r = rp.login(&b, rp.op.id_claims("alice", None)).await;
    assert_eq!(r.status(), 302);
    assert_eq!(rp.page(&b).await.0, 200);
    // Signed for another client: refused.
    let b = rp.browser();
    let jwt = rp
        .op
        .key
        .sign(
            "JWT",
            &json!({"iss": rp.op.issuer, "aud": "someone-else", "sub": "alice", "groups": ["portal-users"]}),
        )
        .unwrap();
    rp.op.set(|s| {
        s.userinfo = Some(Answer {
            status: 200,
            content_type: "application/jwt",
            body: jwt,
        })
    });
    assert_eq!(rp.login(&b, rp.op.id_claims("alice", None)).await.status(), 502);
}

#[tokio::test]
async fn claim_paths_read_keycloak_roles_and_a_group_given_as_one_string() {
    let rp = start_rp(|t| {
        provider(t)
            .table("claims")
            .set("groups", "realm_access.roles")
            .set("username", "upn")
            .set("company", "");
    })
    .await;
    let b = rp.browser();
    let mut c = rp.op.id_claims("alice", None);
    c["realm_access"] = json!({"roles": ["portal-users"]});
    c["groups"] = json!(["ignored"]);
    c["upn"] = json!("alice@corp");
    c["email"] = json!("alice@example.com");
    c["name"] = json!("Alice");
    let r = rp.login(&b, c).await;
    assert_eq!(r.status(), 302);
    assert_eq!(rp.op.count("userinfo"), 0, "every mapped claim was there");
    let (status, h) = rp.page(&b).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-kaseyaone-groups"), Some("portal-users"));
    assert_eq!(header(&h, "x-kaseyaone-user"), Some("alice@corp"));

    let rp = start_rp(|_| {}).await;
    let b = rp.browser();
    let r = rp.login(&b, all_claims(&rp.op, "bob", json!("portal-users"))).await;
    assert_eq!(r.status(), 302);
    assert_eq!(header(&rp.page(&b).await.1, "x-kaseyaone-groups"), Some("portal-users"));
}

#[tokio::test]
async fn access_groups_star_lets_in_every_signed_in_user_and_only_them() {
    let rp = start_rp(|t| {
        t.module("portal").set("access_groups", vec!["*"]);
    })
    .await;
    let b = rp.browser();
    assert_eq!(rp.page(&b).await.0, 302, "not signed in: login");
    let r = rp.login(&b, all_claims(&rp.op, "carol", json!([]))).await;
    assert_eq!(r.status(), 302);
    assert_eq!(rp.page(&b).await.0, 200);
    // Without it, the same user is refused.
    let rp = start_rp(|_| {}).await;
    let b = rp.browser();
    let r = rp.login(&b, all_claims(&rp.op, "carol", json!([]))).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn callback_rules_refuse_before_any_token_request() {
    let rp = start_rp(|_| {}).await;
    let b = rp.browser();
    let (_, state, nonce) = rp.start(&b).await;
    let iss = rp.iss();
    let cases = [
        (
            "no iss from a provider that promises it",
            format!("code=c&state={state}"),
        ),
        (
            "iss of another provider",
            format!("code=c&state={state}&iss=https%3A%2F%2Fevil.example"),
        ),
        ("two codes", format!("code=c&code=d&state={state}&iss={iss}")),
        ("two states", format!("code=c&state={state}&state=x&iss={iss}")),
        ("two iss", format!("code=c&state={state}&iss={iss}&iss={iss}")),
        ("an id_token", format!("code=c&state={state}&iss={iss}&id_token=a.b.c")),
        (
            "an access_token",
            format!("code=c&state={state}&iss={iss}&access_token=t"),
        ),
        (
            "a token_type",
            format!("code=c&state={state}&iss={iss}&token_type=Bearer"),
        ),
    ];
    for (name, query) in &cases {
        let r = rp.callback(&b, query).await;
        assert_eq!(r.status(), 400, "{name}");
        assert_eq!(rp.op.count("token"), 0, "{name}: no token request");
    }
    // The login itself is still good: the sound answer logs in.
    let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
    c["nonce"] = json!(nonce);
    let tokens = rp.op.tokens(&rp.op.sign(&c), "at-1");
    rp.op.set(|s| s.on_code = Some(Answer::json(tokens)));
    let r = rp.callback(&b, &format!("code=c&state={state}&iss={iss}")).await;
    assert_eq!(r.status(), 302);
    assert_eq!(rp.op.count("token"), 1);
}

#[tokio::test]
async fn a_provider_that_does_not_promise_iss_may_leave_it_out() {
    let op = FakeOp::start().await;
    op.set(|s| s.iss_supported = false);
    let rp = start_rp_with(op, |_| {}).await;
    let b = rp.browser();
    let (_, state, nonce) = rp.start(&b).await;
    let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
    c["nonce"] = json!(nonce);
    let tokens = rp.op.tokens(&rp.op.sign(&c), "at-1");
    rp.op.set(|s| s.on_code = Some(Answer::json(tokens)));
    assert_eq!(rp.callback(&b, &format!("code=c&state={state}")).await.status(), 302);
}

#[tokio::test]
async fn an_issuer_ending_in_a_slash_is_named_exactly_as_discovery_spells_it() {
    // Auth0's issuer is `https://tenant.auth0.com/`; an operator writes it
    // with or without the slash.
    let rp = start_rp_with(FakeOp::start_with(true).await, |_| {}).await;
    assert!(rp.op.issuer.ends_with('/'));
    let b = rp.browser();
    let r = rp.login(&b, all_claims(&rp.op, "alice", json!(["portal-users"]))).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    // Without the slash, the token names another issuer.
    let b = rp.browser();
    let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
    c["iss"] = json!(rp.op.base);
    assert_eq!(rp.login(&b, c).await.status(), 502);
}

#[tokio::test]
async fn the_token_response_must_be_of_type_bearer() {
    let rp = start_rp(|_| {}).await;
    for (token_type, want) in [
        (None, 502),
        (Some("DPoP"), 502),
        (Some("mac"), 502),
        (Some("bearer"), 302),
        (Some("Bearer"), 302),
    ] {
        let b = rp.browser();
        let (_, state, nonce) = rp.start(&b).await;
        let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
        c["nonce"] = json!(nonce);
        let mut tokens = rp.op.tokens(&rp.op.sign(&c), "at-1");
        match token_type {
            Some(t) => tokens["token_type"] = json!(t),
            None => {
                tokens.as_object_mut().unwrap().remove("token_type");
            }
        }
        rp.op.set(|s| s.on_code = Some(Answer::json(tokens)));
        let r = rp.callback(&b, &format!("code=c&state={state}&iss={}", rp.iss())).await;
        assert_eq!(r.status(), want, "{token_type:?}");
    }
}

#[tokio::test]
async fn id_token_rules_at_the_callback() {
    use unigate::oidc::id_token::left_half_hash;
    let rp = start_rp(|_| {}).await;
    let alg = jsonwebtoken::Algorithm::ES256;
    let good = |nonce: &str| {
        let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
        c["nonce"] = json!(nonce);
        c["at_hash"] = json!(left_half_hash(alg, "at-1"));
        c["c_hash"] = json!(left_half_hash(alg, "c-1"));
        c
    };
    type Edit<'a> = Box<dyn Fn(&mut Value) -> Option<String> + 'a>;
    let kid = rp.op.key.kid.clone();
    let key = &rp.op.key;
    let cases: Vec<(&str, Edit)> = vec![
        ("good", Box::new(|_| None)),
        (
            "at_hash of another access token",
            Box::new(move |c| {
                c["at_hash"] = json!(left_half_hash(alg, "other"));
                None
            }),
        ),
        (
            "c_hash of another code",
            Box::new(move |c| {
                c["c_hash"] = json!(left_half_hash(alg, "other"));
                None
            }),
        ),
        (
            "issued 11 minutes ago",
            Box::new(|c| {
                c["iat"] = json!(now() - 660 - 61);
                None
            }),
        ),
        ("a logout token", Box::new(|c| Some(key.sign("logout+jwt", c).unwrap()))),
        ("an access token", Box::new(|c| Some(key.sign("at+jwt", c).unwrap()))),
        (
            "a critical header extension",
            Box::new(move |c| {
                Some(
                    key.sign_with_header(&json!({"alg": "ES256", "kid": kid, "crit": ["exp"], "exp": 1}), c)
                        .unwrap(),
                )
            }),
        ),
    ];
    for (name, edit) in cases {
        let b = rp.browser();
        let (_, state, nonce) = rp.start(&b).await;
        let mut c = good(&nonce);
        let token = edit(&mut c).unwrap_or_else(|| rp.op.sign(&c));
        let tokens = rp.op.tokens(&token, "at-1");
        rp.op.set(|s| s.on_code = Some(Answer::json(tokens)));
        let r = rp
            .callback(&b, &format!("code=c-1&state={state}&iss={}", rp.iss()))
            .await;
        let want = if name == "good" { 302 } else { 502 };
        assert_eq!(r.status(), want, "{name}");
    }
}

#[tokio::test]
async fn a_key_rotation_right_after_start_is_followed_at_once() {
    let rp = start_rp(|_| {}).await;
    assert_eq!(rp.op.count("jwks"), 1, "loaded at start");
    // The provider rotates to a new key the moment unigate has started.
    let next = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
    rp.op.set(|s| s.jwks = json!({"keys": [next.jwk]}));
    let c = all_claims(&rp.op, "alice", json!(["portal-users"]));
    let r = rp.login_signed(&rp.browser(), c.clone(), &next).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    assert_eq!(rp.op.count("jwks"), 2, "one re-fetch");
    // An ID token comes from the provider itself: a kid it does not
    // publish is looked up again (at most once a second), and still
    // refused. (The wait is the point: past the one-second cooldown.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stranger = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
    let r = rp.login_signed(&rp.browser(), c.clone(), &stranger).await;
    assert_eq!(r.status(), 502);
    assert_eq!(rp.op.count("jwks"), 3);
    // Bearer tokens anyone can send: one fetch, then the cooldown.
    let bearer = |jti: &str| {
        let t = now();
        stranger
            .sign(
                "at+jwt",
                &json!({"iss": rp.op.issuer, "sub": "x", "aud": common::API_AUDIENCE, "client_id": "c",
                        "exp": t + 60, "iat": t, "jti": jti}),
            )
            .unwrap()
    };
    for (jti, fetches) in [("j1", 4), ("j2", 4), ("j3", 4)] {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/", rp.port))
            .header("host", format!("{HOST}:{}", rp.port))
            .header("accept", "application/json")
            .bearer_auth(bearer(jti))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{jti}");
        assert_eq!(rp.op.count("jwks"), fetches, "{jti}");
    }
    // And those made-up kids hold back no login after a real rotation
    // (once the one-second cooldown has passed: the wait is the point).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newest = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
    rp.op.set(|s| s.jwks = json!({"keys": [newest.jwk]}));
    let r = rp.login_signed(&rp.browser(), c, &newest).await;
    assert_eq!(r.status(), 302);
    assert_eq!(rp.op.count("jwks"), 5);
}

#[tokio::test]
async fn many_logins_with_a_new_key_at_once_share_one_jwks_fetch() {
    let rp = start_rp(|_| {}).await;
    let next = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
    // The new key, served slowly: the callbacks overlap while it loads.
    rp.op.set(|s| {
        s.jwks = json!({"keys": [next.jwk]});
        s.jwks_delay = Duration::from_millis(300);
    });
    let mut logins = Vec::new();
    for i in 0..8 {
        let b = rp.browser();
        let (_, state, nonce) = rp.start(&b).await;
        // Each login its own code, with an ID token carrying its nonce.
        let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
        c["nonce"] = json!(nonce);
        let code = format!("code-{i}");
        let tokens = rp.op.tokens(&next.sign("JWT", &c).unwrap(), "at-1");
        rp.op.set(|s| {
            s.by_code.insert(code.clone(), Answer::json(tokens));
        });
        logins.push((b, format!("code={code}&state={state}&iss={}", rp.iss())));
    }
    let started = std::time::Instant::now();
    let answers = futures_util::future::join_all(logins.iter().map(|(b, q)| rp.callback(b, q))).await;
    for r in &answers {
        assert_eq!(r.status(), 302);
    }
    assert_eq!(rp.op.count("jwks"), 2, "one fetch at start, one for all eight");
    assert!(
        started.elapsed() < Duration::from_millis(8 * 300),
        "the fetch was shared, not queued"
    );
}

#[tokio::test]
async fn jwks_entries_that_cannot_be_used_do_not_stop_the_others() {
    let op = FakeOp::start().await;
    let jwk = serde_json::to_value(&op.key.jwk).unwrap();
    op.set(|s| {
        s.jwks = json!({"keys": [
            {"kty": "AKP", "alg": "ML-DSA-44", "kid": "pq", "pub": "AAAA"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-999", "kid": "odd", "x": "AA", "y": "AA"},
            jwk,
        ]})
    });
    let rp = start_rp_with(op, |_| {}).await;
    let b = rp.browser();
    let r = rp.login(&b, all_claims(&rp.op, "alice", json!(["portal-users"]))).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn a_module_max_age_is_asked_for_and_auth_time_checked() {
    let rp = start_rp(|t| {
        t.module("portal").set("max_age", "5m");
    })
    .await;
    let b = rp.browser();
    let (authorize, _, _) = rp.start(&b).await;
    assert_eq!(query_param(&authorize, "max_age").as_deref(), Some("300"));
    for (name, auth_time, want) in [
        ("no auth_time", None, 502),
        ("a login 10 minutes old", Some(now() - 600), 502),
        ("a login a minute old", Some(now() - 60), 302),
    ] {
        let b = rp.browser();
        let mut c = all_claims(&rp.op, "alice", json!(["portal-users"]));
        match auth_time {
            Some(t) => c["auth_time"] = json!(t),
            None => {
                c.as_object_mut().unwrap().remove("auth_time");
            }
        }
        assert_eq!(rp.login(&b, c).await.status(), want, "{name}");
    }
}

/// A second replica beside `a`, sharing its Redis (`session` sets its
/// `[session]`); and one browser for both (cookies ignore ports).
async fn replica_b(a: &Rp, session: impl FnOnce(&mut Table)) -> (u16, GatewayServer, reqwest::Client) {
    let port = free_port().unwrap();
    let (up, _) = recording_upstream("the module's page").await;
    let gw = start_gateway(port, &a.op.base, |t| {
        session(t);
        t.set("module", vec![portal_at(up)]);
    })
    .await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .unwrap();
    (port, gw, browser)
}

async fn status_at(b: &reqwest::Client, port: u16) -> u16 {
    b.get(format!("http://{HOST}:{port}/"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits until the module's page answers `want` (a refresh runs in the
/// background of the request that started it).
async fn until_page(rp: &Rp, b: &reqwest::Client, want: u16) -> bool {
    for _ in 0..60 {
        if rp.page(b).await.0 == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Every request refreshes: the access token lives 300 s, and unigate
/// refreshes 10 minutes ahead.
fn refresh_always(t: &mut Table) {
    t.table("session").set("refresh_before", "10m");
}

#[tokio::test]
async fn a_refresh_updates_the_groups_and_access_follows() {
    let rp = start_rp(refresh_always).await;
    let b = rp.browser();
    let r = rp.login(&b, all_claims(&rp.op, "alice", json!(["portal-users"]))).await;
    assert_eq!(r.status(), 302);
    // The provider now says alice left portal-users.
    let refreshed = rp.op.sign(&all_claims(&rp.op, "alice", json!(["staff"])));
    rp.op
        .set(|s| s.on_refresh = Some(Answer::json(rp.op.tokens(&refreshed, "at-2"))));
    assert!(until_page(&rp, &b, 403).await, "access ends at the refresh");
    assert!(rp.op.count("token:refresh_token") >= 1);
}

#[tokio::test]
async fn groups_from_userinfo_are_read_again_at_refresh() {
    let rp = start_rp(refresh_always).await;
    let b = rp.browser();
    rp.op
        .set(|s| s.userinfo = Some(Answer::json(json!({"sub": "alice", "groups": ["portal-users"]}))));
    let r = rp.login(&b, rp.op.id_claims("alice", None)).await;
    assert_eq!(r.status(), 302);
    // The refresh carries no ID token; UserInfo says the group is gone.
    rp.op.set(|s| {
        s.on_refresh = Some(Answer::json(json!({
            "access_token": "at-2", "token_type": "Bearer", "expires_in": 300, "refresh_token": "rt-2",
        })));
        s.userinfo = Some(Answer::json(json!({"sub": "alice", "groups": ["staff"]})));
    });
    assert!(until_page(&rp, &b, 403).await);
    assert!(
        rp.op.calls().contains(&"userinfo:at-2".to_string()),
        "{:?}",
        rp.op.calls()
    );
}

#[tokio::test]
async fn a_refresh_without_an_id_token_keeps_the_identity() {
    let rp = start_rp(|t| {
        provider(t).set("userinfo", "never");
        refresh_always(t);
    })
    .await;
    let b = rp.browser();
    let r = rp.login(&b, all_claims(&rp.op, "alice", json!(["portal-users"]))).await;
    assert_eq!(r.status(), 302);
    rp.op.set(|s| {
        s.on_refresh = Some(Answer::json(json!({
            "access_token": "at-2", "token_type": "Bearer", "expires_in": 300,
        })))
    });
    for _ in 0..5 {
        let (status, h) = rp.page(&b).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "x-kaseyaone-groups"), Some("portal-users"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rp.op.count("token:refresh_token") >= 1);
}

type MakeAnswer = Box<dyn Fn(&FakeOp) -> Answer>;

/// alice logged in (refreshing at every request, the module a websocket
/// echo), the provider's next refresh answering `answer` after 400 ms, and
/// a websocket open under the session (which starts that refresh).
async fn websocket_at_refresh(answer: MakeAnswer) -> (Rp, reqwest::Client, common::Ws) {
    let rp = start_rp_full(
        FakeOp::start().await,
        Some(common::websocket_upstream().await),
        refresh_always,
    )
    .await;
    let (b, jar) = rp.browser_with_jar();
    let r = rp.login(&b, all_claims(&rp.op, "alice", json!(["portal-users"]))).await;
    assert_eq!(r.status(), 302);
    rp.op.set(|s| {
        s.on_refresh = Some(answer(&rp.op));
        s.refresh_delay = Duration::from_millis(400);
    });
    let ws = common::websocket_through(rp.port, &rp.session_id(&jar)).await;
    (rp, b, ws)
}

#[tokio::test]
async fn a_refresh_that_fails_its_checks_ends_the_session_everywhere() {
    let cases: Vec<(&str, MakeAnswer)> = vec![
        (
            "another user",
            Box::new(|op| {
                Answer::json(op.tokens(&op.sign(&all_claims(op, "mallory", json!(["portal-users"]))), "at-2"))
            }),
        ),
        (
            "another audience",
            Box::new(|op| {
                let mut c = all_claims(op, "alice", json!(["portal-users"]));
                c["aud"] = json!("someone-else");
                Answer::json(op.tokens(&op.sign(&c), "at-2"))
            }),
        ),
        (
            "expired",
            Box::new(|op| {
                let mut c = all_claims(op, "alice", json!(["portal-users"]));
                c["exp"] = json!(now() - 3600);
                c["iat"] = json!(now() - 3700);
                Answer::json(op.tokens(&op.sign(&c), "at-2"))
            }),
        ),
        (
            "a token response of another type",
            Box::new(|op| {
                let mut t = op.tokens(&op.sign(&all_claims(op, "alice", json!(["portal-users"]))), "at-2");
                t["token_type"] = json!("DPoP");
                Answer::json(t)
            }),
        ),
        (
            "the refresh token refused (a user disabled at the provider)",
            Box::new(|_| Answer {
                status: 400,
                content_type: "application/json",
                body: r#"{"error":"invalid_grant"}"#.into(),
            }),
        ),
    ];
    for (name, answer) in cases {
        let (_rp, _b, mut ws) = websocket_at_refresh(answer).await;
        // The websocket started the refresh; the session's end closes it
        // (what holds a session stops with it).
        assert!(
            common::websocket_ends_within(&mut ws, Duration::from_secs(3)).await,
            "{name}: the session ended"
        );
    }
}

#[tokio::test]
async fn a_provider_failing_at_refresh_asks_for_a_login_but_ends_nothing() {
    let (rp, b, mut ws) = websocket_at_refresh(Box::new(|_| Answer {
        status: 503,
        content_type: "text/plain",
        body: "down".into(),
    }))
    .await;
    assert!(
        !common::websocket_ends_within(&mut ws, Duration::from_secs(1)).await,
        "a provider outage says nothing about the user"
    );
    assert!(rp.op.count("token:refresh_token") >= 1);
    // The next navigation logs in again.
    let r = b.get(rp.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 302);
}

#[tokio::test]
async fn a_group_removed_at_a_refresh_on_one_replica_ends_access_on_the_other() {
    let op = FakeOp::start().await;
    let (_redis, session) = common::redis_store().await;
    let a = start_rp_full(op, None, |t| {
        t.set("session", session.clone());
        refresh_always(t);
    })
    .await;
    // Replica B refreshes only near expiry: what it learns, it learns from A.
    let (b_port, _b, browser) = replica_b(&a, |t| {
        t.set("session", session.clone());
    })
    .await;
    let on_b = || status_at(&browser, b_port);
    let r = a
        .login(&browser, all_claims(&a.op, "alice", json!(["portal-users"])))
        .await;
    assert_eq!(r.status(), 302);
    assert_eq!(on_b().await, 200, "B serves the session from Redis, and keeps a copy");
    // The provider removes alice from portal-users; A refreshes.
    let refreshed = a.op.sign(&all_claims(&a.op, "alice", json!(["staff"])));
    a.op.set(|s| s.on_refresh = Some(Answer::json(a.op.tokens(&refreshed, "at-2"))));
    assert!(until_page(&a, &browser, 403).await, "A: access ends at the refresh");
    wait_until(
        "B: within a second, not after its local copy expires",
        Duration::from_secs(1),
        async || on_b().await == 403,
    )
    .await;
}

#[tokio::test]
async fn replicas_never_spend_a_rotated_refresh_token_twice() {
    let op = FakeOp::start().await;
    op.set(|s| s.rotate_refresh = true);
    let (_redis, session) = common::redis_store().await;
    let a = start_rp_full(op, None, |t| {
        t.set("session", session.clone());
        refresh_always(t);
    })
    .await;
    let (b_port, _b, browser) = replica_b(&a, |t| {
        t.set("session", session.clone());
        refresh_always(t);
    })
    .await;
    let r = a
        .login(&browser, all_claims(&a.op, "alice", json!(["portal-users"])))
        .await;
    assert_eq!(r.status(), 302);
    let same = a.op.sign(&all_claims(&a.op, "alice", json!(["portal-users"])));
    a.op.set(|s| s.on_refresh = Some(Answer::json(a.op.tokens(&same, "at-2"))));
    // Requests alternate between the replicas, and each would refresh:
    // each must use the refresh token the other stored last.
    for i in 0..12 {
        let port = if i % 2 == 0 { a.port } else { b_port };
        let r = browser.get(format!("http://{HOST}:{port}/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        // Paced, so that each request's background refresh has run.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = a.op.script.lock().unwrap().refreshes_refused;
    assert_eq!(refused, 0, "a spent refresh token was used");
    assert!(a.op.count("token:refresh_token") >= 2, "{:?}", a.op.calls());
}

#[tokio::test]
async fn a_userinfo_outage_at_refresh_lengthens_no_replicas_trust() {
    let op = FakeOp::start().await;
    let (_redis, session) = common::redis_store().await;
    let a = start_rp_full(op, None, |t| {
        t.set("session", session.clone());
        refresh_always(t);
    })
    .await;
    // B refreshes five minutes ahead: at once for the login's 300 s token,
    // not for a refreshed one of an hour.
    let (b_port, _b, browser) = replica_b(&a, |t| {
        t.set("session", session.clone());
        t.table("session").set("refresh_before", "5m");
    })
    .await;
    a.op.set(|s| s.userinfo = Some(Answer::json(json!({"sub": "alice", "groups": ["portal-users"]}))));
    let r = a.login(&browser, a.op.id_claims("alice", None)).await;
    assert_eq!(r.status(), 302);
    // The provider removes the group, and its UserInfo is down when A
    // refreshes (an hour-long access token offered).
    let mut refreshed = a.op.tokens(&a.op.sign(&a.op.id_claims("alice", None)), "at-2");
    refreshed["expires_in"] = json!(3600);
    a.op.set(|s| {
        s.on_refresh = Some(Answer::json(refreshed));
        s.userinfo = Some(Answer {
            status: 503,
            content_type: "text/plain",
            body: "down".into(),
        });
    });
    let _ = browser.get(format!("http://{HOST}:{}/", a.port)).send().await.unwrap();
    for _ in 0..50 {
        if a.op.count("userinfo:at-2") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A stores what it learnt after asking UserInfo; nothing outside
    // shows when that is done.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // B must not take the unchecked hour: it checks the user itself, and
    // with UserInfo down, asks for a login.
    let mut served = 0;
    for _ in 0..20 {
        let r = browser.get(format!("http://{HOST}:{b_port}/")).send().await.unwrap();
        if r.status() != 200 {
            break;
        }
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served < 20, "B kept serving the unchecked session");
}
