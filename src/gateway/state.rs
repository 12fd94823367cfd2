//! What outlives a reload: the identity provider client, the assertion
//! signer, sessions and everything kept about them, login transactions,
//! rate counters, caches and metrics. Settings these depend on change only
//! with a restart (`server::restart_needed`).

use std::sync::Arc;
use std::time::Duration;

use super::bearer::BearerCache;
use super::config::GatewayConfig;
use super::identity::AssertionSigner;
use super::logins::{self, LoginTxns};
use super::{Lifecycle, cookies};
use crate::oidc::client::OidcClient;
use crate::pages;
use crate::rate::RateCounter;
use crate::session::Sessions;

pub struct State {
    pub oidc: Arc<OidcClient>,
    pub signer: Arc<AssertionSigner>,
    /// Sessions, account links, module cookie records and used logout
    /// tokens: in this process, or shared by every replica in Redis.
    pub sessions: Sessions,
    /// Login transactions: their sealing key and the used `state`s.
    pub logins: Arc<LoginTxns>,
    /// Checked bearer tokens and bearer revocation markers.
    pub bearer: BearerCache,
    pub login_starts: RateCounter<std::net::IpAddr>,
    /// Link attempts per KaseyaOne user: the link page checks passwords.
    pub link_attempts: RateCounter<String>,
    /// The IdP's origin: the only one that may frame front-channel logout.
    pub idp_origin: String,
    /// The KaseyaOne icon, for users logged in with module credentials.
    pub kaseyaone_snippet: Arc<str>,
    /// The "Log In with KaseyaOne" button for module login pages.
    pub login_button_snippet: Arc<str>,
    pub session_cookie: &'static str,
    /// Draining (SIGTERM) and requests in flight.
    pub lifecycle: Arc<Lifecycle>,
    /// Distinct App Launcher snippets, shared by the sessions that show them.
    pub launchers: moka::sync::Cache<u64, Arc<str>>,
    pub launchers_hasher: std::hash::RandomState,
    /// Prometheus metrics (those of the IdP client: one set per process).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl State {
    pub fn build(cfg: &GatewayConfig, oidc: Arc<OidcClient>, signer: Arc<AssertionSigner>) -> Result<State, String> {
        Ok(State {
            sessions: Sessions::open(&cfg.session)?,
            link_attempts: RateCounter::new(10, Duration::from_secs(300)),
            idp_origin: url::Url::parse(&cfg.idp.issuer)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default(),
            logins: logins::login_txns(cfg),
            bearer: BearerCache::default(),
            login_starts: RateCounter::with_capacity(
                cfg.session.login_starts_per_minute,
                Duration::from_secs(60),
                logins::LOGIN_COUNTER_CAP,
            ),
            session_cookie: cookies::Own::Session.name(cfg.tls),
            lifecycle: Arc::default(),
            launchers: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            launchers_hasher: std::hash::RandomState::new(),
            metrics: oidc.metrics.clone(),
            kaseyaone_snippet: pages::kaseyaone_icon_snippet().into(),
            login_button_snippet: pages::login_button_snippet().into(),
            oidc,
            signer,
        })
    }
}
