//! The pure half of loading: every rule of the file checked, every
//! problem reported at once, and the configuration built, without the
//! file system, the environment or the network. What the file only names
//! (secrets, keys, certificates, account files) is listed in [`Reads`]
//! for [`super::resolve`].

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use url::Url;

use super::checks::*;
use super::modules::modules;
use super::{
    AdminSettings, GatewayConfig, GatewayFile, HeaderPreset, IdentitySettings, IdpSettings, MatchOn, RedisSettings,
    SessionSettings, SessionStore,
};
use crate::config::ConfigErrors;
use crate::secret::{Secret, SecretRef};

/// A file every rule was checked on, turned into the configuration the
/// proxy runs on, but with nothing it names read yet: `resolve` reads
/// each of [`Reads`] into its place.
#[derive(Debug)]
pub struct Validated {
    /// The configuration, with unread slots: every `Secret` named in
    /// `reads` is empty, `threads` is 0 when the CPUs are to be counted,
    /// `tls_files`, `identity.assertion_key`, and each route's `accounts`
    /// and `upstream_tls.ca` are `None`.
    pub(super) config: GatewayConfig,
    pub(super) reads: Reads,
}

/// What the file names, for `resolve` to read, each with the key it
/// came from.
#[derive(Debug)]
pub(super) struct Reads {
    pub client_secret: SecretRef,
    /// With `store = "redis"`.
    pub redis: Option<RedisReads>,
    pub assertion_key: Option<SecretRef>,
    pub admin_token: Option<SecretRef>,
    /// `[listen] tls_cert` and `tls_key`, when both are given.
    pub tls: Option<(String, String)>,
    /// `[listen] threads` not given: as many as the machine has CPUs.
    pub count_cpus: bool,
    pub modules: Vec<ModuleReads>,
}

#[derive(Debug)]
pub(super) struct RedisReads {
    pub url: Option<SecretRef>,
    pub encryption_key: Option<SecretRef>,
    /// `redis_cluster`'s entries, each with its number in the file.
    pub cluster: Vec<(usize, ClusterNode)>,
    /// `redis_tls_ca`, as written.
    pub tls_ca: Option<String>,
}

/// A `redis_cluster` entry: a URL as written, or a secret reference to
/// one (a URL holding a password).
#[derive(Debug)]
pub(super) enum ClusterNode {
    Url(String),
    Secret(SecretRef),
}

/// Why `url` cannot name a Redis Cluster node, if it cannot (never
/// repeating the URL: it may hold a password).
pub(super) fn cluster_node_problem(url: &str) -> Option<String> {
    use ::redis::IntoConnectionInfo;
    let info = match url.into_connection_info() {
        Ok(info) => info,
        Err(e) => return Some(format!("not a Redis URL ({e})")),
    };
    if matches!(info.addr(), ::redis::ConnectionAddr::Unix(_)) {
        return Some("a Redis Cluster node is reached over TCP (`redis://host:port`), not a Unix socket".into());
    }
    if info.redis_settings().db() != 0 {
        return Some("Redis Cluster has only database 0: leave the database out of the URL".into());
    }
    None
}

/// `redis_cluster`: its entries, checked as far as they are written here,
/// and whether it goes with the rest of `[session]`.
fn cluster_nodes(s: &super::file::SessionFile, errs: &mut ConfigErrors) -> Vec<(usize, ClusterNode)> {
    const KEY: &str = "session.redis_cluster";
    if s.redis_cluster.is_empty() {
        return Vec::new();
    }
    if s.redis_url.is_some() {
        errs.push(
            KEY,
            "`redis_cluster` and `redis_url` exclude each other: name the cluster's nodes alone (a node URL holding a password as a secret reference, `env:NAME` or `file:PATH`)",
        );
    }
    if !s.redis_sentinels.is_empty() || s.redis_sentinel_master.is_some() {
        errs.push(
            KEY,
            "`redis_cluster` and `redis_sentinels` exclude each other: a Redis Cluster fails over by itself",
        );
    }
    if s.redis_prefix.as_deref().is_some_and(|p| p.contains(['{', '}'])) {
        errs.push(
            "session.redis_prefix",
            "with `redis_cluster` the prefix may not hold `{` or `}`: a hash tag would put every key on one shard",
        );
    }
    let mut nodes = Vec::new();
    for (i, entry) in s.redis_cluster.iter().enumerate() {
        if entry.starts_with("env:") || entry.starts_with("file:") {
            match SecretRef::try_from(entry.clone()) {
                Ok(r) => nodes.push((i + 1, ClusterNode::Secret(r))),
                Err(e) => errs.push(KEY, format!("entry {}: {e}", i + 1)),
            }
            continue;
        }
        if let Some(problem) = cluster_node_problem(entry) {
            errs.push(KEY, format!("entry {}: {problem}", i + 1));
        } else if ::redis::IntoConnectionInfo::into_connection_info(entry.as_str())
            .is_ok_and(|info| info.redis_settings().password().is_some())
        {
            errs.push(
                KEY,
                format!(
                    "entry {} holds a password: give that URL as a secret reference (`env:NAME` or `file:PATH`), never in the file",
                    i + 1
                ),
            );
        } else {
            nodes.push((i + 1, ClusterNode::Url(entry.clone())));
        }
    }
    nodes
}

/// One `[[module]]`'s files and secrets.
#[derive(Debug)]
pub(super) struct ModuleReads {
    /// `module[i]`.
    pub key: String,
    /// Its routes in `config.modules`: the module's, then its instances'.
    pub routes: Range<usize>,
    /// With `upstream_tls = true`.
    pub upstream_ca: Option<String>,
    pub accounts: Option<AccountsReads>,
}

/// `[module.accounts]`, checked; its source's token or file still to read.
#[derive(Debug)]
pub(super) struct AccountsReads {
    pub source: SourceReads,
    pub match_on: MatchOn,
    pub cache_ttl: Duration,
    pub provisioning: bool,
    pub default_role: Option<String>,
}

#[derive(Debug)]
pub(super) enum SourceReads {
    Scim {
        url: Option<String>,
        token: Option<SecretRef>,
    },
    File(String),
}

/// Checks every rule of `file`: the configuration with what is still to
/// be read, or every problem found.
pub fn validate(file: &GatewayFile) -> Result<Validated, ConfigErrors> {
    let (validated, errs) = checked(file);
    errs.into_result(validated)
}

/// `validate`, returning what could be built even when there are
/// problems, so that `from_file` reads what the file names too and
/// reports both kinds of problem in one run.
pub(super) fn checked(file: &GatewayFile) -> (Validated, ConfigErrors) {
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

    let idp = identity_provider(file, &mut errs);
    let (session, redis_reads) = session(file, &mut errs);

    let default_preset = choice(
        file.identity.headers.as_ref(),
        HeaderPreset::KaseyaOne,
        "identity.headers",
        &mut errs,
        preset_message,
    );
    let assertion_ttl = file.identity.assertion_ttl.unwrap_or(Duration::from_secs(60));
    if assertion_ttl > Duration::from_secs(60) || assertion_ttl < Duration::from_secs(1) {
        errs.push("identity.assertion_ttl", "must be between 1s and 60s");
    }
    let max_header_value = file.identity.max_header_value.unwrap_or(4096);
    if !(1..=8192).contains(&max_header_value) {
        errs.push("identity.max_header_value", "must be between 1 and 8192 (bytes)");
    }

    let mut warnings = Vec::new();
    let (routes, module_reads) = modules(&file.modules, default_preset, &mut errs, &mut warnings);

    if idp.claims.groups.is_unused()
        && let Some(m) = routes
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
    if let Some(threads) = file.listen.threads {
        check_threads(threads, &mut errs);
    }
    let admin = file.admin.as_ref().and_then(|a| {
        let address = a
            .address
            .parse::<SocketAddr>()
            .map_err(|e| errs.push("admin.address", format!("not an address like 127.0.0.1:9090 ({e})")))
            .ok()?;
        Some(AdminSettings {
            address,
            token: Secret::new(""),
        })
    });
    let tls_files = match (&file.listen.tls_cert, &file.listen.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
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
    let trusted_proxies = crate::gateway::forwarded::TrustedProxies::parse(&file.listen.trusted_proxies)
        .unwrap_or_else(|bad| {
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
    let config = GatewayConfig {
        admin,
        listen,
        threads: file.listen.threads.unwrap_or(0),
        work_stealing: file.listen.work_stealing.unwrap_or(false),
        tls_files: None,
        http2: file.listen.http2.unwrap_or(true),
        drain_delay,
        shutdown_grace,
        tls,
        public_port,
        trusted_proxies,
        idp,
        session,
        identity: IdentitySettings {
            assertion_key: None,
            assertion_ttl,
            assertion_cache: file.identity.assertion_cache.unwrap_or(10_000),
            max_header_value,
        },
        modules: routes,
        warnings,
    };
    let reads = Reads {
        client_secret: file.identity_provider.client_secret.clone(),
        redis: redis_reads,
        assertion_key: file.identity.assertion_key.clone(),
        admin_token: file.admin.as_ref().map(|a| a.token.clone()),
        tls: tls_files,
        count_cpus: file.listen.threads.is_none(),
        modules: module_reads,
    };
    (Validated { config, reads }, errs)
}

/// `[listen] threads`, given or counted.
pub(super) fn check_threads(threads: usize, errs: &mut ConfigErrors) {
    if threads == 0 || threads > 256 {
        errs.push("listen.threads", "must be between 1 and 256");
    }
}

/// `[identity_provider]`; the client secret is read by `resolve`.
fn identity_provider(file: &GatewayFile, errs: &mut ConfigErrors) -> IdpSettings {
    let p = &file.identity_provider;
    match Url::parse(&p.issuer) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => errs.push("identity_provider.issuer", "must be an http or https URL"),
    }
    if p.client_id.is_empty() {
        errs.push("identity_provider.client_id", "must not be empty");
    }
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
    let userinfo = choice(
        p.userinfo.as_ref(),
        Default::default(),
        "identity_provider.userinfo",
        errs,
        |v| format!("`{v}` is not a choice; use `auto`, `always` or `never`"),
    );
    let max_id_token_age = p.max_id_token_age.unwrap_or(Duration::from_secs(600));
    if max_id_token_age < Duration::from_secs(10) || max_id_token_age > Duration::from_secs(86_400) {
        errs.push("identity_provider.max_id_token_age", "must be between 10s and 24h");
    }
    let claims = claim_map(p.claims.as_ref(), errs);
    IdpSettings {
        issuer: p.issuer.clone(),
        client_id: p.client_id.clone(),
        client_secret: Secret::new(""),
        scopes,
        post_logout_redirect_uri: p.post_logout_redirect_uri.clone(),
        timeout: p.timeout.unwrap_or(Duration::from_secs(5)),
        api_audience: p.api_audience.clone(),
        claims,
        userinfo: userinfo.into(),
        max_id_token_age,
    }
}

/// `[session]`; with `store = "redis"`, its URL and key are read by
/// `resolve` (and `redis` is `None` without a key).
fn session(file: &GatewayFile, errs: &mut ConfigErrors) -> (SessionSettings, Option<RedisReads>) {
    let s = &file.session;
    let store = choice(s.store.as_ref(), SessionStore::Memory, "session.store", errs, |other| {
        format!("`{other}` is not a session store; use `memory` or `redis`")
    });
    let mut redis = None;
    let mut reads = None;
    if store == SessionStore::Redis {
        let sentinels = s.redis_sentinels.clone();
        if s.redis_url.is_none() && sentinels.is_empty() && s.redis_cluster.is_empty() {
            errs.push(
                "session.redis_url",
                "`store = \"redis\"` needs `redis_url` (or `redis_sentinels`, or `redis_cluster`)",
            );
        }
        let cluster = cluster_nodes(s, errs);
        for u in &sentinels {
            if let Err(e) = ::redis::Client::open(u.as_str()) {
                errs.push("session.redis_sentinels", format!("`{u}` is not a Redis URL ({e})"));
            }
        }
        if !sentinels.is_empty() && s.redis_tls_ca.is_some() {
            errs.push(
                "session.redis_tls_ca",
                "with `redis_sentinels` the Redis servers' CA comes from the system's trust store (or the file `SSL_CERT_FILE` names), not `redis_tls_ca`",
            );
        }
        if !sentinels.is_empty() && s.redis_sentinel_master.is_none() {
            errs.push("session.redis_sentinel_master", "name the master the sentinels watch");
        }
        if s.encryption_key.is_none() {
            errs.push(
                "session.encryption_key",
                "`store = \"redis\"` needs `encryption_key`: tokens are never stored in Redis unencrypted",
            );
        }
        redis = s.encryption_key.as_ref().map(|_| RedisSettings {
            url: None,
            sentinels,
            sentinel_master: s.redis_sentinel_master.clone(),
            cluster: Vec::new(),
            encryption_key: Secret::new(""),
            prefix: s.redis_prefix.clone().unwrap_or_else(|| "unigate".into()),
            local_cache: s.redis_local_cache.unwrap_or(Duration::from_secs(30)),
            wait_replicas: s.redis_wait_replicas,
            tls_ca: None,
        });
        reads = Some(RedisReads {
            url: s.redis_url.clone(),
            encryption_key: s.encryption_key.clone(),
            cluster,
            tls_ca: s.redis_tls_ca.clone(),
        });
    }
    let session = SessionSettings {
        redis,
        idle_timeout: s.idle_timeout.unwrap_or(Duration::from_secs(30 * 60)),
        absolute_timeout: s.absolute_timeout.unwrap_or(Duration::from_secs(12 * 3600)),
        max_sessions: s.max_sessions.unwrap_or(1_000_000),
        refresh_before: s.refresh_before.unwrap_or(Duration::from_secs(60)),
        login_starts_per_minute: s.login_starts_per_minute.unwrap_or(600).max(1),
        module_cookie_ttl: s.module_cookie_ttl.unwrap_or(Duration::from_secs(30 * 86_400)),
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
    (session, reads)
}
