//! The config file's serde mirror: what an operator writes, key by key
//! (names are an interface other tools rely on: keep them). `validate`
//! checks it, `resolve` reads what it names.
//!
//! Keys that take one of a few words are enums, read through [`Choice`]:
//! a word outside the set is kept as written rather than failing the
//! parse, so `validate` reports it with every other problem of the file.

use std::time::Duration;

use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Deserializer};

use crate::secret::SecretRef;

pub use crate::config::route::LinkSuccessFile;
use crate::config::route::{HeaderPreset, LoginMode};
use crate::config::settings::MatchOn;

/// The value of a key that takes one of a few words (the enum `T`):
/// `Known` when it is one of them, else `Unknown` with the text as
/// written. serde would stop at the first unknown word; this lets
/// `validate` report it, with its key and the words allowed, alongside
/// every other problem. A value that is not a string at all is still a
/// parse error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice<T> {
    Known(T),
    Unknown(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Choice<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = text.as_str().into_deserializer();
        Ok(match T::deserialize(de) {
            Ok(v) => Choice::Known(v),
            Err(_) => Choice::Unknown(text),
        })
    }
}

/// The schema of the enum: the words allowed.
#[cfg(test)]
impl<T: schemars::JsonSchema> schemars::JsonSchema for Choice<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// `[session] store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum SessionStore {
    /// Sessions in this process (the default).
    #[default]
    Memory,
    /// Sessions shared by replicas in Redis.
    Redis,
}

/// `[identity_provider] userinfo`; see `oidc::claims::UserinfoMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum Userinfo {
    #[default]
    Auto,
    Always,
    Never,
}

impl From<Userinfo> for crate::oidc::claims::UserinfoMode {
    fn from(u: Userinfo) -> Self {
        use crate::oidc::claims::UserinfoMode;
        match u {
            Userinfo::Auto => UserinfoMode::Auto,
            Userinfo::Always => UserinfoMode::Always,
            Userinfo::Never => UserinfoMode::Never,
        }
    }
}

/// `[module.accounts] source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum AccountsSource {
    /// SCIM 2.0 `/Users` at the module.
    Scim,
    /// A TOML file of accounts.
    File,
}

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
    pub userinfo: Option<Choice<Userinfo>>,
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
    /// `memory` (default) or `redis`.
    pub store: Option<Choice<SessionStore>>,
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
    /// Redis Cluster instead of one server: some of its nodes
    /// (`redis://host:6379`; one holding a password as a secret
    /// reference), from which unigate finds the others. Not with
    /// `redis_url` or `redis_sentinels`.
    #[serde(default)]
    pub redis_cluster: Vec<String>,
    /// How many Redis replicas must hold a logout, a bearer revocation or
    /// a login's index before it counts (`WAIT`), so that a failover
    /// right after cannot undo it; default 0 (none waited for).
    pub redis_wait_replicas: Option<u32>,
    /// With `rediss://`: a PEM file of the certificate authorities the
    /// Redis servers' certificates chain to, instead of the system's
    /// (relative to this file). Not with Sentinel.
    pub redis_tls_ca: Option<String>,
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
    pub headers: Option<Choice<HeaderPreset>>,
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
    pub headers: Option<Choice<HeaderPreset>>,
    /// How users log in: `optional` (the default: without a KaseyaOne
    /// session the module's own login and session decide, and its login
    /// page gets the "Log In with KaseyaOne" button), `automatic` (every
    /// unauthenticated navigation goes to KaseyaOne) or `required` (module
    /// credentials refused, except for `local_exceptions`).
    pub login: Option<Choice<LoginMode>>,
    /// Deprecated: `login = "optional"` (true) or `"automatic"` (false).
    pub local_login: Option<bool>,
    /// The module's own login pages: they get the "Log In with KaseyaOne" button.
    #[serde(default)]
    pub login_paths: Vec<String>,
    /// Unified Login enabled for this module; default true. When false,
    /// unigate passes the module through untouched (its own login only)
    /// and the App Launcher shows it as a lock tile.
    pub unified_login: Option<bool>,
    /// Deprecated: `login = "required"`.
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
    /// Access rules inside the module, checked in order (first match
    /// wins) before `public_paths` and `access_groups`.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleFile>,
    /// How linking tells that the module accepted the credentials; every
    /// condition given must hold. Default: a redirect away from the login
    /// pages whose target then answers 200 with the cookies the login set.
    pub link_success: Option<LinkSuccessFile>,
}

/// `[[module.rule]]`: who may open some paths of a module.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct RuleFile {
    /// Canonical path prefixes, matched by whole segments (`/admin/`), or
    /// exact paths written `=/billing`.
    pub paths: Vec<String>,
    /// Only these methods (`GET` also takes `HEAD`); default every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Who may: members of these groups who are also in the module's
    /// `access_groups` (or, with `replace_module_groups = true`, whatever
    /// the module's groups say).
    pub access_groups: Option<Vec<String>>,
    /// `access_groups` replaces the module's instead of narrowing them;
    /// default false.
    pub replace_module_groups: Option<bool>,
    /// Everyone may, without signing in (as `public_paths`).
    pub public: Option<bool>,
    /// No one may.
    pub deny: Option<bool>,
    /// Step-up: a login older than this (`"15m"`) is asked again.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub max_login_age: Option<Duration>,
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
    pub source: Choice<AccountsSource>,
    /// Base of the module's SCIM API; default `/scim/v2` on the instance's upstream.
    pub scim_url: Option<String>,
    /// Bearer token for the SCIM API.
    pub token: Option<SecretRef>,
    /// A TOML file of `[[account]] username, email, active, role`.
    pub file: Option<String>,
    /// Which fields must match the KaseyaOne user: `email`, `username` or `both` (default).
    #[serde(rename = "match")]
    pub match_on: Option<Choice<MatchOn>>,
    /// How long a lookup is cached; default `60s`.
    #[serde(default, with = "humantime_serde")]
    #[cfg_attr(test, schemars(with = "Option<String>"))]
    pub cache_ttl: Option<Duration>,
    /// Automatic User Provisioning: create a missing account by SCIM.
    pub provisioning: Option<bool>,
    /// The role a provisioned account gets.
    pub default_role: Option<String>,
}
