//! A route: one routable part of a module (the module, one of its
//! instances, or its Choose an Instance host), as the proxy runs it after
//! the configuration was checked. The pure decisions in `policy` read it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::settings::AccountsConfig;

/// Which identity headers a module gets: `headers = "kaseyaone"` (the
/// default) or `"forwarded"` in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum HeaderPreset {
    #[default]
    KaseyaOne,
    Forwarded,
}

/// How a module's users log in: `[[module]] login`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum LoginMode {
    /// Log In with KaseyaOne is optional (the default): without a
    /// KaseyaOne session the module's own login page and session decide,
    /// with the "Log In with KaseyaOne" button on its login page; module
    /// credentials keep working.
    #[default]
    Optional,
    /// Every unauthenticated navigation goes to KaseyaOne: for modules
    /// with no login of their own.
    Automatic,
    /// Log In with KaseyaOne is required: module credentials are refused,
    /// except for `local_exceptions`.
    Required,
}

impl LoginMode {
    /// The word a config file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginMode::Optional => "optional",
            LoginMode::Automatic => "automatic",
            LoginMode::Required => "required",
        }
    }
}

/// A route's place in the configuration's list of routes. Per-route state
/// (upstreams, counters, clients) is kept in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub usize);

impl RouteId {
    pub fn index(self) -> usize {
        self.0
    }
}

/// One routable part of a module: the module itself, one of its
/// instances, or (for a module with instances) its Choose an Instance host.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// TLS to the upstreams, when on.
    pub upstream_tls: Option<crate::config::tls::UpstreamTls>,
    pub name: String,
    /// `name`, or `name/instance`: how sessions, logs and assertions know it.
    /// Shared with every session of the route.
    pub label: std::sync::Arc<str>,
    pub display_name: String,
    /// The instance this route serves, for modules with instances.
    pub instance: Option<InstanceRef>,
    /// Non-empty on a module's own hosts when it has instances: the routes
    /// of its instances, for Choose an Instance. Such a route has no upstream.
    pub chooser: Vec<RouteId>,
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
    /// `[[module.rule]]`, in order: the first that takes a request decides
    /// who may make it (before `public_paths` and `access_groups`).
    pub rules: Vec<crate::policy::rules::Rule>,
    pub cors_origins: Vec<String>,
    pub headers: HeaderPreset,
    /// How users log in (with Unified Login on).
    pub login: LoginMode,
    pub login_paths: Vec<String>,
    pub unified_login: bool,
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

impl Route {
    /// The module's name with its instance, as sessions and logs know it.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether module credentials may reach the module: Unified Login
    /// off, or login `optional`.
    pub fn module_credentials(&self) -> bool {
        !self.unified_login || self.login == LoginMode::Optional
    }

    /// Whether Log In with KaseyaOne is required (module credentials only
    /// for `local_exceptions`).
    pub fn requires_kaseyaone(&self) -> bool {
        self.unified_login && self.login == LoginMode::Required
    }

    /// The first rule that takes a request for canonical `path` (`query`:
    /// its query string).
    pub fn rule(
        &self,
        path: &str,
        method: &http::Method,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Option<&crate::policy::rules::Rule> {
        crate::policy::rules::first(&self.rules, path, method.as_str(), query, headers)
    }

    /// Whether a user in `groups` may use some part of the module: its
    /// access groups, or the groups of a rule that replaces them. Which
    /// part is each request's to decide.
    pub fn admits_somewhere(&self, groups: &[String]) -> bool {
        crate::policy::may_access(groups, &self.access_groups)
            || self.rules.iter().any(|r| match &r.access {
                crate::policy::rules::RuleAccess::Instead(g) => crate::policy::may_access(groups, g),
                _ => false,
            })
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
