//! A gateway for benchmarks and tests, without sockets: one route,
//! `portal` (`portal.localhost`, access group `portal-users`, upstream
//! `127.0.0.1:8081`), and an identity provider at a loopback port nothing
//! listens on (its discovery never loads). Not part of unigate's
//! interface.

use std::sync::Arc;
use std::time::Duration;

use super::Gateway;
use super::config::{GatewayConfig, RouteId};
use super::identity::{AssertionSigner, header_set};
use crate::crypto::keys::SigningKey;
use crate::oidc::client::OidcClient;
use crate::session::{Identity, Session, Tokens};

/// The configuration: the portal route, then `extra` (TOML: more
/// `[[module]]`s, `[session]`, `[identity]`). Secrets `file:s` (the
/// client secret) and `file:k` (32+ characters, for a Redis encryption
/// key) are in its directory.
pub fn config(extra: &str) -> GatewayConfig {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("unigate-testing-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(dir.join("s"), "secret").expect("written");
    std::fs::write(dir.join("k"), "a-test-key-of-more-than-32-characters!").expect("written");
    let text = format!(
        r#"
        [listen]
        address = "127.0.0.1:8080"
        public_url = "http://localhost:8080"
        [identity_provider]
        issuer = "http://127.0.0.1:9"
        client_id = "c"
        client_secret = "file:s"
        [[module]]
        name = "portal"
        hosts = ["portal.localhost"]
        upstream = "127.0.0.1:8081"
        access_groups = ["portal-users"]
        login = "automatic"
        {extra}
        "#
    );
    let cfg = GatewayConfig::from_toml(&text, &dir);
    // Everything the files held is read into the configuration.
    let _ = std::fs::remove_dir_all(&dir);
    cfg.expect("a valid test configuration")
}

/// A gateway for `config(extra)`, with a new assertion key.
pub fn gateway(extra: &str) -> Gateway {
    let cfg = config(extra);
    let oidc = Arc::new(OidcClient::new(cfg.idp.clone()).expect("an IdP client"));
    let key = SigningKey::generate(jsonwebtoken::Algorithm::ES256).expect("a key");
    let signer = AssertionSigner::new(key, "unigate", Duration::from_secs(60), 10_000);
    Gateway::new(cfg, oidc, signer).expect("a gateway")
}

/// A user of the Acme MSP company.
pub fn identity(sub: &str, groups: &[&str]) -> Identity {
    Identity {
        sub: sub.into(),
        sid: Some(format!("sid-{sub}").into()),
        email: format!("{sub}@acme-msp.example").into(),
        name: sub.into(),
        username: sub.into(),
        company: "Acme MSP".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        module_user: None,
    }
}

/// Logs `identity` in on the portal route under session `id` (memory
/// store), with tokens that do not need a refresh.
pub fn add_session(g: &Gateway, id: &str, identity: Identity) {
    let headers = header_set(&identity, g.route(RouteId(0)).headers, 4096, "session-handle");
    let tokens = Tokens {
        generation: 0,
        id_token: None,
        refresh_token: None,
        access_exp: u64::MAX / 2,
    };
    let s = Session::new("portal".into(), identity, headers, tokens);
    g.state
        .sessions
        .memory()
        .expect("the memory store")
        .insert(id.into(), Arc::new(s));
}
