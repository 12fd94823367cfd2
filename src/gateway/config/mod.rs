//! unigate's own configuration (`unigate run|check --config FILE`): the
//! file's serde types, and `GatewayConfig`, the checked form the proxy runs
//! on. Key names are an interface other tools rely on: keep them.
//!
//! Loading is three steps, each reporting every problem it finds at once,
//! each with its key path:
//!
//! 1. parse (`file`): the text into [`GatewayFile`], the file's serde
//!    mirror. Unknown keys, syntax and type errors stop here. Keys that
//!    take one of a few words are enums; a word outside the set is kept
//!    (a [`Choice`]) for the next step to report with the rest.
//! 2. [`validate`] (`validate`, `modules`, `checks`): pure, no file
//!    system, environment or network. Checks every rule and builds the
//!    configuration, with what the file only names (secrets, the
//!    assertion key, the TLS certificate and key, upstream CAs, account
//!    files) listed for the next step: a [`Validated`].
//! 3. [`resolve`] (`resolve`): the I/O. Reads each of those, checks it as
//!    a start would use it (a key parses, a certificate is valid now),
//!    counts the CPUs for the default `threads`, and fills it in.
//!
//! [`GatewayConfig::from_file`] runs both, and reads what a file names
//! even when it breaks rules, so `unigate check` lists everything.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use crate::config::route::{HeaderPreset, InstanceRef, LinkSuccessFile, LoginMode, Route, RouteId};
pub use crate::config::settings::{
    AccountSource, AccountsConfig, IdpSettings, MatchOn, RedisSettings, SessionSettings,
};
mod checks;
mod file;
mod modules;
mod resolve;
mod validate;

pub use file::*;
pub use resolve::resolve;
pub use validate::{Validated, validate};

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
    /// What the file says in a way that still works but should change
    /// (deprecated keys): `unigate check` prints them, the server logs them.
    pub warnings: Vec<String>,
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

    /// [`validate`] then [`resolve`]; when the file breaks rules, what it
    /// names is read all the same, so that every problem of both kinds is
    /// reported in one run (those of `validate` first).
    pub fn from_file(file: GatewayFile, base: &Path) -> Result<GatewayConfig, ConfigErrors> {
        let (validated, mut errs) = validate::checked(&file);
        match resolve(validated, base) {
            Ok(config) => errs.into_result(config),
            Err(more) => {
                errs.0.extend(more.0);
                Err(errs)
            }
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod validate_tests;
