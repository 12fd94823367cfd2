//! unigate as an OpenID Connect relying party reading who the user is:
//! claims only in UserInfo, wrong UserInfo answers failing closed, signed
//! UserInfo, nested group claims; and at refresh: groups read again, the
//! identity kept, the session ended when the answer fails its checks, also
//! across two replicas sharing Redis. Over real sockets, against the
//! scriptable provider.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fake_op::{Answer, FakeOp, now};
use common::rp::{Rp, all_claims, header, portal_at, provider, start_rp, start_rp_full};
use common::{HOST, TomlEdit, recording_upstream, start_gateway, wait_until};
use serde_json::json;
use toml::Table;
use unigate::gateway::server::{GatewayServer, free_port};
use unigate::idp::keys::SigningKey;

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

/// A refreshed ID token never moves the login's time: one without
/// `auth_time` keeps the login's, so a page that asks for a recent login
/// does not ask again, and one that names a later time (a provider that
/// breaks the rule) does not make an old login recent.
#[tokio::test]
async fn a_refresh_keeps_the_logins_time() {
    let rp = start_rp(|t| {
        refresh_always(t);
        let rules: Table = toml::from_str("[[rule]]\npaths = [\"/billing/\"]\nmax_login_age = \"5m\"").unwrap();
        let modules = t["module"].as_array_mut().unwrap();
        modules[0]
            .as_table_mut()
            .unwrap()
            .insert("rule".into(), rules["rule"].clone());
    })
    .await;
    let billing = async |b: &reqwest::Client| b.get(rp.url("/billing/")).send().await.unwrap().status().as_u16();
    // `sub` logs in (a login `age` seconds old) and is refreshed with an
    // ID token whose auth_time is `refreshed` (None: left out); the
    // browser, once its session holds the refresh's tokens.
    let login_then_refresh = async |sub: &str, age: u64, refreshed: Option<u64>| {
        let mut c = all_claims(&rp.op, sub, json!(["portal-users"]));
        match refreshed {
            Some(t) => c["auth_time"] = json!(t),
            None => drop(c.as_object_mut().unwrap().remove("auth_time")),
        }
        let answer = Answer::json(rp.op.tokens(&rp.op.sign(&c), "at-2"));
        rp.op.set(|s| s.on_refresh = Some(answer));
        let (b, jar) = rp.browser_with_jar();
        let mut claims = all_claims(&rp.op, sub, json!(["portal-users"]));
        claims["auth_time"] = json!(now() - age);
        let before = rp.op.count("token:refresh_token");
        assert_eq!(rp.login(&b, claims).await.status(), 302);
        let memory = rp._gw.gateway.state.sessions.memory().unwrap();
        wait_until("a refresh stored", Duration::from_secs(5), async || {
            rp.page(&b).await.0 == 200
                && rp.op.count("token:refresh_token") > before
                && memory
                    .get(&rp.session_id(&jar))
                    .is_some_and(|s| s.tokens.lock().unwrap().generation > 0)
        })
        .await;
        b
    };
    // A login a minute ago; its refreshes carry no auth_time.
    let b = login_then_refresh("alice", 60, None).await;
    assert_eq!(billing(&b).await, 200, "still a recent login");
    // A login ten minutes ago, refreshed with an ID token that says now.
    let b = login_then_refresh("bob", 600, Some(now())).await;
    assert_eq!(billing(&b).await, 302, "the login is still ten minutes old");
}
