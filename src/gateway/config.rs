//! unigate's own configuration (`unigate run|check --config FILE`): the
//! file's serde types, and `GatewayConfig`, the checked form the proxy runs
//! on. Key names are an interface other tools rely on: keep them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

pub use crate::config::settings::{
    AccountSource, AccountsConfig, IdpSettings, MatchOn, RedisSettings, SessionSettings,
};
use crate::config::{ConfigErrors, parse_toml};
use crate::secret::{Secret, SecretRef};

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct GatewayFile {
    pub listen: ListenFile,
    pub identity_provider: IdentityProviderFile,
    #[serde(default)]
    pub session: SessionFile,
    #[serde(default)]
    pub identity: IdentityFile,
    #[serde(default, rename = "module")]
    pub modules: Vec<ModuleFile>,
    pub admin: Option<AdminFile>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct AdminFile {
    /// Where the admin API listens, e.g. `127.0.0.1:9090`. Keep it private.
    pub address: String,
    /// The bearer token admin calls must carry (a secret reference).
    pub token: SecretRef,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ListenFile {
    /// Where the proxy listens, e.g. `127.0.0.1:8080`.
    pub address: String,
    /// The scheme and port browsers use to reach unigate, e.g.
    /// `https://localhost:443` or `http://localhost:8080`. The host part is
    /// ignored: each module's configured host is used with this scheme and
    /// port to build its callback URL.
    pub public_url: String,
    /// Worker threads; default the number of CPUs.
    pub threads: Option<usize>,
    /// Tokio work stealing between worker threads; default false (faster
    /// for a proxy this short). Pingora keeps the handles of a no-steal
    /// runtime in a thread-local that outlives it, so a process that starts
    /// more than one unigate after another (tests) must turn it on.
    pub work_stealing: Option<bool>,
    /// On SIGTERM, how long `readyz` answers 503 (so load balancers and
    /// Kubernetes stop sending traffic) before the listener closes;
    /// default `2s`.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub drain_delay: Option<Duration>,
    /// How long requests in flight (and websockets) may take to finish
    /// once the listener has closed; default `5s`.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub shutdown_grace: Option<Duration>,
    /// Serve TLS: the PEM certificate chain and private key files
    /// (relative paths: to this file). Both reloaded when they change.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// With TLS: offer HTTP/2 to clients (ALPN); default true.
    pub http2: Option<bool>,
    /// The proxies in front of unigate (an ingress, a load balancer), as
    /// networks like `10.0.0.0/8` or `::1/128`: only from these peers are
    /// `X-Forwarded-*`, `Forwarded`, `X-Real-IP` and `X-Request-Id` passed
    /// on, and the client address read from `X-Forwarded-For`. Default none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct IdentityProviderFile {
    /// Issuer URL; discovery is fetched from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Where the IdP sends the browser after logout; default the module's root.
    pub post_logout_redirect_uri: Option<String>,
    /// Timeout of every call to the IdP; default `5s`.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub timeout: Option<Duration>,
    /// The audience (`aud`) an access token presented as `Authorization:
    /// Bearer` must be issued for: this deployment's API identifier at the
    /// IdP. Without it, JWT bearer tokens are refused.
    pub api_audience: Option<String>,
    /// When to ask the UserInfo endpoint: `auto` (default: when the ID
    /// token lacks a mapped claim), `always`, or `never`.
    pub userinfo: Option<String>,
    /// Oldest ID token accepted, by its `iat`; default `10m`.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub max_id_token_age: Option<Duration>,
    /// Which claims hold the user's attributes.
    pub claims: Option<ClaimsFile>,
}

/// `[identity_provider.claims]`: a claim name, or a dotted path into nested
/// claims (`realm_access.roles`); `""`: not used.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ClaimsFile {
    /// Default `preferred_username`.
    pub username: Option<String>,
    /// Default `email`.
    pub email: Option<String>,
    /// Default `name`.
    pub name: Option<String>,
    /// Default `company`.
    pub company: Option<String>,
    /// Default `groups`.
    pub groups: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct SessionFile {
    /// `memory` (default).
    pub store: Option<String>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub absolute_timeout: Option<Duration>,
    pub max_sessions: Option<u64>,
    /// Refresh tokens this long before the access token expires; default `60s`.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub refresh_before: Option<Duration>,
    /// Logins one client address (IPv6: one /64) may start per minute;
    /// default 600 (an office behind one NAT logging in at 9 am).
    pub login_starts_per_minute: Option<u32>,
    /// With `store = "redis"`: `redis://[:password@]host:port/db` (or
    /// `rediss://` for TLS), as a secret reference (it may hold a password).
    pub redis_url: Option<SecretRef>,
    /// With `store = "redis"`: the secret (≥ 32 characters) session records
    /// are encrypted with (AES-256-GCM, key by HKDF-SHA256). Every replica
    /// needs the same one.
    pub encryption_key: Option<SecretRef>,
    /// Prefix of every Redis key; default `unigate`.
    pub redis_prefix: Option<String>,
    /// Redis Sentinel instead of one server: the sentinels
    /// (`redis://host:26379`) and the name of the master they watch.
    /// `redis_url` then only gives the database and password, if any.
    #[serde(default)]
    pub redis_sentinels: Vec<String>,
    pub redis_sentinel_master: Option<String>,
    /// With `store = "redis"`: how long a replica trusts its copy of a
    /// session without asking Redis (revocations arrive sooner, by
    /// pub/sub); default `30s`.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub redis_local_cache: Option<Duration>,
    /// How long unigate remembers who a module session cookie without
    /// `Max-Age` or `Expires` was issued to; default `30d`. Cookies with a
    /// lifetime are remembered for as long as they live (at most 400 days).
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub module_cookie_ttl: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct IdentityFile {
    /// Header preset: `kaseyaone` (default) or `forwarded`.
    pub headers: Option<String>,
    /// PKCS#8 PEM P-256 key signing `X-Unigate-Assertion`; generated at start when absent.
    pub assertion_key: Option<SecretRef>,
    /// Assertion lifetime; default and maximum `60s`.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub assertion_ttl: Option<Duration>,
    /// How many sessions' signed assertions are kept for reuse (the most
    /// recently used); default 10000. A session beyond them signs anew.
    pub assertion_cache: Option<u64>,
    /// Longest header value forwarded (at most 8192); longer values are
    /// cut. Default 4096.
    pub max_header_value: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ModuleFile {
    pub name: String,
    /// The name people see (App Launcher tiles, pages); default `name`.
    pub display_name: Option<String>,
    pub hosts: Vec<String>,
    /// `host:port` of the module, e.g. `127.0.0.1:8081`.
    pub upstream: Option<String>,
    /// Several `host:port`s, load-balanced round robin with health checks.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// How often each upstream is health-checked (TCP connect); default `5s`.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub health_check_interval: Option<Duration>,
    /// Connect to the upstreams over TLS; default false.
    pub upstream_tls: Option<bool>,
    /// The name sent (SNI) and verified; default the route's first host.
    pub upstream_sni: Option<String>,
    /// PEM file of the CAs the upstream's certificate must chain to;
    /// default the system's trusted roots.
    pub upstream_ca: Option<String>,
    /// Verify the upstream's certificate and name; default true. `false`
    /// is for a lab only: anyone on the path can then read everything.
    pub upstream_verify: Option<bool>,
    /// The groups whose members may use the module; `["*"]`: every user
    /// who signs in.
    #[serde(default)]
    pub access_groups: Vec<String>,
    /// Ask the identity provider for a login at most this old (`max_age`),
    /// for modules that need a recent login; its `auth_time` is checked.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub max_age: Option<Duration>,
    /// The module's logout paths: unigate logs out there (the module's
    /// session and the KaseyaOne session). Matched on the canonical path,
    /// ignoring `;` parameters and a trailing `/`.
    #[serde(default)]
    pub logout_paths: Vec<String>,
    /// Match `logout_paths`, `login_paths` and `exception_path` ignoring
    /// case, for modules on servers that ignore it (IIS); default false.
    pub logout_paths_case_insensitive: Option<bool>,
    #[serde(default)]
    pub session_cookies: Vec<String>,
    /// Path prefixes passed to the module without a login, matched on the
    /// canonical path by whole segments (`/static` takes `/static/x`, not
    /// `/static-admin`).
    #[serde(default)]
    pub public_paths: Vec<String>,
    /// Origins whose XHRs get CORS headers on unigate's 401.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Header preset for this module; default `[identity] headers`.
    pub headers: Option<String>,
    /// Module credentials keep working: requests without a KaseyaOne
    /// session pass to the module (no identity headers), whose own login
    /// and session take over; its pages get the KaseyaOne icon. Default false.
    pub local_login: Option<bool>,
    /// The module's own login pages: they get the "Log In with KaseyaOne" button.
    #[serde(default)]
    pub login_paths: Vec<String>,
    /// Unified Login enabled for this module; default true. When false,
    /// unigate passes the module through untouched (its own login only)
    /// and the App Launcher shows it as a lock tile.
    pub unified_login: Option<bool>,
    /// Require Log In with KaseyaOne: module credentials are refused,
    /// except for `local_exceptions`, who sign in at `exception_path`.
    pub require_kaseyaone: Option<bool>,
    /// Module usernames that may still sign in with module credentials.
    #[serde(default)]
    pub local_exceptions: Vec<String>,
    /// Where the exceptions sign in: unigate shows the module's own login
    /// page (the first of `login_paths`) there. Default `/local-login`.
    pub exception_path: Option<String>,
    /// The form field of the module's login form holding the username; default `username`.
    pub username_field: Option<String>,
    /// The form field holding the password; default `password`.
    pub password_field: Option<String>,
    /// Where module accounts are looked up, and which fields must match.
    pub accounts: Option<AccountsFile>,
    /// Tenants of this module, each with its own upstream(s) and hosts.
    #[serde(default, rename = "instance")]
    pub instances: Vec<InstanceFile>,
    /// How linking tells that the module accepted the credentials; every
    /// condition given must hold. Default: a redirect away from the login
    /// pages whose target then answers 200 with the cookies the login set.
    pub link_success: Option<LinkSuccessFile>,
}

/// `[[module]] link_success = { redirect_not_to = "/login", new_cookie = "sid", probe = "/account" }`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct LinkSuccessFile {
    /// The module answers with a redirect whose target path is not this one.
    pub redirect_not_to: Option<String>,
    /// The module sets this cookie to a new, non-empty value.
    pub new_cookie: Option<String>,
    /// A GET of this path with the cookies the login set answers 200
    /// (a page only a logged-in user gets).
    pub probe: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct InstanceFile {
    pub name: String,
    pub display_name: Option<String>,
    pub hosts: Vec<String>,
    pub upstream: Option<String>,
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Default the module's.
    pub access_groups: Option<Vec<String>>,
    /// The first login to this instance links the KaseyaOne user to a
    /// module account: unigate asks once for the module credentials and
    /// checks them at the module's first `login_paths` entry.
    pub link_required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct AccountsFile {
    /// `scim` (SCIM 2.0 `/Users` at the module) or `file`.
    pub source: String,
    /// Base of the module's SCIM API; default `/scim/v2` on the instance's upstream.
    pub scim_url: Option<String>,
    /// Bearer token for the SCIM API.
    pub token: Option<SecretRef>,
    /// A TOML file of `[[account]] username, email, active, role`.
    pub file: Option<String>,
    /// Which fields must match the KaseyaOne user: `email`, `username` or `both` (default).
    #[serde(rename = "match")]
    pub match_on: Option<String>,
    /// How long a lookup is cached; default `60s`.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub cache_ttl: Option<Duration>,
    /// Automatic User Provisioning: create a missing account by SCIM.
    pub provisioning: Option<bool>,
    /// The role a provisioned account gets.
    pub default_role: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderPreset {
    KaseyaOne,
    Forwarded,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub threads: usize,
    pub work_stealing: bool,
    /// The TLS listener's files, when unigate serves TLS itself.
    pub tls_files: Option<super::tls::CertFiles>,
    pub http2: bool,
    pub drain_delay: Duration,
    pub shutdown_grace: Duration,
    pub tls: bool,
    pub public_port: Option<u16>,
    /// `[listen] trusted_proxies`.
    pub trusted_proxies: super::forwarded::TrustedProxies,
    pub idp: IdpSettings,
    pub session: SessionSettings,
    pub identity: IdentitySettings,
    pub modules: Vec<ModuleConfig>,
    pub admin: Option<AdminSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub address: SocketAddr,
    pub token: Secret,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdentitySettings {
    pub assertion_key: Option<Secret>,
    pub assertion_ttl: Duration,
    pub assertion_cache: u64,
    pub max_header_value: usize,
}

/// One routable part of a module: the module itself, one of its
/// instances, or (for a module with instances) its Choose an Instance host.
#[derive(Debug, Clone)]
pub struct ModuleConfig {
    /// TLS to the upstreams, when on.
    pub upstream_tls: Option<super::tls::UpstreamTls>,
    pub name: String,
    /// `name`, or `name/instance`: how sessions, logs and assertions know it.
    /// Shared with every session of the route.
    pub label: std::sync::Arc<str>,
    pub display_name: String,
    /// The instance this route serves, for modules with instances.
    pub instance: Option<InstanceRef>,
    /// Non-empty on a module's own hosts when it has instances: the routes
    /// of its instances, for Choose an Instance. Such a route has no upstream.
    pub chooser: Vec<usize>,
    pub hosts: Vec<String>,
    pub upstreams: Vec<SocketAddr>,
    pub health_check_interval: Duration,
    /// `["*"]`: every signed-in user.
    pub access_groups: Vec<String>,
    /// `max_age` for the logins of this route.
    pub max_age: Option<Duration>,
    pub logout_paths: Vec<String>,
    /// `logout_paths`, `login_paths` and `exception_path` ignore case.
    pub paths_case_insensitive: bool,
    pub session_cookies: Vec<String>,
    pub public_paths: Vec<String>,
    pub cors_origins: Vec<String>,
    pub headers: HeaderPreset,
    pub local_login: bool,
    pub login_paths: Vec<String>,
    pub unified_login: bool,
    pub require_kaseyaone: bool,
    pub local_exceptions: Vec<String>,
    pub exception_path: String,
    pub username_field: String,
    pub password_field: String,
    pub accounts: Option<Arc<AccountsConfig>>,
    pub link_required: bool,
    /// Explicit link success conditions; all unset: the default rule.
    pub link_success: LinkSuccessFile,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRef {
    pub name: String,
    pub display_name: String,
}

impl ModuleConfig {
    /// The module's name with its instance, as sessions and logs know it.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether canonical `path` is under one of the public path prefixes.
    pub fn is_public(&self, path: &str) -> bool {
        self.public_paths.iter().any(|p| crate::policy::path::under(p, path))
    }

    /// Whether a request for canonical `path` may reach one of the
    /// module's logout paths (`policy::path::reaches`).
    pub fn is_logout(&self, path: &str) -> bool {
        self.logout_paths
            .iter()
            .any(|p| crate::policy::path::reaches(p, path, self.paths_case_insensitive))
    }

    /// Whether a request for canonical `path` may reach the module's login
    /// form handler: where module credentials are posted.
    pub fn is_login(&self, path: &str) -> bool {
        self.login_paths
            .iter()
            .any(|p| crate::policy::path::reaches(p, path, self.paths_case_insensitive))
    }

    /// Whether canonical `path` is exactly one of the module's login pages
    /// (the ones that get the "Log In with KaseyaOne" button).
    pub fn is_login_page(&self, path: &str) -> bool {
        self.login_paths
            .iter()
            .any(|p| crate::policy::path::names(p, path, self.paths_case_insensitive))
    }

    /// Whether canonical `path` is where local exceptions sign in.
    pub fn is_exception(&self, path: &str) -> bool {
        crate::policy::path::names(&self.exception_path, path, self.paths_case_insensitive)
    }
}

impl GatewayConfig {
    /// The origin browsers use for `host` (a configured module host).
    pub fn origin_for(&self, host: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        match self.public_port {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        }
    }

    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut errs = ConfigErrors::default();
            errs.push("", format!("cannot read `{}`: {e}", path.display()));
            errs
        })?;
        Self::from_toml(&text, path.parent().unwrap_or(Path::new(".")))
    }

    pub fn from_toml(text: &str, base: &Path) -> Result<GatewayConfig, ConfigErrors> {
        let file: GatewayFile = parse_toml(text)?;
        Self::from_file(file, base)
    }

    pub fn from_file(file: GatewayFile, base: &Path) -> Result<GatewayConfig, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let listen = file.listen.address.parse::<SocketAddr>().unwrap_or_else(|e| {
            errs.push("listen.address", format!("not an address like 127.0.0.1:8080 ({e})"));
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let (tls, public_port) = match Url::parse(&file.listen.public_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => (u.scheme() == "https", u.port()),
            Ok(_) => {
                errs.push("listen.public_url", "must be an http or https URL");
                (false, None)
            }
            Err(e) => {
                errs.push("listen.public_url", format!("not a URL ({e})"));
                (false, None)
            }
        };

        let p = &file.identity_provider;
        match Url::parse(&p.issuer) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => errs.push("identity_provider.issuer", "must be an http or https URL"),
        }
        if p.client_id.is_empty() {
            errs.push("identity_provider.client_id", "must not be empty");
        }
        let client_secret = p
            .client_secret
            .load(base)
            .map_err(|e| errs.push("identity_provider.client_secret", e))
            .unwrap_or_else(|_| Secret::new(""));
        let scopes = p
            .scopes
            .clone()
            .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
        if !scopes.iter().any(|s| s == "openid") {
            errs.push("identity_provider.scopes", "must include `openid`");
        }
        if let Some(u) = &p.post_logout_redirect_uri
            && Url::parse(u).is_err()
        {
            errs.push("identity_provider.post_logout_redirect_uri", "not a URL");
        }
        if p.api_audience
            .as_deref()
            .is_some_and(|a| a.is_empty() || *a == *p.client_id)
        {
            // The client_id is the audience of ID tokens: never an API's.
            errs.push(
                "identity_provider.api_audience",
                "must be the API's own audience, not empty and not the client_id",
            );
        }

        let userinfo = match p.userinfo.as_deref() {
            None => crate::oidc::claims::UserinfoMode::Auto,
            Some(v) => crate::oidc::claims::UserinfoMode::parse(v).unwrap_or_else(|| {
                errs.push(
                    "identity_provider.userinfo",
                    format!("`{v}` is not a choice; use `auto`, `always` or `never`"),
                );
                Default::default()
            }),
        };
        let max_id_token_age = p.max_id_token_age.unwrap_or(Duration::from_secs(600));
        if max_id_token_age < Duration::from_secs(10) || max_id_token_age > Duration::from_secs(86_400) {
            errs.push("identity_provider.max_id_token_age", "must be between 10s and 24h");
        }
        let claims = claim_map(p.claims.as_ref(), &mut errs);

        let redis = match file.session.store.as_deref() {
            None | Some("memory") => None,
            Some("redis") => {
                let sentinels = file.session.redis_sentinels.clone();
                let url = match &file.session.redis_url {
                    Some(u) => u.load(base).map_err(|e| errs.push("session.redis_url", e)).ok(),
                    None if sentinels.is_empty() => {
                        errs.push(
                            "session.redis_url",
                            "`store = \"redis\"` needs `redis_url` (or `redis_sentinels`)",
                        );
                        None
                    }
                    None => None,
                };
                for s in &sentinels {
                    if let Err(e) = ::redis::Client::open(s.as_str()) {
                        errs.push("session.redis_sentinels", format!("`{s}` is not a Redis URL ({e})"));
                    }
                }
                if !sentinels.is_empty() && file.session.redis_sentinel_master.is_none() {
                    errs.push("session.redis_sentinel_master", "name the master the sentinels watch");
                }
                if let Some(u) = &url
                    && let Err(e) = ::redis::Client::open(u.expose())
                {
                    errs.push("session.redis_url", format!("not a Redis URL ({e})"));
                }
                let key = match &file.session.encryption_key {
                    Some(k) => k.load(base).map_err(|e| errs.push("session.encryption_key", e)).ok(),
                    None => {
                        errs.push(
                            "session.encryption_key",
                            "`store = \"redis\"` needs `encryption_key`: tokens are never stored in Redis unencrypted",
                        );
                        None
                    }
                };
                if let Some(k) = &key
                    && k.expose().len() < 32
                {
                    errs.push("session.encryption_key", "use at least 32 random characters");
                }
                let prefix = file.session.redis_prefix.clone().unwrap_or_else(|| "unigate".into());
                key.map(|encryption_key| RedisSettings {
                    url,
                    sentinels,
                    sentinel_master: file.session.redis_sentinel_master.clone(),
                    encryption_key,
                    prefix,
                    local_cache: file.session.redis_local_cache.unwrap_or(Duration::from_secs(30)),
                })
            }
            Some(other) => {
                errs.push(
                    "session.store",
                    format!("`{other}` is not a session store; use `memory` or `redis`"),
                );
                None
            }
        };
        let session = SessionSettings {
            redis,
            idle_timeout: file.session.idle_timeout.unwrap_or(Duration::from_secs(30 * 60)),
            absolute_timeout: file.session.absolute_timeout.unwrap_or(Duration::from_secs(12 * 3600)),
            max_sessions: file.session.max_sessions.unwrap_or(1_000_000),
            refresh_before: file.session.refresh_before.unwrap_or(Duration::from_secs(60)),
            login_starts_per_minute: file.session.login_starts_per_minute.unwrap_or(600).max(1),
            module_cookie_ttl: file
                .session
                .module_cookie_ttl
                .unwrap_or(Duration::from_secs(30 * 86_400)),
        };
        let year = Duration::from_secs(366 * 86_400);
        for (key, d) in [
            ("session.idle_timeout", session.idle_timeout),
            ("session.absolute_timeout", session.absolute_timeout),
            ("session.module_cookie_ttl", session.module_cookie_ttl),
        ] {
            if d < Duration::from_secs(1) || d > year {
                errs.push(key, "must be between 1s and 366 days");
            }
        }

        let preset = |v: Option<&str>, key: String, errs: &mut ConfigErrors, default: HeaderPreset| match v {
            None => default,
            Some("kaseyaone") => HeaderPreset::KaseyaOne,
            Some("forwarded") => HeaderPreset::Forwarded,
            Some(other) => {
                errs.push(
                    key,
                    format!("`{other}` is not a preset; use `kaseyaone` or `forwarded`"),
                );
                default
            }
        };
        let default_preset = preset(
            file.identity.headers.as_deref(),
            "identity.headers".into(),
            &mut errs,
            HeaderPreset::KaseyaOne,
        );
        let assertion_key = file
            .identity
            .assertion_key
            .as_ref()
            .and_then(|r| r.load(base).map_err(|e| errs.push("identity.assertion_key", e)).ok())
            .filter(|pem| {
                // The key must be usable, as a start would find.
                let usable = crate::crypto::keys::SigningKey::from_pem(pem, jsonwebtoken::Algorithm::ES256);
                if let Err(e) = &usable {
                    errs.push(
                        "identity.assertion_key",
                        format!("not a PKCS#8 PEM P-256 private key ({e})"),
                    );
                }
                usable.is_ok()
            });
        let assertion_ttl = file.identity.assertion_ttl.unwrap_or(Duration::from_secs(60));
        if assertion_ttl > Duration::from_secs(60) || assertion_ttl < Duration::from_secs(1) {
            errs.push("identity.assertion_ttl", "must be between 1s and 60s");
        }

        let max_header_value = file.identity.max_header_value.unwrap_or(4096);
        if !(1..=8192).contains(&max_header_value) {
            errs.push("identity.max_header_value", "must be between 1 and 8192 (bytes)");
        }

        if file.modules.is_empty() {
            errs.push("module", "at least one [[module]] is needed");
        }
        let mut modules = Vec::new();
        let mut hosts_seen = HashSet::new();
        let mut names_seen = HashSet::new();
        for (i, m) in file.modules.into_iter().enumerate() {
            let key = |k: &str| format!("module[{i}].{k}");
            if m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                errs.push(key("name"), "use letters, digits, `-` and `_` only");
            }
            if !names_seen.insert(m.name.clone()) {
                errs.push(key("name"), format!("`{}` names another module too", m.name));
            }
            let hosts = check_hosts(&m.hosts, &key("hosts"), &mut hosts_seen, &mut errs);
            for (k, paths) in [
                ("logout_paths", &m.logout_paths),
                ("public_paths", &m.public_paths),
                ("login_paths", &m.login_paths),
            ] {
                for p in paths {
                    if !p.starts_with('/') || p.starts_with("/_unigate/") {
                        errs.push(key(k), format!("`{p}` must start with `/` and not be under /_unigate/"));
                    } else if let Err(e) = crate::policy::path::check_configured(p) {
                        errs.push(key(k), e);
                    }
                }
            }
            check_access_groups(Some(&m.access_groups), &key("access_groups"), &mut errs);
            if let Some(a) = m.max_age
                && (a < Duration::from_secs(60) || a > Duration::from_secs(30 * 86_400))
            {
                errs.push(key("max_age"), "must be between 1m and 30 days");
            }
            let unified_login = m.unified_login.unwrap_or(true);
            let require_kaseyaone = m.require_kaseyaone.unwrap_or(false);
            if require_kaseyaone && !unified_login {
                errs.push(
                    key("require_kaseyaone"),
                    "cannot require Log In with KaseyaOne where `unified_login = false`",
                );
            }
            if require_kaseyaone && m.local_login == Some(true) {
                errs.push(
                    key("local_login"),
                    "contradicts `require_kaseyaone = true`; list the users who keep module credentials in `local_exceptions`",
                );
            }
            let link_success = m.link_success.clone().unwrap_or_default();
            if m.link_success.as_ref() == Some(&LinkSuccessFile::default()) {
                errs.push(
                    key("link_success"),
                    "name at least one of `redirect_not_to`, `new_cookie`, `probe` (or leave it out for the default)",
                );
            }
            for (k, p) in [
                ("redirect_not_to", &link_success.redirect_not_to),
                ("probe", &link_success.probe),
            ] {
                if p.as_ref().is_some_and(|p| !p.starts_with('/') || p.starts_with("//")) {
                    errs.push(key(&format!("link_success.{k}")), "must be a path starting with `/`");
                }
            }
            if link_success.new_cookie.as_ref().is_some_and(|c| c.is_empty()) {
                errs.push(key("link_success.new_cookie"), "must name a cookie");
            }
            let exception_path = m.exception_path.clone().unwrap_or_else(|| "/local-login".into());
            if !exception_path.starts_with('/') || exception_path.starts_with("/_unigate/") {
                errs.push(key("exception_path"), "must start with `/` and not be under /_unigate/");
            } else if let Err(e) = crate::policy::path::check_configured(&exception_path) {
                errs.push(key("exception_path"), e);
            }
            // A public path is forwarded before any login-page rule runs.
            let taken_over = m.login_paths.iter().chain(require_kaseyaone.then_some(&exception_path));
            for l in taken_over {
                if let Some(p) = m.public_paths.iter().find(|p| crate::policy::path::under(p, l)) {
                    errs.push(
                        key("public_paths"),
                        format!("`{p}` covers the login page `{l}`: module logins there would skip every check"),
                    );
                }
            }
            for c in &m.session_cookies {
                if super::cookies::is_unigate_cookie(c) {
                    errs.push(
                        key("session_cookies"),
                        format!("`{c}` is one of unigate's own cookie names"),
                    );
                }
            }
            if require_kaseyaone && !m.local_exceptions.is_empty() && m.login_paths.is_empty() {
                errs.push(
                    key("login_paths"),
                    "`local_exceptions` sign in on the module's login page: name it in `login_paths`",
                );
            }
            let health_check_interval = m.health_check_interval.unwrap_or(Duration::from_secs(5));
            if health_check_interval < Duration::from_millis(100) || health_check_interval > Duration::from_secs(3600) {
                errs.push(key("health_check_interval"), "must be between 100ms and 1h");
            }
            let accounts = m
                .accounts
                .as_ref()
                .and_then(|a| accounts_config(a, &key("accounts"), base, &mut errs))
                .map(Arc::new);
            if accounts.is_some() && !unified_login {
                errs.push(
                    key("accounts"),
                    "only used with Unified Login; remove it or the `unified_login = false`",
                );
            }
            let headers = preset(m.headers.as_deref(), key("headers"), &mut errs, default_preset);
            let upstream_sni = m.upstream_sni.clone();
            let upstream_tls = match m.upstream_tls.unwrap_or(false) {
                false => {
                    for (k, set) in [
                        ("upstream_sni", m.upstream_sni.is_some()),
                        ("upstream_ca", m.upstream_ca.is_some()),
                        ("upstream_verify", m.upstream_verify.is_some()),
                    ] {
                        if set {
                            errs.push(key(k), "only used with `upstream_tls = true`");
                        }
                    }
                    None
                }
                true => {
                    let ca = m.upstream_ca.as_ref().and_then(|p| {
                        super::tls::UpstreamCa::load(&base.join(p))
                            .map_err(|e| errs.push(key("upstream_ca"), e))
                            .ok()
                    });
                    let sni = upstream_sni
                        .clone()
                        .or_else(|| hosts.first().cloned())
                        .unwrap_or_default();
                    if sni.is_empty() || sni.contains(['/', ':', ' ']) {
                        errs.push(key("upstream_sni"), "must be a host name (or IP address) without port");
                    }
                    let verify = m.upstream_verify.unwrap_or(true);
                    if !verify {
                        tracing::warn!(module.name = %m.name, "upstream_verify = false: the module's certificate is not checked");
                    }
                    Some(super::tls::UpstreamTls { sni, ca, verify })
                }
            };
            let base_route = ModuleConfig {
                upstream_tls,
                name: m.name.clone(),
                label: m.name.as_str().into(),
                display_name: m.display_name.clone().unwrap_or_else(|| m.name.clone()),
                instance: None,
                chooser: Vec::new(),
                hosts,
                upstreams: Vec::new(),
                health_check_interval,
                access_groups: m.access_groups.clone(),
                max_age: m.max_age,
                logout_paths: m.logout_paths,
                paths_case_insensitive: m.logout_paths_case_insensitive.unwrap_or(false),
                session_cookies: m.session_cookies,
                public_paths: m.public_paths,
                cors_origins: m.cors_origins,
                headers,
                local_login: !unified_login || m.local_login.unwrap_or(false),
                login_paths: m.login_paths,
                unified_login,
                require_kaseyaone,
                local_exceptions: m.local_exceptions,
                exception_path,
                username_field: m.username_field.unwrap_or_else(|| "username".into()),
                password_field: m.password_field.unwrap_or_else(|| "password".into()),
                accounts,
                link_required: false,
                link_success,
            };
            if m.instances.is_empty() {
                let upstreams = check_upstreams(m.upstream.as_deref(), &m.upstreams, &key(""), &mut errs);
                modules.push(ModuleConfig {
                    upstreams,
                    ..base_route
                });
                continue;
            }
            if m.upstream.is_some() || !m.upstreams.is_empty() {
                errs.push(
                    key("upstream"),
                    "a module with instances has its upstreams in each [[module.instance]]",
                );
            }
            let first = modules.len() + 1;
            let mut chooser = base_route.clone();
            chooser.chooser = (first..first + m.instances.len()).collect();
            modules.push(chooser);
            let mut inst_names = HashSet::new();
            for (j, inst) in m.instances.into_iter().enumerate() {
                let ikey = |k: &str| format!("module[{i}].instance[{j}].{k}");
                if !inst_names.insert(inst.name.clone()) {
                    errs.push(ikey("name"), format!("`{}` names another instance too", inst.name));
                }
                let hosts = check_hosts(&inst.hosts, &ikey("hosts"), &mut hosts_seen, &mut errs);
                let upstreams = check_upstreams(inst.upstream.as_deref(), &inst.upstreams, &ikey(""), &mut errs);
                check_access_groups(inst.access_groups.as_ref(), &ikey("access_groups"), &mut errs);
                let link_required = inst.link_required.unwrap_or(false);
                if link_required && base_route.login_paths.is_empty() {
                    errs.push(
                        ikey("link_required"),
                        "linking checks credentials at the module's login page: name it in the module's `login_paths`",
                    );
                }
                let upstream_tls = base_route.upstream_tls.clone().map(|mut t| {
                    if upstream_sni.is_none()
                        && let Some(h) = hosts.first()
                    {
                        t.sni = h.clone();
                    }
                    t
                });
                modules.push(ModuleConfig {
                    upstream_tls,
                    label: format!("{}/{}", base_route.name, inst.name).into(),
                    instance: Some(InstanceRef {
                        display_name: inst.display_name.unwrap_or_else(|| inst.name.clone()),
                        name: inst.name,
                    }),
                    hosts,
                    upstreams,
                    access_groups: inst.access_groups.unwrap_or_else(|| base_route.access_groups.clone()),
                    link_required,
                    ..base_route.clone()
                });
            }
        }

        if claims.groups.is_unused()
            && let Some(m) = modules
                .iter()
                .find(|m| !(m.access_groups.len() == 1 && m.access_groups[0] == crate::policy::EVERY_USER))
        {
            errs.push(
                "identity_provider.claims.groups",
                format!(
                    "is \"\" (no groups), but module `{}` admits only members of groups: nobody could use it; map the groups claim, or give it access_groups = [\"*\"]",
                    m.label()
                ),
            );
        }
        let threads = file
            .listen
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 || threads > 256 {
            errs.push("listen.threads", "must be between 1 and 256");
        }
        let admin = file.admin.as_ref().and_then(|a| {
            let address = a
                .address
                .parse::<SocketAddr>()
                .map_err(|e| errs.push("admin.address", format!("not an address like 127.0.0.1:9090 ({e})")))
                .ok();
            let token = a.token.load(base).map_err(|e| errs.push("admin.token", e)).ok();
            if let Some(t) = &token
                && t.expose().len() < 16
            {
                errs.push("admin.token", "use at least 16 characters");
            }
            Some(AdminSettings {
                address: address?,
                token: token?,
            })
        });
        let tls_files = match (&file.listen.tls_cert, &file.listen.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let files = super::tls::CertFiles {
                    cert: base.join(cert),
                    key: base.join(key),
                };
                match super::tls::load_certified_key(&files) {
                    Ok(_) => Some(files),
                    Err(e) => {
                        errs.push("listen.tls_cert", e);
                        None
                    }
                }
            }
            (Some(_), None) => {
                errs.push("listen.tls_key", "`tls_cert` needs its private key in `tls_key`");
                None
            }
            (None, Some(_)) => {
                errs.push("listen.tls_cert", "`tls_key` needs its certificate chain in `tls_cert`");
                None
            }
        };
        if tls_files.is_some() && !tls {
            errs.push(
                "listen.public_url",
                "unigate serves TLS (`tls_cert`): browsers reach it with https://",
            );
        }
        let trusted_proxies =
            super::forwarded::TrustedProxies::parse(&file.listen.trusted_proxies).unwrap_or_else(|bad| {
                for (i, why) in bad {
                    errs.push(format!("listen.trusted_proxies[{i}]"), why);
                }
                Default::default()
            });
        let drain_delay = file.listen.drain_delay.unwrap_or(Duration::from_secs(2));
        let shutdown_grace = file.listen.shutdown_grace.unwrap_or(Duration::from_secs(5));
        for (key, d) in [
            ("listen.drain_delay", drain_delay),
            ("listen.shutdown_grace", shutdown_grace),
        ] {
            if d > Duration::from_secs(600) {
                errs.push(key, "must be at most 10m");
            }
        }
        errs.into_result(GatewayConfig {
            admin,
            listen,
            threads,
            work_stealing: file.listen.work_stealing.unwrap_or(false),
            tls_files,
            http2: file.listen.http2.unwrap_or(true),
            drain_delay,
            shutdown_grace,
            tls,
            public_port,
            trusted_proxies,
            idp: IdpSettings {
                issuer: p.issuer.clone(),
                client_id: p.client_id.clone(),
                client_secret,
                scopes,
                post_logout_redirect_uri: p.post_logout_redirect_uri.clone(),
                timeout: p.timeout.unwrap_or(Duration::from_secs(5)),
                api_audience: p.api_audience.clone(),
                claims,
                userinfo,
                max_id_token_age,
            },
            session,
            identity: IdentitySettings {
                assertion_key,
                assertion_ttl,
                assertion_cache: file.identity.assertion_cache.unwrap_or(10_000),
                max_header_value,
            },
            modules,
        })
    }
}

/// `access_groups`: at least one group, or `["*"]` alone for every user
/// who signs in. `None`: an instance that inherits its module's.
fn check_access_groups(groups: Option<&Vec<String>>, key: &str, errs: &mut ConfigErrors) {
    let Some(groups) = groups else { return };
    if groups.is_empty() {
        errs.push(
            key,
            "name at least one group, or `[\"*\"]` to let every user who signs in use the module",
        );
    } else if groups.iter().any(|g| g == "*") && groups.len() > 1 {
        errs.push(key, "`*` already lets every user in: list it alone, or name groups");
    } else if groups.iter().any(|g| g.trim().is_empty()) {
        errs.push(key, "a group name is empty");
    }
}

/// `[identity_provider.claims]`, each path checked.
fn claim_map(file: Option<&ClaimsFile>, errs: &mut ConfigErrors) -> crate::oidc::claims::ClaimMap {
    use crate::oidc::claims::{ClaimMap, ClaimPath};
    let mut map = ClaimMap::default();
    let Some(file) = file else { return map };
    for (name, given, slot) in [
        ("username", &file.username, &mut map.username),
        ("email", &file.email, &mut map.email),
        ("name", &file.name, &mut map.name),
        ("company", &file.company, &mut map.company),
        ("groups", &file.groups, &mut map.groups),
    ] {
        if let Some(path) = given {
            match ClaimPath::new(path) {
                Ok(p) => *slot = p,
                Err(e) => errs.push(format!("identity_provider.claims.{name}"), e),
            }
        }
    }
    map
}

fn check_hosts(raw: &[String], key: &str, seen: &mut HashSet<String>, errs: &mut ConfigErrors) -> Vec<String> {
    if raw.is_empty() {
        errs.push(key, "needs at least one host name");
    }
    let hosts: Vec<String> = raw.iter().map(|h| h.to_ascii_lowercase()).collect();
    for h in &hosts {
        if h.contains(':') || h.contains('/') || h.is_empty() {
            errs.push(key, format!("`{h}` must be a bare host name, without port or path"));
        }
        if !seen.insert(h.clone()) {
            errs.push(key, format!("`{h}` belongs to another module too"));
        }
    }
    hosts
}

/// `upstream` and/or `upstreams`, parsed; `key` ends with `.`.
fn check_upstreams(one: Option<&str>, many: &[String], key: &str, errs: &mut ConfigErrors) -> Vec<SocketAddr> {
    let all: Vec<(&str, &str)> = one
        .map(|u| ("upstream", u))
        .into_iter()
        .chain(many.iter().map(|u| ("upstreams", u.as_str())))
        .collect();
    if all.is_empty() {
        errs.push(
            format!("{key}upstream"),
            "name the module's address, e.g. 127.0.0.1:8081",
        );
    }
    all.iter()
        .filter_map(|(k, u)| {
            u.parse::<SocketAddr>()
                .map_err(|e| {
                    errs.push(
                        format!("{key}{k}"),
                        format!("`{u}` is not an address like 127.0.0.1:8081 ({e})"),
                    )
                })
                .ok()
        })
        .collect()
}

fn accounts_config(a: &AccountsFile, key: &str, base: &Path, errs: &mut ConfigErrors) -> Option<AccountsConfig> {
    let k = |s: &str| format!("{key}.{s}");
    let match_on = match a.match_on.as_deref() {
        None | Some("both") => MatchOn::Both,
        Some("email") => MatchOn::Email,
        Some("username") => MatchOn::Username,
        Some(other) => {
            errs.push(k("match"), format!("`{other}` is not `email`, `username` or `both`"));
            MatchOn::Both
        }
    };
    let source = match a.source.as_str() {
        "scim" => {
            if let Some(u) = &a.scim_url
                && !matches!(
                    Url::parse(u).map(|u| u.scheme().to_string()).as_deref(),
                    Ok("http" | "https")
                )
            {
                errs.push(k("scim_url"), "must be an http or https URL");
            }
            let token = a
                .token
                .as_ref()
                .and_then(|t| t.load(base).map_err(|e| errs.push(k("token"), e)).ok());
            AccountSource::Scim {
                url: a.scim_url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
                token,
            }
        }
        "file" => {
            let Some(f) = &a.file else {
                errs.push(k("file"), "`source = \"file\"` needs `file`");
                return None;
            };
            match crate::accounts::load_file(&base.join(f)) {
                Ok(list) => AccountSource::File(Arc::new(list)),
                Err(e) => {
                    errs.push(k("file"), e);
                    return None;
                }
            }
        }
        other => {
            errs.push(k("source"), format!("`{other}` is not `scim` or `file`"));
            return None;
        }
    };
    let provisioning = a.provisioning.unwrap_or(false);
    if provisioning && !matches!(source, AccountSource::Scim { .. }) {
        errs.push(
            k("provisioning"),
            "Automatic User Provisioning creates accounts by SCIM: use `source = \"scim\"`",
        );
    }
    if provisioning && a.default_role.is_none() {
        errs.push(k("default_role"), "provisioned accounts need a default role");
    }
    let cache_ttl = a.cache_ttl.unwrap_or(Duration::from_secs(60));
    if cache_ttl > Duration::from_secs(86_400) {
        errs.push(k("cache_ttl"), "must be at most 1 day");
    }
    Some(AccountsConfig {
        source,
        match_on,
        cache_ttl,
        provisioning,
        default_role: a.default_role.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_at_once() {
        let text = r#"
            [listen]
            address = "nope"
            public_url = "ftp://x"
            [identity_provider]
            issuer = "not a url"
            client_id = ""
            client_secret = "env:UNIGATE_SURELY_UNSET_VAR"
            scopes = ["email"]
            [session]
            store = "etcd"
            [identity]
            max_header_value = 65536
            [[module]]
            name = "a"
            hosts = ["a.example:80"]
            upstream = "x"
            logout_paths = ["logout"]
            bogus = 1
        "#;
        let err = GatewayConfig::from_toml(text, Path::new(".")).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["module[0].bogus"],
            "unknown keys stop before checking: {err}"
        );
        let text = text.replace("bogus = 1", "");
        let err = GatewayConfig::from_toml(&text, Path::new(".")).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "listen.address",
            "listen.public_url",
            "identity_provider.issuer",
            "identity_provider.client_id",
            "identity_provider.client_secret",
            "identity_provider.scopes",
            "session.store",
            "identity.max_header_value",
            "module[0].hosts",
            "module[0].upstream",
            "module[0].logout_paths",
            "module[0].access_groups",
        ] {
            assert!(paths.contains(&want), "missing {want}: {err}");
        }
    }

    #[test]
    fn identity_provider_claims_and_access_group_rules() {
        let base = |idp: &str, groups: &str, module: &str| {
            format!(
                r#"
                [listen]
                address = "127.0.0.1:8080"
                public_url = "http://localhost:8080"
                [identity_provider]
                issuer = "https://idp.example"
                client_id = "unigate"
                client_secret = "env:PATH"
                {idp}
                [[module]]
                name = "portal"
                hosts = ["portal.localhost"]
                upstream = "127.0.0.1:8081"
                access_groups = {groups}
                {module}
                "#
            )
        };
        let cases = [
            ("", r#"["*", "admins"]"#, "", "module[0].access_groups", "list it alone"),
            ("", r#"[" "]"#, "", "module[0].access_groups", "empty"),
            ("", "[]", "", "module[0].access_groups", "[\"*\"]"),
            (
                "userinfo = \"sometimes\"",
                r#"["a"]"#,
                "",
                "identity_provider.userinfo",
                "auto",
            ),
            (
                "max_id_token_age = \"1s\"",
                r#"["a"]"#,
                "",
                "identity_provider.max_id_token_age",
                "10s",
            ),
            (
                "[identity_provider.claims]\ngroups = \"realm_access..roles\"",
                r#"["a"]"#,
                "",
                "identity_provider.claims.groups",
                "empty segment",
            ),
            (
                "[identity_provider.claims]\ngroups = \"\"",
                r#"["a"]"#,
                "",
                "identity_provider.claims.groups",
                "nobody could use it",
            ),
            ("", r#"["a"]"#, "max_age = \"5s\"", "module[0].max_age", "1m"),
        ];
        for (idp, groups, module, key, words) in cases {
            let err = GatewayConfig::from_toml(&base(idp, groups, module), Path::new(".")).unwrap_err();
            let e = err
                .0
                .iter()
                .find(|e| e.path == key)
                .unwrap_or_else(|| panic!("{key}: {err}"));
            assert!(e.message.contains(words), "{key}: {e:?}");
        }
        // No groups mapped is fine where every module is open to every user.
        let ok = base(
            "[identity_provider.claims]\ngroups = \"\"",
            r#"["*"]"#,
            "max_age = \"15m\"",
        );
        let cfg = GatewayConfig::from_toml(&ok, Path::new(".")).unwrap();
        assert!(cfg.idp.claims.groups.is_unused());
        assert_eq!(cfg.modules[0].max_age, Some(Duration::from_secs(900)));
    }

    /// Every `(section, key)` of the file format, from the types: a section
    /// is `[name]`, `[[name]]` for arrays of tables, `[a.b]` when nested.
    fn schema_keys() -> std::collections::BTreeSet<(String, String)> {
        use serde_json::Value;
        let schema = serde_json::to_value(schemars::schema_for!(GatewayFile)).unwrap();
        let defs = schema["$defs"].clone();
        // The object schema behind refs, options and arrays; and whether it
        // came through an array.
        fn object(v: &Value, defs: &Value, array: bool) -> Option<(Value, bool)> {
            if let Some(r) = v.get("$ref").and_then(Value::as_str) {
                return object(&defs[r.trim_start_matches("#/$defs/")], defs, array);
            }
            if v.get("properties").is_some() {
                return Some((v.clone(), array));
            }
            if let Some(items) = v.get("items") {
                return object(items, defs, true);
            }
            for k in ["anyOf", "oneOf", "allOf"] {
                if let Some(alts) = v.get(k).and_then(Value::as_array) {
                    for a in alts {
                        if let Some(o) = object(a, defs, array) {
                            return Some(o);
                        }
                    }
                }
            }
            None
        }
        fn walk(section: &str, v: &Value, defs: &Value, out: &mut std::collections::BTreeSet<(String, String)>) {
            for (k, p) in v["properties"].as_object().unwrap() {
                match object(p, defs, false) {
                    Some((inner, array)) => {
                        let name = if section.is_empty() {
                            k.clone()
                        } else {
                            format!("{section}.{k}")
                        };
                        let header = if array {
                            format!("[[{name}]]")
                        } else {
                            format!("[{name}]")
                        };
                        walk(&header, &inner, defs, out);
                    }
                    None => {
                        out.insert((section.to_string(), k.clone()));
                    }
                }
            }
        }
        let mut out = std::collections::BTreeSet::new();
        // Top-level tables are named plainly; nested ones by their path.
        for (k, p) in schema["properties"].as_object().unwrap() {
            let (inner, array) = object(p, &defs, false).expect("top-level keys are tables");
            let header = if array { format!("[[{k}]]") } else { format!("[{k}]") };
            walk(&header, &inner, &defs, &mut out);
        }
        // `[[module]] accounts` is documented as `[module.accounts]`,
        // `[[module]] instance` as `[[module.instance]]`.
        out.into_iter()
            .map(|(s, k)| {
                let s = s
                    .replace("[[[[module]].instance]]", "[[module.instance]]")
                    .replace("[[[module]].accounts]", "[module.accounts]")
                    .replace("[[[module]].link_success]", "[module.link_success]")
                    .replace("[[identity_provider].claims]", "[identity_provider.claims]");
                (s, k)
            })
            .collect()
    }

    /// `(section, key)` pairs named in the key table of docs/configuration.md.
    fn readme_keys() -> std::collections::BTreeSet<(String, String)> {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
        let start = readme
            .find("| key | meaning |")
            .expect("the key table of docs/configuration.md");
        let mut out = std::collections::BTreeSet::new();
        for line in readme[start..].lines().skip(2).take_while(|l| l.starts_with('|')) {
            let cell = line.split('|').nth(1).unwrap().replace('`', "");
            let cell = cell.trim();
            let end = cell.rfind(']').expect("a section in the first cell") + 1;
            let section = cell[..end].trim().to_string();
            // Quoted values ("memory") are not keys.
            let mut rest = String::new();
            let mut quoted = false;
            for c in cell[end..].chars() {
                if c == '"' {
                    quoted = !quoted;
                } else if !quoted {
                    rest.push(c);
                }
            }
            for word in rest.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')) {
                if !word.is_empty() {
                    out.insert((section.clone(), word.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn the_readme_key_table_and_the_example_config_match_the_types() {
        let types = schema_keys();
        let readme = readme_keys();
        assert!(types.len() > 50, "the schema walk found the keys: {types:?}");
        let undocumented: Vec<_> = types.difference(&readme).collect();
        assert!(
            undocumented.is_empty(),
            "keys missing from the table in docs/configuration.md: {undocumented:?}"
        );
        let stale: Vec<_> = readme.difference(&types).collect();
        assert!(
            stale.is_empty(),
            "keys in docs/configuration.md that do not exist: {stale:?}"
        );
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/unigate.example.toml")).unwrap();
        let mentioned = |key: &str| {
            example.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} ="))
                    || l.contains(&format!("{key} = "))
                    || l.contains(&format!("{key}="))
                    || l.contains(&format!("\"{key}\""))
            })
        };
        let missing: Vec<_> = types.iter().filter(|(_, k)| !mentioned(k)).collect();
        assert!(
            missing.is_empty(),
            "keys config/unigate.example.toml does not show: {missing:?}"
        );
    }
}
