//! `[[module]]` and `[[module.instance]]` checked into routes (pure): a
//! module's route, then one per instance, its Choose an Instance host
//! first when it has instances. Its CA and accounts are read by `resolve`.

use std::collections::HashSet;
use std::time::Duration;

use super::checks::*;
use super::validate::ModuleReads;
use super::{HeaderPreset, InstanceRef, LinkSuccessFile, LoginMode, ModuleFile, Route, RouteId};
use crate::config::ConfigErrors;
use crate::config::tls::UpstreamTls;
use crate::policy::rules::{Rule, RuleAccess, RulePath};

/// Every module's routes, in order, and what `resolve` reads for each.
pub(super) fn modules(
    files: &[ModuleFile],
    default_preset: HeaderPreset,
    errs: &mut ConfigErrors,
    warnings: &mut Vec<String>,
) -> (Vec<Route>, Vec<ModuleReads>) {
    if files.is_empty() {
        errs.push("module", "at least one [[module]] is needed");
    }
    let mut routes = Vec::new();
    let mut reads = Vec::new();
    let mut hosts_seen = HashSet::new();
    let mut names_seen = HashSet::new();
    for (i, m) in files.iter().enumerate() {
        let first = routes.len();
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
        let hosts = check_hosts(&m.hosts, &key("hosts"), &mut hosts_seen, errs);
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
        check_access_groups(Some(&m.access_groups), &key("access_groups"), errs);
        if let Some(a) = m.max_age
            && (a < Duration::from_secs(60) || a > Duration::from_secs(30 * 86_400))
        {
            errs.push(key("max_age"), "must be between 1m and 30 days");
        }
        let unified_login = m.unified_login.unwrap_or(true);
        let login = login_mode(m, unified_login, &key, errs, warnings);
        let require_kaseyaone = login == LoginMode::Required;
        if require_kaseyaone && !unified_login {
            errs.push(
                key("login"),
                "cannot require Log In with KaseyaOne where `unified_login = false`",
            );
        }
        if login == LoginMode::Optional && unified_login && m.login_paths.is_empty() {
            warnings.push(format!(
                "{}: `login = \"optional\"` and no `login_paths`: people without a KaseyaOne session see the module's own login page without the \"Log In with KaseyaOne\" button; name that page in `login_paths`, or set `login = \"automatic\"`",
                key("login")
            ));
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
        let rules = rules(m, unified_login, &key, errs, warnings);
        // Rules come before `public_paths` and the module's own login: a
        // narrowing rule over one of them takes it over.
        for (n, r) in rules.iter().enumerate().filter(|(_, r)| !r.widens()) {
            let over = |p: &String| r.matches(p, "GET", &[]) || r.matches(p, "POST", &[]);
            if let Some(p) = m.public_paths.iter().find(|p| over(p)) {
                warnings.push(format!(
                    "{}: it takes the public path `{p}` too (rules come before public_paths): a login is needed there",
                    key(&format!("rule[{n}]"))
                ));
            }
            if login == LoginMode::Optional
                && let Some(p) = m.login_paths.iter().find(|p| over(p))
            {
                warnings.push(format!(
                    "{}: it takes the login page `{p}`: people without a KaseyaOne session are sent to KaseyaOne instead of the module's own login",
                    key(&format!("rule[{n}]"))
                ));
            }
        }
        let public_rule_paths = rules
            .iter()
            .filter(|r| r.access == RuleAccess::Public)
            .flat_map(|r| r.paths.iter())
            .filter_map(|p| match p {
                RulePath::Prefix(p) => Some(p),
                RulePath::Exact(_) => None,
            });
        // A public path is forwarded before any login-page rule runs, and
        // the login page is found the way servers dispatch (`/login.`,
        // `/login.json`, `/login/x`, Tomcat's form anywhere): a public path
        // that one of those spellings falls under opens it.
        let taken_over = m.login_paths.iter().chain(require_kaseyaone.then_some(&exception_path));
        for l in taken_over {
            use crate::policy::path::{reaches, under};
            let segments: Vec<&str> = l.split('/').filter(|s| !s.is_empty()).collect();
            // A request under `p` that goes on as the login page's path
            // does below `p`'s depth (`/APP/` and `/app/auth/login` give
            // `/APP/auth/login`), or ends in its last segment (Tomcat).
            let opens = |p: &str| {
                let depth = p.split('/').filter(|s| !s.is_empty()).count();
                let base = p.trim_end_matches('/');
                let below = segments.get(depth..).unwrap_or_default().join("/");
                let last = segments.last().copied().unwrap_or_default();
                under(p, l)
                    || reaches(l, p, true)
                    || reaches(l, &format!("{base}/{below}"), true)
                    || reaches(l, &format!("{base}/{last}"), true)
            };
            let exact_public = rules.iter().any(|r| {
                r.access == RuleAccess::Public
                    && r.paths
                        .iter()
                        .any(|p| matches!(p, RulePath::Exact(x) if reaches(l, x, true)))
            });
            if exact_public {
                errs.push(
                    key("rule"),
                    format!("a public rule names the login page `{l}`: module logins there would skip every check"),
                );
            }
            if let Some(p) = m
                .public_paths
                .iter()
                .chain(public_rule_paths.clone())
                .find(|p| opens(p))
            {
                errs.push(
                    key("public_paths"),
                    format!("`{p}` covers the login page `{l}`: module logins there would skip every check"),
                );
            }
        }
        for c in &m.session_cookies {
            if crate::gateway::cookies::is_unigate_cookie(c) {
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
        let accounts = m.accounts.as_ref().and_then(|a| accounts(a, &key("accounts"), errs));
        if m.accounts.is_some() && !unified_login {
            errs.push(
                key("accounts"),
                "only used with Unified Login; remove it or the `unified_login = false`",
            );
        }
        let headers = choice(
            m.headers.as_ref(),
            default_preset,
            &key("headers"),
            errs,
            preset_message,
        );
        let upstream_tls = upstream_tls(m, &hosts, &key, errs);
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
            logout_paths: m.logout_paths.clone(),
            paths_case_insensitive: m.logout_paths_case_insensitive.unwrap_or(false),
            session_cookies: m.session_cookies.clone(),
            public_paths: m.public_paths.clone(),
            rules,
            cors_origins: m.cors_origins.clone(),
            headers,
            login,
            login_paths: m.login_paths.clone(),
            unified_login,
            local_exceptions: m.local_exceptions.clone(),
            exception_path,
            username_field: m.username_field.clone().unwrap_or_else(|| "username".into()),
            password_field: m.password_field.clone().unwrap_or_else(|| "password".into()),
            accounts: None,
            link_required: false,
            link_success,
        };
        if m.instances.is_empty() {
            let upstreams = check_upstreams(m.upstream.as_deref(), &m.upstreams, &key(""), errs);
            routes.push(Route {
                upstreams,
                ..base_route
            });
        } else {
            instances(m, i, base_route, &mut routes, &mut hosts_seen, errs);
        }
        reads.push(ModuleReads {
            key: format!("module[{i}]"),
            routes: first..routes.len(),
            upstream_ca: m.upstream_ca.clone().filter(|_| m.upstream_tls == Some(true)),
            accounts,
        });
    }
    (routes, reads)
}

/// The methods a rule may name without a warning (HTTP and WebDAV).
const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "OPTIONS",
    "TRACE",
    "CONNECT",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "REPORT",
    "SEARCH",
];

/// `[[module.rule]]`, each checked: its paths canonical, one kind of
/// access, a login age in range; a rule an earlier one shadows is warned
/// about.
fn rules(
    m: &ModuleFile,
    unified_login: bool,
    key: &dyn Fn(&str) -> String,
    errs: &mut ConfigErrors,
    warnings: &mut Vec<String>,
) -> Vec<Rule> {
    if !m.rules.is_empty() && !unified_login {
        errs.push(
            key("rule"),
            "rules need Log In with KaseyaOne: remove them or the `unified_login = false`",
        );
    }
    let mut out: Vec<Rule> = Vec::new();
    for (n, r) in m.rules.iter().enumerate() {
        let k = |f: &str| key(&format!("rule[{n}].{f}"));
        if r.paths.is_empty() {
            errs.push(
                k("paths"),
                "name at least one path (`/admin/`, or `=/billing` for exactly that path)",
            );
        }
        let paths: Vec<RulePath> = r.paths.iter().map(|p| RulePath::parse(p)).collect();
        for p in &paths {
            let raw = p.path();
            if let Some(c) = raw
                .chars()
                .find(|c| matches!(c, '*' | '?' | '#' | '%') || !c.is_ascii())
            {
                errs.push(
                    k("paths"),
                    format!(
                        "`{}`: `{c}` never matches as meant (paths are plain prefixes, matched as requests arrive decoded; no wildcards, no encoded or non-ASCII characters)",
                        p.written()
                    ),
                );
                continue;
            }
            if !raw.starts_with('/') || raw.starts_with("/_unigate/") {
                errs.push(
                    k("paths"),
                    format!("`{}` must start with `/` and not be under /_unigate/", p.written()),
                );
            } else if let Err(e) = crate::policy::path::check_configured(raw) {
                errs.push(k("paths"), e);
            }
        }
        let mut methods = Vec::new();
        for meth in &r.methods {
            if meth.is_empty() || !meth.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_') {
                errs.push(k("methods"), format!("`{meth}` is not an HTTP method"));
            } else {
                let m = meth.to_ascii_uppercase();
                if !KNOWN_METHODS.contains(&m.as_str()) {
                    warnings.push(format!(
                        "{}: `{meth}` is not a method browsers or API clients send; the rule never takes it",
                        k("methods")
                    ));
                }
                methods.push(m);
            }
        }
        check_access_groups(r.access_groups.as_ref(), &k("access_groups"), errs);
        let (public, deny) = (r.public.unwrap_or(false), r.deny.unwrap_or(false));
        let kinds = usize::from(r.access_groups.is_some()) + usize::from(public) + usize::from(deny);
        if kinds > 1 {
            errs.push(k(""), "give one of `access_groups`, `public = true` or `deny = true`");
        }
        if r.replace_module_groups.is_some() && r.access_groups.is_none() {
            errs.push(k("replace_module_groups"), "only used with the rule's `access_groups`");
        }
        if (public || deny) && r.max_login_age.is_some() {
            errs.push(
                k("max_login_age"),
                "a login age means nothing where everyone (`public`) or no one (`deny`) may go",
            );
        }
        if kinds == 0 && r.max_login_age.is_none() {
            errs.push(
                k(""),
                "a rule decides nothing without `access_groups`, `public = true`, `deny = true` or `max_login_age`",
            );
        }
        if let Some(a) = r.max_login_age
            && (a < Duration::from_secs(60) || a > Duration::from_secs(30 * 86_400))
        {
            errs.push(k("max_login_age"), "must be between 1m and 30 days");
        }
        let access = match (&r.access_groups, public, deny) {
            (_, true, _) => RuleAccess::Public,
            (_, _, true) => RuleAccess::Deny,
            (Some(g), ..) if r.replace_module_groups == Some(true) => RuleAccess::Instead(g.clone()),
            (Some(g), ..) => RuleAccess::AlsoModule(g.clone()),
            (None, ..) => RuleAccess::Module,
        };
        let rule = Rule {
            paths,
            methods,
            access,
            max_login_age: r.max_login_age,
        };
        let here = k("paths");
        let here = here.trim_end_matches(".paths");
        if let Some(e) = out.iter().position(|earlier| rule.shadowed_by(earlier)) {
            warnings.push(format!(
                "{here}: never applies: rule[{e}] before it takes every request it would"
            ));
        } else if let Some(e) = out.iter().position(|earlier| earlier.opens_before(&rule)) {
            let what = if rule.methods_within(&out[e]) {
                "so it guards almost nothing"
            } else {
                "for the methods both name"
            };
            warnings.push(format!(
                "{here}: rule[{e}] before it lets in requests for its paths first, {what}: put it before rule[{e}]"
            ));
        }
        if matches!(rule.access, RuleAccess::Instead(_)) && m.instances.iter().any(|i| i.access_groups.is_some()) {
            warnings.push(format!(
                "{here}: `replace_module_groups` replaces each instance's own access_groups too: members of its groups reach that part of every instance"
            ));
        }
        out.push(rule);
    }
    out
}

/// `upstream_tls` and the keys only used with it; the CA is read by `resolve`.
fn upstream_tls(
    m: &ModuleFile,
    hosts: &[String],
    key: &dyn Fn(&str) -> String,
    errs: &mut ConfigErrors,
) -> Option<UpstreamTls> {
    if !m.upstream_tls.unwrap_or(false) {
        for (k, set) in [
            ("upstream_sni", m.upstream_sni.is_some()),
            ("upstream_ca", m.upstream_ca.is_some()),
            ("upstream_verify", m.upstream_verify.is_some()),
        ] {
            if set {
                errs.push(key(k), "only used with `upstream_tls = true`");
            }
        }
        return None;
    }
    let sni = m
        .upstream_sni
        .clone()
        .or_else(|| hosts.first().cloned())
        .unwrap_or_default();
    if sni.is_empty() || sni.contains(['/', ':', ' ']) {
        errs.push(key("upstream_sni"), "must be a host name (or IP address) without port");
    }
    Some(UpstreamTls {
        sni,
        ca: None,
        verify: m.upstream_verify.unwrap_or(true),
    })
}

/// A module with instances: its Choose an Instance route, then one per
/// instance, each inheriting the module's settings.
fn instances(
    m: &ModuleFile,
    i: usize,
    base_route: Route,
    routes: &mut Vec<Route>,
    hosts_seen: &mut HashSet<String>,
    errs: &mut ConfigErrors,
) {
    if m.upstream.is_some() || !m.upstreams.is_empty() {
        errs.push(
            format!("module[{i}].upstream"),
            "a module with instances has its upstreams in each [[module.instance]]",
        );
    }
    let first = routes.len() + 1;
    let mut chooser = base_route.clone();
    chooser.chooser = (first..first + m.instances.len()).map(RouteId).collect();
    routes.push(chooser);
    let mut inst_names = HashSet::new();
    for (j, inst) in m.instances.iter().enumerate() {
        let ikey = |k: &str| format!("module[{i}].instance[{j}].{k}");
        if !inst_names.insert(inst.name.clone()) {
            errs.push(ikey("name"), format!("`{}` names another instance too", inst.name));
        }
        let hosts = check_hosts(&inst.hosts, &ikey("hosts"), hosts_seen, errs);
        let upstreams = check_upstreams(inst.upstream.as_deref(), &inst.upstreams, &ikey(""), errs);
        check_access_groups(inst.access_groups.as_ref(), &ikey("access_groups"), errs);
        let link_required = inst.link_required.unwrap_or(false);
        if link_required && base_route.login_paths.is_empty() {
            errs.push(
                ikey("link_required"),
                "linking checks credentials at the module's login page: name it in the module's `login_paths`",
            );
        }
        let upstream_tls = base_route.upstream_tls.clone().map(|mut t| {
            if m.upstream_sni.is_none()
                && let Some(h) = hosts.first()
            {
                t.sni = h.clone();
            }
            t
        });
        routes.push(Route {
            upstream_tls,
            label: format!("{}/{}", base_route.name, inst.name).into(),
            instance: Some(InstanceRef {
                display_name: inst.display_name.clone().unwrap_or_else(|| inst.name.clone()),
                name: inst.name.clone(),
            }),
            hosts,
            upstreams,
            access_groups: inst
                .access_groups
                .clone()
                .unwrap_or_else(|| base_route.access_groups.clone()),
            link_required,
            ..base_route.clone()
        });
    }
}

/// `login`, or what the deprecated `local_login` / `require_kaseyaone`
/// said (with a warning); `optional` when none is set.
fn login_mode(
    m: &ModuleFile,
    unified_login: bool,
    key: &dyn Fn(&str) -> String,
    errs: &mut ConfigErrors,
    warnings: &mut Vec<String>,
) -> LoginMode {
    let old = m.local_login.is_some() || m.require_kaseyaone.is_some();
    if m.login.is_some() {
        if old {
            errs.push(
                key("login"),
                "replaces `local_login` and `require_kaseyaone`: remove them",
            );
        }
        let mode = choice(m.login.as_ref(), LoginMode::Optional, &key("login"), errs, |w| {
            format!("`{w}` is not a login mode; use `optional`, `automatic` or `required`")
        });
        if !unified_login && mode != LoginMode::Required {
            warnings.push(format!(
                "{}: not used where `unified_login = false` (the module's own login only); remove it",
                key("login")
            ));
        }
        return mode;
    }
    if !old {
        // The default lets module credentials through: say so, so that no
        // one gets it without choosing it.
        if unified_login {
            warnings.push(format!(
                "{}: not set, so Log In with KaseyaOne is optional here: people without a KaseyaOne session reach the module and its own login (module credentials work); set `login = \"optional\"` to keep that, or `\"automatic\"` to send every unauthenticated navigation to KaseyaOne",
                key("login")
            ));
        }
        return LoginMode::Optional;
    }
    if m.require_kaseyaone == Some(true) && m.local_login == Some(true) {
        errs.push(
            key("local_login"),
            "contradicts `require_kaseyaone = true`; list the users who keep module credentials in `local_exceptions`",
        );
    }
    let mode = if m.require_kaseyaone == Some(true) {
        LoginMode::Required
    } else if m.local_login == Some(true) {
        LoginMode::Optional
    } else {
        LoginMode::Automatic
    };
    let said: Vec<String> = [
        ("local_login", m.local_login),
        ("require_kaseyaone", m.require_kaseyaone),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("`{k} = {v}`")))
    .collect();
    warnings.push(format!(
        "{}: {} is deprecated and will be removed; write `login = \"{}\"`",
        key("login"),
        said.join(" and "),
        mode.as_str()
    ));
    mode
}
