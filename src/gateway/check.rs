//! What `unigate check` tells an operator beyond "ok": how each module's
//! access is decided, where the user's attributes come from, and (when
//! the provider's discovery could be read) the claim mappings and scopes
//! that will not work with this provider. Pure: the discovery document is
//! a parameter.

use serde_json::Value;

use super::config::GatewayConfig;
use crate::oidc::claims::{ClaimPath, UserinfoMode};
use crate::policy::EVERY_USER;

/// One line for the operator: a problem makes `check` fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Info(String),
    /// Works, but should change (a deprecated key).
    Warning(String),
    Problem(String),
}

/// The top-level claim a path reads (`realm_access` for
/// `realm_access.roles`; the whole name when it has no dots or is a URL).
fn top_claim(path: &ClaimPath) -> &str {
    let p = path.as_str();
    if p.contains("://") {
        p
    } else {
        p.split('.').next().unwrap_or(p)
    }
}

pub fn notes(cfg: &GatewayConfig, discovery: Option<&Value>) -> Vec<Note> {
    let mut out: Vec<Note> = cfg.warnings.iter().cloned().map(Note::Warning).collect();
    let idp = &cfg.idp;
    for m in cfg.modules.iter().filter(|m| m.chooser.is_empty()) {
        let who = if m.access_groups.len() == 1 && m.access_groups[0] == EVERY_USER {
            "every user who signs in (access_groups = [\"*\"])".to_string()
        } else {
            format!("members of {}", m.access_groups.join(", "))
        };
        out.push(Note::Info(format!("module `{}`: open to {who}", m.label())));
        for (n, r) in m.rules.iter().enumerate() {
            out.push(Note::Info(format!(
                "module `{}`: rule[{n}] {}",
                m.label(),
                r.describe(&m.access_groups)
            )));
        }
        if m.unified_login {
            out.push(Note::Info(format!(
                "module `{}`: login = \"{}\" ({})",
                m.label(),
                m.login.as_str(),
                match m.login {
                    crate::config::route::LoginMode::Optional =>
                        "without a KaseyaOne session the module's own login decides; module credentials work",
                    crate::config::route::LoginMode::Automatic => "every unauthenticated navigation goes to KaseyaOne",
                    crate::config::route::LoginMode::Required =>
                        "module credentials refused except for local_exceptions",
                }
            )));
        }
    }
    let map = &idp.claims;
    let source = match idp.userinfo {
        UserinfoMode::Auto => "the ID token, or UserInfo when the ID token lacks a claim",
        UserinfoMode::Always => "the ID token, updated by UserInfo at every login and refresh",
        UserinfoMode::Never => "the ID token only",
    };
    let shown = |p: &ClaimPath| {
        if p.is_unused() {
            "(not used)".to_string()
        } else {
            format!("`{}`", p.as_str())
        }
    };
    out.push(Note::Info(format!(
        "user attributes from {source}: groups {}, username {}, email {}, name {}, company {}",
        shown(&map.groups),
        shown(&map.username),
        shown(&map.email),
        shown(&map.name),
        shown(&map.company)
    )));
    let Some(d) = discovery else { return out };
    let named = d.get("issuer").and_then(Value::as_str).unwrap_or_default();
    if named.trim_end_matches('/') != idp.issuer.trim_end_matches('/') {
        out.push(Note::Problem(format!(
            "the provider's discovery names issuer `{named}`, not identity_provider.issuer `{}`: unigate would refuse to start its logins",
            idp.issuer
        )));
    }
    let list = |k: &str| -> Option<Vec<&str>> {
        d.get(k)?
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
    };
    if idp.userinfo != UserinfoMode::Never && d.get("userinfo_endpoint").and_then(Value::as_str).is_none() {
        let text = "the provider has no userinfo_endpoint: every claim must be in the ID token";
        out.push(if idp.userinfo == UserinfoMode::Always {
            Note::Problem(format!("identity_provider.userinfo = \"always\", but {text}"))
        } else {
            Note::Info(text.into())
        });
    }
    if let Some(supported) = list("claims_supported") {
        // Providers often leave custom claims out of claims_supported: a
        // hint, not a verdict.
        for (attribute, path) in [
            ("groups", &map.groups),
            ("username", &map.username),
            ("email", &map.email),
            ("name", &map.name),
            ("company", &map.company),
        ] {
            if path.is_unused() || supported.contains(&top_claim(path)) {
                continue;
            }
            let consequence = match attribute {
                "groups" => "users will have no groups, and modules that name groups will refuse them",
                "company" => "UserInfo is asked at every login for it; set `company = \"\"` if this provider has none",
                _ => "the attribute will be empty",
            };
            out.push(Note::Info(format!(
                "identity_provider.claims.{attribute} = `{}`: the provider's claims_supported does not list `{}` (custom claims are often left out of it); if its tokens and UserInfo lack it, {consequence}",
                path.as_str(),
                top_claim(path)
            )));
        }
    }
    if let Some(scopes) = list("scopes_supported") {
        let groups = top_claim(&map.groups);
        if !map.groups.is_unused() && scopes.contains(&groups) && !idp.scopes.iter().any(|s| s == groups) {
            out.push(Note::Info(format!(
                "the provider offers a `{groups}` scope that identity_provider.scopes does not ask for: without it the `{groups}` claim may be left out"
            )));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(idp_extra: &str, access_groups: &str) -> GatewayConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "s3cret-s3cret-s3cret").unwrap();
        let text = format!(
            r#"
            [listen]
            address = "127.0.0.1:8080"
            public_url = "http://localhost:8080"
            [identity_provider]
            issuer = "https://idp.example"
            client_id = "unigate"
            client_secret = "file:secret"
            {idp_extra}
            [[module]]
            name = "portal"
            hosts = ["portal.localhost"]
            upstream = "127.0.0.1:8081"
            access_groups = {access_groups}
            "#
        );
        let path = dir.path().join("unigate.toml");
        std::fs::write(&path, text).unwrap();
        GatewayConfig::load(&path).unwrap()
    }

    fn texts(notes: &[Note]) -> String {
        notes
            .iter()
            .map(|n| match n {
                Note::Info(t) => format!("info: {t}"),
                Note::Warning(t) => format!("warning: {t}"),
                Note::Problem(t) => format!("problem: {t}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn deprecated_keys_are_warned_about_and_the_login_mode_spelled_out() {
        // (The access groups are the last line of the module's table.)
        let t = texts(&notes(&cfg("", "[\"*\"]\nlocal_login = false"), None));
        assert!(
            t.contains("warning: module[0].login: `local_login = false` is deprecated and will be removed; write `login = \"automatic\"`"),
            "{t}"
        );
        assert!(
            t.contains(
                "info: module `portal`: login = \"automatic\" (every unauthenticated navigation goes to KaseyaOne)"
            ),
            "{t}"
        );
        let t = texts(&notes(&cfg("", "[\"*\"]\nlogin = \"automatic\""), None));
        assert!(!t.contains("warning:"), "{t}");
    }

    #[test]
    fn access_and_attribute_sources_are_spelled_out() {
        let t = texts(&notes(&cfg("", r#"["*"]"#), None));
        assert!(
            t.contains("module `portal`: open to every user who signs in (access_groups = [\"*\"])"),
            "{t}"
        );
        assert!(t.contains("groups `groups`"), "{t}");
        let t = texts(&notes(&cfg("", r#"["a", "b"]"#), None));
        assert!(t.contains("open to members of a, b"), "{t}");
    }

    #[test]
    fn a_mapping_the_provider_does_not_support_is_explained() {
        let c = cfg(
            "[identity_provider.claims]\ngroups = \"realm_access.roles\"",
            r#"["a"]"#,
        );
        let d = json!({"claims_supported": ["sub", "email", "name", "preferred_username", "groups"]});
        let t = texts(&notes(&c, Some(&d)));
        assert!(
            t.contains("claims_supported does not list `realm_access`") && t.contains("will refuse them"),
            "{t}"
        );
        let d = json!({"claims_supported": ["sub", "email", "name", "preferred_username", "realm_access"]});
        let t = texts(&notes(&c, Some(&d)));
        assert!(!t.contains("does not list `realm_access`"), "{t}");
        // The default `company` with a provider that has none: UserInfo at
        // every login, and how to stop it.
        assert!(
            t.contains("does not list `company`") && t.contains("company = \"\""),
            "{t}"
        );
    }

    #[test]
    fn a_groups_scope_not_asked_for_and_a_missing_userinfo_endpoint_are_explained() {
        let d = json!({"scopes_supported": ["openid", "groups"]});
        let t = texts(&notes(&cfg("", r#"["a"]"#), Some(&d)));
        assert!(t.contains("offers a `groups` scope"), "{t}");
        let with_scope = cfg(r#"scopes = ["openid", "groups"]"#, r#"["a"]"#);
        assert!(!texts(&notes(&with_scope, Some(&d))).contains("offers a"));
        let always = cfg(r#"userinfo = "always""#, r#"["a"]"#);
        let n = notes(&always, Some(&json!({"issuer": "https://idp.example"})));
        assert!(
            !n.iter()
                .any(|n| matches!(n, Note::Problem(t) if t.contains("names issuer")))
        );
        let n = notes(&always, Some(&json!({"issuer": "https://other.example"})));
        assert!(
            n.iter()
                .any(|n| matches!(n, Note::Problem(t) if t.contains("names issuer")))
        );
        assert!(
            n.iter()
                .any(|n| matches!(n, Note::Problem(t) if t.contains("no userinfo_endpoint")))
        );
    }
}
