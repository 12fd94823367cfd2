//! The checked settings the cores run on (the identity provider client,
//! the session store, module accounts), built by the gateway's config
//! loader and used by `oidc`, `session` and `accounts`, which import
//! nothing from the gateway.

use std::sync::Arc;
use std::time::Duration;

use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq)]
pub struct IdpSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub timeout: Duration,
    /// The `aud` bearer access tokens must carry; `None`: JWT bearer
    /// tokens are refused.
    pub api_audience: Option<String>,
    /// `[identity_provider.claims]`.
    pub claims: crate::oidc::claims::ClaimMap,
    pub userinfo: crate::oidc::claims::UserinfoMode,
    pub max_id_token_age: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    /// The shared store; `None`: sessions in this process.
    pub redis: Option<RedisSettings>,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub max_sessions: u64,
    pub refresh_before: Duration,
    pub login_starts_per_minute: u32,
    pub module_cookie_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// The server, or (with sentinels) the data nodes' database and password.
    pub url: Option<Secret>,
    pub sentinels: Vec<String>,
    pub sentinel_master: Option<String>,
    /// Redis Cluster: some of its nodes' URLs (they may hold a password),
    /// from which the others are found. Empty: one server or Sentinel.
    pub cluster: Vec<Secret>,
    pub encryption_key: Secret,
    pub prefix: String,
    /// How long a local copy of a shared session is trusted.
    pub local_cache: Duration,
    /// Replicas that must hold a logout before it counts (None: 0).
    pub wait_replicas: Option<u32>,
    /// The certificate authorities (PEM) Redis's TLS certificates chain
    /// to; None: the system's.
    pub tls_ca: Option<Vec<u8>>,
}

/// Which fields of a module account must match the KaseyaOne user:
/// `match = "email"`, `"username"` or `"both"` (the default) in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum MatchOn {
    Email,
    Username,
    Both,
}

#[derive(Debug, Clone)]
pub enum AccountSource {
    /// SCIM base URL; `None`: `/scim/v2` on the instance's upstream.
    Scim {
        url: Option<String>,
        token: Option<Secret>,
    },
    File(Arc<Vec<crate::accounts::Account>>),
}

#[derive(Debug, Clone)]
pub struct AccountsConfig {
    pub source: AccountSource,
    pub match_on: MatchOn,
    pub cache_ttl: Duration,
    pub provisioning: bool,
    pub default_role: Option<String>,
}
