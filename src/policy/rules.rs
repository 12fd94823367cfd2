//! Access rules inside a module (`[[module.rule]]`): which paths and
//! methods need which groups, which are public or closed, and which need
//! a recent login. Checked in order, first match wins; a request no rule
//! matches falls back to the module's `access_groups` (and its
//! `public_paths`).
//!
//! A rule that narrows who may go (groups on top of the module's, `deny`,
//! a login age) matches the way servers dispatch, on the safe side: `;`
//! parameters, case, trailing dots, path info after the path and an
//! extension added to its last segment do not get around it, and a
//! method-override header (or `_method` query parameter) naming one of its
//! methods counts. A rule that opens (`public`) or lets other people in
//! (groups instead of the module's) matches strictly: only the path as
//! written, and only when the method and every override it carries are
//! among its methods.

use std::borrow::Cow;
use std::time::Duration;

use crate::policy::path;
use crate::policy::{EVERY_USER, may_access};

/// Where a rule applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulePath {
    /// This path and everything under it, segment by segment (`/admin/`).
    Prefix(String),
    /// Exactly this path (`=/billing` in a config file).
    Exact(String),
}

impl RulePath {
    /// `=/x` is exact, anything else a prefix.
    pub fn parse(written: &str) -> RulePath {
        match written.strip_prefix('=') {
            Some(p) => RulePath::Exact(p.to_string()),
            None => RulePath::Prefix(written.to_string()),
        }
    }

    /// The path as configured, without its `=`.
    pub fn path(&self) -> &str {
        match self {
            RulePath::Prefix(p) | RulePath::Exact(p) => p,
        }
    }

    /// As a config file writes it.
    pub fn written(&self) -> String {
        match self {
            RulePath::Prefix(p) => p.clone(),
            RulePath::Exact(p) => format!("={p}"),
        }
    }

    /// Whether this path takes every request `other` takes (`strict`: as
    /// a widening rule matches, exact paths only as written).
    fn covers(&self, other: &RulePath, strict: bool) -> bool {
        match (self, other) {
            (RulePath::Prefix(a), RulePath::Prefix(b) | RulePath::Exact(b)) => path::under(a, b),
            (RulePath::Exact(a), RulePath::Exact(b)) if strict => a == b,
            (RulePath::Exact(a), RulePath::Exact(b)) => a.trim_end_matches('/') == b.trim_end_matches('/'),
            (RulePath::Exact(_), RulePath::Prefix(_)) => false,
        }
    }
}

/// Who a rule lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAccess {
    /// The module's access groups (the rule asks only for a recent login).
    Module,
    /// Members of these groups who are also in the module's access groups.
    AlsoModule(Vec<String>),
    /// Members of these groups, whatever the module's access groups say.
    Instead(Vec<String>),
    /// Everyone, signed in or not: the module gets no identity.
    Public,
    /// No one.
    Deny,
}

/// One `[[module.rule]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub paths: Vec<RulePath>,
    /// Upper-case method names; empty: every method.
    pub methods: Vec<String>,
    pub access: RuleAccess,
    /// Step-up: a login older than this is asked again.
    pub max_login_age: Option<Duration>,
}

/// The headers that make frameworks treat a request as another method.
pub const METHOD_OVERRIDES: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

impl Rule {
    /// Whether the rule opens a way in (everyone, or other people than the
    /// module's users): it must match strictly.
    pub fn widens(&self) -> bool {
        matches!(self.access, RuleAccess::Public | RuleAccess::Instead(_))
    }

    /// Whether the rule takes a request for canonical `path` with `method`
    /// (`overrides`: the methods its override headers and `_method`
    /// parameters name).
    pub fn matches(&self, path: &str, method: &str, overrides: &[Cow<'_, str>]) -> bool {
        let widens = self.widens();
        let method_ok = self.methods.is_empty()
            || if widens {
                self.takes_method(method) && overrides.iter().all(|m| self.takes_method(m))
            } else {
                self.takes_method(method) || overrides.iter().any(|m| self.takes_method(m))
            };
        method_ok
            && self.paths.iter().any(|p| match (p, widens) {
                (RulePath::Prefix(x), true) => path::under(x, path),
                (RulePath::Exact(x), true) => path == x,
                // Case, `;` parameters, trailing dots, path info and an
                // added extension: as any server might dispatch it.
                (RulePath::Prefix(x) | RulePath::Exact(x), false) => path::reaches(x, path, true),
            })
    }

    /// `HEAD` goes with `GET`, as servers answer it.
    fn takes_method(&self, method: &str) -> bool {
        self.methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method) || (m == "GET" && method.eq_ignore_ascii_case("HEAD")))
    }

    /// Whether every request this rule would take is taken by `earlier`
    /// first (so this one never applies).
    pub fn shadowed_by(&self, earlier: &Rule) -> bool {
        let methods = self.methods_within(earlier);
        // A widening rule matches strictly and a narrowing one loosely:
        // only like against like, or a loose one first, is certain.
        let same_kind = earlier.widens() == self.widens() || !earlier.widens();
        let strict = earlier.widens() && self.widens();
        methods
            && same_kind
            && self
                .paths
                .iter()
                .all(|p| earlier.paths.iter().any(|e| e.covers(p, strict)))
    }

    /// Whether `earlier` takes every method this rule takes.
    pub fn methods_within(&self, earlier: &Rule) -> bool {
        earlier.methods.is_empty() || (!self.methods.is_empty() && self.methods.iter().all(|m| earlier.takes_method(m)))
    }

    /// Whether this widening rule takes, first, requests a later narrowing
    /// rule `later` means to guard (a public `/api/` before an admins-only
    /// `/api/admin/`): the later one then guards only odd spellings of
    /// them. Not when the later rule, for every method, has the same paths:
    /// it guards the rest (`GET` for readers, then everything else for
    /// writers). A method the later rule names that this one takes is
    /// always told.
    pub fn opens_before(&self, later: &Rule) -> bool {
        let overlap = self.methods.is_empty()
            || later.methods.is_empty()
            || later.methods.iter().any(|m| self.takes_method(m))
            || self.methods.iter().any(|m| later.takes_method(m));
        let named = !later.methods.is_empty() && overlap;
        let all_methods = later.methods_within(self);
        self.widens()
            && !later.widens()
            && overlap
            && later.paths.iter().any(|p| {
                self.paths
                    .iter()
                    .any(|e| e.covers(p, false) && (all_methods || named || !p.covers(e, false)))
            })
    }

    /// Whether `groups` may go through, given the module's access groups:
    /// `Err` with the groups one of which is missing.
    pub fn admits<'a>(&'a self, groups: &[String], module: &'a [String]) -> Result<(), &'a [String]> {
        let check = |need: &'a [String]| if may_access(groups, need) { Ok(()) } else { Err(need) };
        match &self.access {
            RuleAccess::Module => check(module),
            RuleAccess::AlsoModule(g) => check(module).and_then(|_| check(g)),
            RuleAccess::Instead(g) => check(g),
            RuleAccess::Public => Ok(()),
            RuleAccess::Deny => Err(&[]),
        }
    }

    /// Who the rule lets in, in words (for `unigate check`).
    pub fn describe(&self, module: &[String]) -> String {
        let list = |g: &[String]| {
            if g.len() == 1 && g[0] == EVERY_USER {
                "every user who signs in".to_string()
            } else {
                format!("members of {}", g.join(", "))
            }
        };
        let who = match &self.access {
            RuleAccess::Module => format!("{} (the module's groups)", list(module)),
            RuleAccess::AlsoModule(g) => format!("{} who are also {}", list(g), list(module)),
            RuleAccess::Instead(g) => format!("{} (instead of the module's groups)", list(g)),
            RuleAccess::Public => "everyone, without signing in".to_string(),
            RuleAccess::Deny => "no one".to_string(),
        };
        let age = self
            .max_login_age
            .map(|a| format!(", with a login at most {} old", humantime::format_duration(a)))
            .unwrap_or_default();
        let methods = if self.methods.is_empty() {
            String::new()
        } else {
            format!(" {}", self.methods.join("/"))
        };
        let paths: Vec<String> = self.paths.iter().map(RulePath::written).collect();
        format!("{}{methods}: {who}{age}", paths.join(", "))
    }
}

/// The first of `rules` that takes the request (`query`: its query
/// string, for `_method`).
pub fn first<'r>(
    rules: &'r [Rule],
    path: &str,
    method: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
) -> Option<&'r Rule> {
    if rules.is_empty() {
        return None;
    }
    // Every value of every override header, comma-separated lists split
    // (frameworks differ in which they take), and `_method` parameters.
    let mut overrides: Vec<Cow<'_, str>> = Vec::new();
    for (name, v) in headers {
        if is_override_header(name.as_str()) {
            let v = String::from_utf8_lossy(v.as_bytes());
            overrides.extend(v.split(',').map(|m| Cow::Owned(m.trim().to_string())));
        }
    }
    if let Some(q) = query {
        overrides.extend(
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| is_method_parameter(k))
                .map(|(_, v)| Cow::Owned(v.trim().to_string())),
        );
    }
    rules.iter().find(|r| r.matches(path, method, &overrides))
}

/// One of `METHOD_OVERRIDES`, also with `_` for `-` (CGI, PHP and Apache
/// pass both spellings on as the same variable).
fn is_override_header(name: &str) -> bool {
    name.len() >= 13
        && METHOD_OVERRIDES.iter().any(|h| {
            h.len() == name.len()
                && h.bytes()
                    .zip(name.bytes())
                    .all(|(a, b)| a == b.to_ascii_lowercase() || (a == b'-' && b == b'_'))
        })
}

/// A decoded query parameter name that a framework might read as
/// `_method`: in any case, and as PHP names parameters (a `.`, a space or
/// an unclosed `[` becomes `_`, so `.method` is `_method` there, and a
/// NUL ends the name). Names
/// with leading spaces, which PHP drops, count too: reading more names as
/// overrides only narrows what a widening rule takes.
fn is_method_parameter(name: &str) -> bool {
    // PHP reads a name up to its first NUL (`_method%00x`).
    let name = name.split('\0').next().unwrap_or_default();
    let trimmed = name.trim_start_matches(' ');
    let rest = match trimmed.as_bytes().first() {
        Some(b'_' | b'.' | b' ' | b'[') if trimmed.len() == 7 => &trimmed[1..],
        _ if trimmed.len() < name.len() => trimmed,
        _ => return false,
    };
    rest.eq_ignore_ascii_case("method")
}

#[cfg(test)]
mod tests;
