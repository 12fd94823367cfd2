//! Shared test fixtures, by what they start:
//! - `idp`: the embedded identity provider (demo directory, test client),
//!   a browser-like client, PKCE, logging in through the real forms, tokens;
//! - `config`: unigate's configuration as a `toml::Table`, and starting it;
//! - `stack`: whole stacks (IdP, demo modules, unigate) built by editing
//!   configuration values (`StackBuilder`, `MultiBuilder`, `logout_stack`);
//! - `replicas`: two unigate replicas sharing a `redis-server`;
//! - `upstreams`: test modules (websocket, streams, recording) and a
//!   back-channel logout receiver;
//! - `redis`: a `redis-server` of a test's own;
//! - `fake_op`: a scriptable OpenID provider, and `rp`: unigate as its
//!   relying party;
//! - `tls`: a test CA and certificates, and the TLS tests' configuration;
//! - `pages`: what every end-user page of unigate's own has;
//! - `wait_until`, here: polling for something that happens in the background.
#![allow(dead_code, unused_imports)]

mod config;
pub mod fake_op;
mod idp;
mod pages;
mod redis;
pub mod replicas;
pub mod rp;
mod stack;
mod tls;
mod upstreams;

pub use config::*;
pub use idp::*;
pub use pages::*;
pub use redis::*;
pub use stack::*;
pub use tls::*;
pub use upstreams::*;

use std::time::{Duration, Instant};

/// Polls `condition` every 20 ms until it holds; returns how long that
/// took, or panics naming `what` once `timeout` has passed.
/// `wait_until("the session ends on A", Duration::from_secs(1), async || …).await`
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if condition().await {
            return start.elapsed();
        }
        let waited = start.elapsed();
        if waited >= timeout {
            panic!("{what}: not within {timeout:?} (waited {waited:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where a failed login sends the browser (303 to `/_unigate/error`, its
/// stable error page): that page, fetched by the same browser. `None`
/// when `r` is not such a redirect.
pub async fn failed_login_page(b: &reqwest::Client, r: &reqwest::Response) -> Option<reqwest::Response> {
    let to = r.headers().get("location")?.to_str().ok()?;
    if r.status() != 303 || to != "/_unigate/error" {
        return None;
    }
    Some(b.get(r.url().join(to).ok()?).send().await.unwrap())
}
