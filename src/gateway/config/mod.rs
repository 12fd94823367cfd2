//! unigate's own configuration (`unigate run|check --config FILE`): the
//! file's serde types, and `GatewayConfig`, the checked form the proxy runs
//! on. Key names are an interface other tools rely on: keep them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

pub use crate::config::route::{HeaderPreset, InstanceRef, LinkSuccessFile, Route, RouteId};
pub use crate::config::settings::{
    AccountSource, AccountsConfig, IdpSettings, MatchOn, RedisSettings, SessionSettings,
};
mod checks;
mod file;

use checks::*;
pub use file::*;

use crate::config::{ConfigErrors, parse_toml};
use crate::secret::Secret;

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
    pub modules: Vec<Route>,
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
            let base_route = Route {
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
                modules.push(Route {
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
            chooser.chooser = (first..first + m.instances.len()).map(RouteId).collect();
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
                modules.push(Route {
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

#[cfg(test)]
mod tests;
