//! Checks of single keys, each reporting into the list of every problem
//! (pure, like all of `validate`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use super::validate::{AccountsReads, SourceReads};
use super::{AccountsFile, AccountsSource, Choice, ClaimsFile, MatchOn};
use crate::config::ConfigErrors;

/// `access_groups`: at least one group, or `["*"]` alone for every user
/// who signs in. `None`: an instance that inherits its module's.
pub(super) fn check_access_groups(groups: Option<&Vec<String>>, key: &str, errs: &mut ConfigErrors) {
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
pub(super) fn claim_map(file: Option<&ClaimsFile>, errs: &mut ConfigErrors) -> crate::oidc::claims::ClaimMap {
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

pub(super) fn check_hosts(
    raw: &[String],
    key: &str,
    seen: &mut HashSet<String>,
    errs: &mut ConfigErrors,
) -> Vec<String> {
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
pub(super) fn check_upstreams(
    one: Option<&str>,
    many: &[String],
    key: &str,
    errs: &mut ConfigErrors,
) -> Vec<SocketAddr> {
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

/// `[module.accounts]`, checked; `None` when its source is unusable
/// (reported). Its token or file is read by `resolve`.
pub(super) fn accounts(a: &AccountsFile, key: &str, errs: &mut ConfigErrors) -> Option<AccountsReads> {
    let k = |s: &str| format!("{key}.{s}");
    let match_on = choice(a.match_on.as_ref(), MatchOn::Both, &k("match"), errs, |other| {
        format!("`{other}` is not `email`, `username` or `both`")
    });
    let source = match &a.source {
        Choice::Known(AccountsSource::Scim) => {
            if let Some(u) = &a.scim_url
                && !matches!(
                    Url::parse(u).map(|u| u.scheme().to_string()).as_deref(),
                    Ok("http" | "https")
                )
            {
                errs.push(k("scim_url"), "must be an http or https URL");
            }
            Some(SourceReads::Scim {
                url: a.scim_url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
                token: a.token.clone(),
            })
        }
        Choice::Known(AccountsSource::File) => match &a.file {
            Some(f) => Some(SourceReads::File(f.clone())),
            None => {
                errs.push(k("file"), "`source = \"file\"` needs `file`");
                None
            }
        },
        Choice::Unknown(other) => {
            errs.push(k("source"), format!("`{other}` is not `scim` or `file`"));
            None
        }
    };
    let provisioning = a.provisioning.unwrap_or(false);
    if provisioning && a.source == Choice::Known(AccountsSource::File) {
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
    Some(AccountsReads {
        source: source?,
        match_on,
        cache_ttl,
        provisioning,
        default_role: a.default_role.clone(),
    })
}

/// A key that takes one of a few words: its value, `default` when it is
/// not given; a word outside the set is reported at `key` with
/// `message(word)`, and `default` used.
pub(super) fn choice<T: Copy>(
    value: Option<&Choice<T>>,
    default: T,
    key: &str,
    errs: &mut ConfigErrors,
    message: impl FnOnce(&str) -> String,
) -> T {
    match value {
        None => default,
        Some(Choice::Known(v)) => *v,
        Some(Choice::Unknown(word)) => {
            errs.push(key, message(word));
            default
        }
    }
}

/// `headers` (`[identity]` and `[[module]]`) not a preset.
pub(super) fn preset_message(other: &str) -> String {
    format!("`{other}` is not a preset; use `kaseyaone` or `forwarded`")
}
