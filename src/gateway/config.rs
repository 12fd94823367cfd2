//! unigate's own configuration (`unigate run|check --config FILE`): the
//! file's serde types, and `GatewayConfig`, the checked form the proxy runs
//! on. Key names are an interface other tools rely on: keep them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::config::{ConfigErrors, parse_toml};
use crate::secret::{Secret, SecretRef};

#[derive(Debug, Deserialize)]
pub struct GatewayFile {
    pub listen: ListenFile,
    pub identity_provider: IdentityProviderFile,
    #[serde(default)]
    pub session: SessionFile,
    #[serde(default)]
    pub identity: IdentityFile,
    #[serde(default, rename = "module")]
    pub modules: Vec<ModuleFile>,
}

#[derive(Debug, Deserialize)]
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
}

#[derive(Debug, Deserialize)]
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
    pub timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SessionFile {
    /// `memory` (default).
    pub store: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub absolute_timeout: Option<Duration>,
    pub max_sessions: Option<u64>,
    /// Refresh tokens this long before the access token expires; default `60s`.
    #[serde(default, with = "humantime_serde")]
    pub refresh_before: Option<Duration>,
    /// Logins one client address may start per minute; default 120.
    pub login_starts_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct IdentityFile {
    /// Header preset: `kaseyaone` (default) or `forwarded`.
    pub headers: Option<String>,
    /// PKCS#8 PEM P-256 key signing `X-Unigate-Assertion`; generated at start when absent.
    pub assertion_key: Option<SecretRef>,
    /// Assertion lifetime; default and maximum `60s`.
    #[serde(default, with = "humantime_serde")]
    pub assertion_ttl: Option<Duration>,
    /// Longest header value forwarded; longer values are cut. Default 4096.
    pub max_header_value: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct ModuleFile {
    pub name: String,
    pub hosts: Vec<String>,
    /// `host:port` of the module, e.g. `127.0.0.1:8081`.
    pub upstream: String,
    #[serde(default)]
    pub access_groups: Vec<String>,
    #[serde(default)]
    pub logout_paths: Vec<String>,
    #[serde(default)]
    pub session_cookies: Vec<String>,
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
    pub tls: bool,
    pub public_port: Option<u16>,
    pub idp: IdpSettings,
    pub session: SessionSettings,
    pub identity: IdentitySettings,
    pub modules: Vec<ModuleConfig>,
}

#[derive(Debug, Clone)]
pub struct IdpSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub max_sessions: u64,
    pub refresh_before: Duration,
    pub login_starts_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct IdentitySettings {
    pub assertion_key: Option<Secret>,
    pub assertion_ttl: Duration,
    pub max_header_value: usize,
}

#[derive(Debug, Clone)]
pub struct ModuleConfig {
    pub name: String,
    pub hosts: Vec<String>,
    pub upstream: SocketAddr,
    pub access_groups: Vec<String>,
    pub logout_paths: Vec<String>,
    pub session_cookies: Vec<String>,
    pub public_paths: Vec<String>,
    pub cors_origins: Vec<String>,
    pub headers: HeaderPreset,
    pub local_login: bool,
    pub login_paths: Vec<String>,
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

        match file.session.store.as_deref() {
            None | Some("memory") => {}
            Some(other) => errs.push(
                "session.store",
                format!("`{other}` is not a session store this build has; use `memory`"),
            ),
        }
        let session = SessionSettings {
            idle_timeout: file.session.idle_timeout.unwrap_or(Duration::from_secs(30 * 60)),
            absolute_timeout: file.session.absolute_timeout.unwrap_or(Duration::from_secs(12 * 3600)),
            max_sessions: file.session.max_sessions.unwrap_or(1_000_000),
            refresh_before: file.session.refresh_before.unwrap_or(Duration::from_secs(60)),
            login_starts_per_minute: file.session.login_starts_per_minute.unwrap_or(120).max(1),
        };
        let year = Duration::from_secs(366 * 86_400);
        for (key, d) in [
            ("session.idle_timeout", session.idle_timeout),
            ("session.absolute_timeout", session.absolute_timeout),
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
            .and_then(|r| r.load(base).map_err(|e| errs.push("identity.assertion_key", e)).ok());
        let assertion_ttl = file.identity.assertion_ttl.unwrap_or(Duration::from_secs(60));
        if assertion_ttl > Duration::from_secs(60) || assertion_ttl < Duration::from_secs(1) {
            errs.push("identity.assertion_ttl", "must be between 1s and 60s");
        }

        if file.modules.is_empty() {
            errs.push("module", "at least one [[module]] is needed");
        }
        let mut modules = Vec::new();
        let mut hosts_seen = HashSet::new();
        for (i, m) in file.modules.into_iter().enumerate() {
            let key = |k: &str| format!("module[{i}].{k}");
            if m.hosts.is_empty() {
                errs.push(key("hosts"), "needs at least one host name");
            }
            let hosts: Vec<String> = m.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
            for h in &hosts {
                if h.contains(':') || h.contains('/') || h.is_empty() {
                    errs.push(
                        key("hosts"),
                        format!("`{h}` must be a bare host name, without port or path"),
                    );
                }
                if !hosts_seen.insert(h.clone()) {
                    errs.push(key("hosts"), format!("`{h}` belongs to another module too"));
                }
            }
            let upstream = m.upstream.parse::<SocketAddr>().unwrap_or_else(|e| {
                errs.push(
                    key("upstream"),
                    format!("`{}` is not an address like 127.0.0.1:8081 ({e})", m.upstream),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            });
            for (k, paths) in [
                ("logout_paths", &m.logout_paths),
                ("public_paths", &m.public_paths),
                ("login_paths", &m.login_paths),
            ] {
                for p in paths {
                    if !p.starts_with('/') || p.starts_with("/_unigate/") {
                        errs.push(key(k), format!("`{p}` must start with `/` and not be under /_unigate/"));
                    }
                }
            }
            if m.access_groups.is_empty() {
                errs.push(
                    key("access_groups"),
                    "name at least one group; a module open to every user is a mistake waiting to happen",
                );
            }
            let headers = preset(m.headers.as_deref(), key("headers"), &mut errs, default_preset);
            modules.push(ModuleConfig {
                name: m.name,
                hosts,
                upstream,
                access_groups: m.access_groups,
                logout_paths: m.logout_paths,
                session_cookies: m.session_cookies,
                public_paths: m.public_paths,
                cors_origins: m.cors_origins,
                headers,
                local_login: m.local_login.unwrap_or(false),
                login_paths: m.login_paths,
            });
        }

        let threads = file
            .listen
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 || threads > 256 {
            errs.push("listen.threads", "must be between 1 and 256");
        }
        errs.into_result(GatewayConfig {
            listen,
            threads,
            work_stealing: file.listen.work_stealing.unwrap_or(false),
            tls,
            public_port,
            idp: IdpSettings {
                issuer: p.issuer.trim_end_matches('/').to_string(),
                client_id: p.client_id.clone(),
                client_secret,
                scopes,
                post_logout_redirect_uri: p.post_logout_redirect_uri.clone(),
                timeout: p.timeout.unwrap_or(Duration::from_secs(5)),
            },
            session,
            identity: IdentitySettings {
                assertion_key,
                assertion_ttl,
                max_header_value: file.identity.max_header_value.unwrap_or(4096),
            },
            modules,
        })
    }
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
            "module[0].hosts",
            "module[0].upstream",
            "module[0].logout_paths",
            "module[0].access_groups",
        ] {
            assert!(paths.contains(&want), "missing {want}: {err}");
        }
    }
}
