//! `Authorization: Bearer` through unigate, over real loopback sockets with
//! the embedded IdP: only an access token for this deployment's API gets
//! through (never the ID token a logout redirect shows, a logout token, or
//! a token for another audience), opaque tokens are checked by
//! introspection, and a bearer gets every check a session gets — access
//! groups, `link_required`, account matching, and revocation (admin
//! revoke, back-channel logout, on every replica). The logout redirect
//! that carries the ID token leaks it to no one.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use serde_json::{Value, json};
use unigate::gateway::server::{GatewayServer, free_port};
use unigate::idp::IdpServer;

/// Logs `user` in at the IdP with the test client; the token response.
async fn tokens(idp: &IdpServer, user: &str) -> Value {
    let p = pkce();
    let back = login(idp, &browser(), user, &p, &[]).await;
    let r = exchange(idp, &query_param(&back, "code").unwrap(), &p.verifier).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// A client for every test host on loopback `port`, no redirects followed.
fn api_client(port: u16) -> reqwest::Client {
    let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    for h in ALL_HOSTS {
        b = b.resolve(h, std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    b.build().unwrap()
}

async fn get(port: u16, host: &str, token: &str) -> reqwest::Response {
    api_client(port)
        .get(format!("http://{host}:{port}/api/whoami"))
        .header("accept", "application/json")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Asserts a 401 `invalid_token` answer (JSON, with the challenge).
async fn assert_invalid_token(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 401, "{what}");
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(challenge.contains("error=\"invalid_token\""), "{what}: {challenge}");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_token", "{what}");
}

/// The test client as the IdP knows it.
fn idp_client(idp: &IdpServer) -> unigate::idp::config::Client {
    idp.provider
        .cfg
        .clients
        .iter()
        .find(|c| c.client_id == CLIENT)
        .unwrap()
        .clone()
}

/// A real back-channel logout token from the IdP for `user`'s session `sid`.
fn logout_token(idp: &IdpServer, user: &str, sid: &str) -> String {
    let id = idp.provider.dir.find(&company(idp, user), user).unwrap();
    idp.provider
        .logout_token(&idp_client(idp), id, sid, SystemTime::now())
        .unwrap()
}

#[tokio::test]
async fn an_access_token_for_this_api_is_forwarded_with_its_identity() {
    let s = stack().await;
    let t = tokens(&s.idp, "alice").await;
    let access = t["access_token"].as_str().unwrap();
    let c = claims(access);
    assert_eq!(c["aud"], API_AUDIENCE);
    let r = get(s.port, HOST, access).await;
    assert_eq!(r.status(), 200);
    let w: Value = r.json().await.unwrap();
    assert_eq!(w["headers"]["x-kaseyaone-user"], "alice");
    assert_eq!(w["headers"]["x-kaseyaone-email"], "alice@acme-msp.example");
    assert_eq!(w["assertion_verified"], true);
    // Again, from the cache.
    assert_eq!(get(s.port, HOST, access).await.status(), 200);
    // A user outside the module's access groups: 403 JSON.
    let t = tokens(&s.idp, "carol").await;
    let r = get(s.port, HOST, t["access_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "forbidden");
}

#[tokio::test]
async fn an_id_token_is_not_a_bearer_token() {
    let s = stack().await;
    let t = tokens(&s.idp, "alice").await;
    let r = get(s.port, HOST, t["id_token"].as_str().unwrap()).await;
    assert_invalid_token(r, "an ID token from the token endpoint").await;
    // The ID token anyone can read in the logout redirect, still unexpired.
    let (b, _) = s.browser();
    s.login(&b, "alice", "/").await;
    let r = b.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let hint = query_param(&location(&r), "id_token_hint").expect("an id_token_hint");
    assert!(claims(&hint)["exp"].as_u64().unwrap() > unigate::gateway::unix_now());
    assert_invalid_token(get(s.port, HOST, &hint).await, "the logout redirect's id_token_hint").await;
}

#[tokio::test]
async fn a_logout_token_is_not_a_bearer_token() {
    let s = stack().await;
    let t = tokens(&s.idp, "alice").await;
    let sid = claims(t["access_token"].as_str().unwrap())["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let lt = logout_token(&s.idp, "alice", &sid);
    assert_invalid_token(get(s.port, HOST, &lt).await, "a logout token").await;
}

#[tokio::test]
async fn an_access_token_for_another_audience_is_refused() {
    for aud in [CLIENT, "https://another-api.test"] {
        // The IdP issues this client's access tokens for another audience
        // (`CLIENT`: for the client itself, as an ID token's audience).
        let s = StackBuilder::new()
            .idp(|idp| {
                for c in idp.clients.iter_mut().filter(|c| c.client_id == CLIENT) {
                    c.api_audience = Some(aud.to_string());
                }
            })
            .start()
            .await;
        let t = tokens(&s.idp, "alice").await;
        let access = t["access_token"].as_str().unwrap();
        assert_eq!(claims(access)["aud"], aud);
        assert_invalid_token(get(s.port, HOST, access).await, aud).await;
    }
}

#[tokio::test]
async fn the_logout_redirect_with_the_id_token_leaks_it_to_no_one() {
    let s = stack().await;
    let (b, _) = s.browser();
    s.login(&b, "alice", "/").await;
    let r = b.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let to = location(&r);
    assert!(to.starts_with(&format!("{}/logout?", s.idp.issuer())), "{to}");
    assert!(to.contains("id_token_hint="));
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    assert_eq!(r.headers()["cache-control"], "no-store");
}

/// The demo's modules behind one unigate (memory store) with an admin
/// listener.
fn modules_stack<'a>() -> MultiBuilder<'a> {
    MultiBuilder::demo().gateway(|t| {
        t.table("admin")
            .set("address", "127.0.0.1:0")
            .set("token", "file:secret");
    })
}

async fn admin_revoke(gw: &GatewayServer, what: Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/revoke", gw.admin_addr.unwrap()))
        .bearer_auth(SECRET)
        .json(&what)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_admin_revoke_refuses_the_users_bearer_tokens() {
    let s = modules_stack().start().await;
    let t = tokens(&s.idp, "alice").await;
    let access = t["access_token"].as_str().unwrap();
    let portal = "portal.localhost";
    assert_eq!(get(s.port, portal, access).await.status(), 200, "cached now");
    let bob = tokens(&s.idp, "bob").await;
    let bob = bob["access_token"].as_str().unwrap();
    assert_eq!(get(s.port, portal, bob).await.status(), 200);
    admin_revoke(&s.gw, json!({"sub": claims(access)["sub"]})).await;
    assert_invalid_token(get(s.port, portal, access).await, "after the admin revoke").await;
    assert_eq!(
        get(s.port, portal, bob).await.status(),
        200,
        "another user is untouched"
    );
    // By email too (any case).
    admin_revoke(&s.gw, json!({"email": "BOB@acme-msp.example"})).await;
    assert_invalid_token(get(s.port, portal, bob).await, "after the revoke by email").await;
}

#[tokio::test]
async fn a_backchannel_logout_refuses_the_sessions_bearer_tokens() {
    let s = modules_stack().start().await;
    let portal = "portal.localhost";
    let first = tokens(&s.idp, "alice").await;
    let first = first["access_token"].as_str().unwrap();
    let other = tokens(&s.idp, "alice").await;
    let other = other["access_token"].as_str().unwrap();
    let sid = claims(first)["sid"].as_str().unwrap().to_string();
    assert_ne!(claims(other)["sid"].as_str().unwrap(), sid, "two IdP sessions");
    assert_eq!(get(s.port, portal, first).await.status(), 200);
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/_unigate/backchannel-logout", s.port))
        .form(&[("logout_token", logout_token(&s.idp, "alice", &sid))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_invalid_token(get(s.port, portal, first).await, "after the back-channel logout").await;
    assert_eq!(
        get(s.port, portal, other).await.status(),
        200,
        "the user's other IdP session goes on"
    );
}

#[tokio::test]
async fn a_bearer_gets_the_link_and_account_checks_of_a_session() {
    let s = modules_stack()
        .module("portal", |m| {
            m.set(
                "accounts",
                table_of(|a| {
                    a.set("source", "scim").set("match", "both");
                }),
            );
        })
        .instance("bms", "west", |w| {
            w.set("link_required", true);
        })
        .start()
        .await;
    let alice = tokens(&s.idp, "alice").await;
    let alice = alice["access_token"].as_str().unwrap();
    // West links accounts: without a link, no way in.
    let r = get(s.port, "bms-west.localhost", alice).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "link_required");
    // Linked: in, as the linked module account.
    let sub = claims(alice)["sub"].as_str().unwrap().to_string();
    s.gw.gateway
        .state
        .sessions
        .put_link(&sub, "bms/west", "a.admin")
        .await
        .unwrap();
    let r = get(s.port, "bms-west.localhost", alice).await;
    assert_eq!(r.status(), 200);
    let w: Value = r.json().await.unwrap();
    assert_eq!(w["headers"]["x-kaseyaone-module-user"], "a.admin");
    // The portal matches accounts: alice has one, bob none.
    let r = get(s.port, "portal.localhost", alice).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["headers"]["x-kaseyaone-module-user"],
        "alice"
    );
    let bob = tokens(&s.idp, "bob").await;
    let bob = bob["access_token"].as_str().unwrap();
    let r = get(s.port, "portal.localhost", bob).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "account_refused");
    // Access groups per instance: bob is not in bms-users.
    let r = get(s.port, "bms-east.localhost", bob).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "forbidden");
}

#[tokio::test]
async fn opaque_access_tokens_are_checked_by_introspection() {
    let s = StackBuilder::new()
        .idp(|idp| {
            idp.tokens.access_token_ttl = Duration::from_secs(3);
            for c in idp.clients.iter_mut().filter(|c| c.client_id == CLIENT) {
                c.opaque_access_tokens = true;
            }
        })
        .start()
        .await;
    let t = tokens(&s.idp, "alice").await;
    let access = t["access_token"].as_str().unwrap().to_string();
    assert!(!access.contains('.'), "opaque: {access}");
    let r = get(s.port, HOST, &access).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["headers"]["x-kaseyaone-user"], "alice");
    // Unknown to the IdP: inactive.
    assert_invalid_token(get(s.port, HOST, "not-a-token-the-idp-issued").await, "inactive").await;
    // The IdP vouched for it until its expiry; the cache does not outlive it.
    // (Waiting for the expiry is the point.)
    let exp = unigate::gateway::unix_now() + 3;
    while unigate::gateway::unix_now() <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_invalid_token(get(s.port, HOST, &access).await, "expired").await;
}

#[tokio::test]
async fn introspection_at_the_embedded_idp_needs_client_credentials() {
    let idp = start_idp(demo_config()).await;
    let t = tokens(&idp, "alice").await;
    let introspect = |form: Vec<(&'static str, String)>, auth: bool| {
        let mut rb = reqwest::Client::new()
            .post(format!("{}/introspect", idp.issuer()))
            .form(&form);
        if auth {
            rb = rb.basic_auth(CLIENT, Some(SECRET));
        }
        rb.send()
    };
    let access = t["access_token"].as_str().unwrap().to_string();
    let r = introspect(vec![("token", access.clone())], true).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["active"], true);
    assert_eq!(v["aud"], API_AUDIENCE);
    assert_eq!(v["client_id"], CLIENT);
    // Not an access token: inactive.
    for other in [t["id_token"].as_str().unwrap(), t["refresh_token"].as_str().unwrap()] {
        let v: Value = introspect(vec![("token", other.to_string())], true)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v, json!({"active": false}));
    }
    // Without client credentials: 401.
    let r = introspect(vec![("token", access)], false).await.unwrap();
    assert_eq!(r.status(), 401);
}

/// Two unigate replicas sharing a real Redis, in front of one module.
struct Replicas {
    idp: IdpServer,
    _redis: Redis,
    _module: unigate::demo_module::DemoModuleServer,
    a: GatewayServer,
    b: GatewayServer,
}

async fn two_replicas() -> Replicas {
    let (pa, pb) = (free_port().unwrap(), free_port().unwrap());
    let (redis, mut session) = redis_store().await;
    session.set("redis_prefix", "bearer");
    let idp = start_idp(demo_config()).await;
    let module = portal_module(pa).await;
    let config = |t: &mut toml::Table| {
        t.set("session", session.clone());
        t.table("admin")
            .set("address", "127.0.0.1:0")
            .set("token", "file:secret");
        let portal = table_of(|m| {
            m.set("name", "portal")
                .set("hosts", vec![HOST])
                .set("upstream", module.addr.to_string())
                .set("access_groups", vec!["portal-users"])
                .set("login", "automatic");
        });
        t.set("module", vec![portal]);
    };
    let a = start_gateway(pa, idp.issuer(), config).await;
    let b = start_gateway(pb, idp.issuer(), config).await;
    Replicas {
        idp,
        _redis: redis,
        _module: module,
        a,
        b,
    }
}

#[tokio::test]
async fn a_revoke_on_one_replica_refuses_the_bearer_on_the_other() {
    let Replicas { idp, a, b, .. } = &two_replicas().await;
    let (pa, pb) = (a.addr.port(), b.addr.port());
    wait_until("both replicas reach Redis", Duration::from_secs(5), async || {
        a.gateway.state.sessions.redis().unwrap().healthy() && b.gateway.state.sessions.redis().unwrap().healthy()
    })
    .await;
    let t = tokens(idp, "alice").await;
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(get(pa, HOST, access).await.status(), 200);
    assert_eq!(get(pb, HOST, access).await.status(), 200, "cached on B too");
    // Revoked on B (admin) …
    admin_revoke(b, json!({"sub": claims(access)["sub"]})).await;
    // … refused on A at once, its cache notwithstanding.
    assert_invalid_token(get(pa, HOST, access).await, "on the other replica").await;
    assert_invalid_token(get(pb, HOST, access).await, "on the replica that revoked").await;
    // A back-channel logout posted to A refuses bob's token on B.
    let bob = tokens(idp, "bob").await;
    let bob = bob["access_token"].as_str().unwrap();
    assert_eq!(get(pb, HOST, bob).await.status(), 200);
    let sid = claims(bob)["sid"].as_str().unwrap().to_string();
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{pa}/_unigate/backchannel-logout"))
        .form(&[("logout_token", logout_token(idp, "bob", &sid))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_invalid_token(get(pb, HOST, bob).await, "after a back-channel logout on A").await;
}
