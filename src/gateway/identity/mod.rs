//! Identity to the module: every client-sent identity header is removed
//! (all case and `_`/`-` spellings), then unigate's own are set from the
//! session, with a signed assertion (`X-Unigate-Assertion`, ES256, ≤ 60 s)
//! that a module can verify with the keys at `/_unigate/jwks.json`.
//! The KaseyaOne session id (`sid`) is never among them: a module gets an
//! opaque per-module session handle instead (`X-KaseyaOne-Session`), which
//! no logout endpoint accepts.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::config::HeaderPreset;
use crate::crypto::keys::{KeyError, SigningKey};
use crate::session::Identity;

pub const ASSERTION_HEADER: &str = "x-unigate-assertion";

/// Header names (lowercase, `-` separated) that carry identity beyond the
/// presets' own (`FORWARDED_HEADERS`; every `x-kaseyaone-` name is a
/// prefix below), and the prefixes of whole families of them: what other
/// authenticating proxies (oauth2-proxy, Authelia, Authentik, Grafana's
/// auth proxy, Azure App Service, Cloudflare Access, Google IAP, AWS ALB,
/// Pomerium, Vouch, mod_auth_openidc, Envoy's client certificates) hand to
/// the applications behind them. A module written for one of them would
/// believe a client that sent one. The one list: `is_identity_header`.
pub const IDENTITY_HEADERS: &[&str] = &[
    "x-forwarded-access-token",
    "x-remote-user",
    "x-remote-email",
    "x-remote-name",
    "x-remote-group",
    "x-remote-groups",
    "remote-user",
    "remote-email",
    "remote-name",
    "remote-group",
    "remote-groups",
    "x-user",
    "x-email",
    "x-username",
    "x-user-id",
    "x-user-email",
    "x-user-name",
    "x-user-groups",
    "x-authenticated-user",
    "x-authenticated-userid",
    "x-authenticated-email",
    "x-authenticated-groups",
    "x-auth-user",
    "x-auth-email",
    "x-auth-groups",
    "x-auth-username",
    "x-goog-iap-jwt-assertion",
    "x-forwarded-client-cert",
    "x-client-cert",
    "x-client-dn",
    "x-client-verify",
    "ssl-client-cert",
    "ssl-client-verify",
];
pub const IDENTITY_PREFIXES: &[&str] = &[
    "x-kaseyaone-",
    "x-unigate-",
    "x-auth-request-",
    "x-webauth-",
    "x-ms-client-principal",
    "x-ms-token-",
    "cf-access-",
    "x-goog-authenticated-user-",
    "x-amzn-oidc-",
    "x-pomerium-",
    "x-vouch-",
    "oidc-claim-",
    "oidc-access-token",
    "oidc-id-token",
    "x-ssl-client-",
    "authentik-",
    "x-authentik-",
];

/// Takes every identity header, in any spelling, out of a request bound
/// for a module (no `Vec` unless there is one).
pub fn strip_identity_headers(up: &mut pingora::http::RequestHeader) {
    if up.headers.keys().any(|n| is_identity_header(n.as_str())) {
        let spoofed: Vec<http::header::HeaderName> = up
            .headers
            .keys()
            .filter(|n| is_identity_header(n.as_str()))
            .cloned()
            .collect();
        for n in spoofed {
            up.remove_header(&n);
        }
    }
}

/// `name` begins like `pattern` (lowercase, `-`): case and `_`/`-` do not
/// matter.
fn starts_like(name: &[u8], pattern: &str) -> bool {
    name.len() >= pattern.len()
        && name
            .iter()
            .zip(pattern.bytes())
            .all(|(&a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// True for any spelling of an identity header, of any length: case and
/// `_`/`-` do not matter.
pub fn is_identity_header(name: &str) -> bool {
    let n = name.as_bytes();
    if !may_be_special(n) {
        return false;
    }
    let exact = |p: &str| n.len() == p.len() && starts_like(n, p);
    IDENTITY_HEADERS.iter().any(|p| exact(p))
        || FORWARDED_HEADERS.iter().any(|p| exact(p))
        || IDENTITY_PREFIXES.iter().any(|p| starts_like(n, p))
}

/// Whether a header name could be one unigate takes out of a client's
/// request (identity, forwarding, path override), judged by its first two
/// bytes: the common headers (host, accept, cookie, user-agent,
/// content-*, sec-*, authorization) are let through at once, since this
/// runs for every header of every request. Every listed name and prefix
/// passes it (a unit test keeps it so).
pub fn may_be_special(name: &[u8]) -> bool {
    let [a, b, ..] = name else { return false };
    let b = if *b == b'_' { b'-' } else { b.to_ascii_lowercase() };
    matches!(
        (a.to_ascii_lowercase(), b),
        (b'x', b'-')
            | (b'r', b'e')
            | (b'f', _)
            | (b't', b'r')
            | (b'c', b'f')
            | (b'a', b'u')
            | (b'o', b'i')
            | (b's', b's')
    ) && !name.eq_ignore_ascii_case(b"authorization")
}

/// A header value safe to forward: no control characters (CR, LF, NUL…),
/// at most `max` bytes, cut on a character boundary.
pub fn sanitize(v: &str, max: usize) -> String {
    let mut out = String::with_capacity(v.len().min(max));
    for c in v.chars() {
        if c.is_control() {
            continue;
        }
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// The header names of each preset, in the order their values are built
/// (the KaseyaOne preset's last one only when a module account is known).
const KASEYAONE_HEADERS: [&str; 7] = [
    "x-kaseyaone-user",
    "x-kaseyaone-email",
    "x-kaseyaone-name",
    "x-kaseyaone-groups",
    "x-kaseyaone-company",
    // The module's session handle (see `handles`), never the `sid`.
    "x-kaseyaone-session",
    "x-kaseyaone-module-user",
];
const FORWARDED_HEADERS: [&str; 4] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    // The module account, when matching or linking named one.
    "x-forwarded-preferred-username",
];
const _: () = assert!(KASEYAONE_HEADERS.len() <= crate::session::HeaderSet::MAX);

/// The groups as one header value of at most `max` bytes: names joined by
/// `,`, with a `,`, a `%` or a control character inside a name
/// percent-encoded (`CN=Admins%2COU=IT`), so that no name ever reads as
/// another to a module that splits on commas (`x,admins` is not `admins`,
/// nor is `adm\u{7f}ins`). Groups that do not fit whole are left out,
/// never cut. (The assertion carries them as a JSON list, unencoded.)
pub fn groups_header(groups: &[String], max: usize) -> String {
    let mut out = String::new();
    for g in groups {
        let mut one = String::with_capacity(g.len());
        for c in g.chars() {
            match c {
                ',' => one.push_str("%2C"),
                '%' => one.push_str("%25"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        one.push_str(&format!("%{b:02X}"));
                    }
                }
                c => one.push(c),
            }
        }
        let sep = usize::from(!out.is_empty());
        if out.len() + sep + one.len() > max {
            continue;
        }
        if sep == 1 {
            out.push(',');
        }
        out.push_str(&one);
    }
    out
}

/// The names and sanitised values of a preset's identity headers;
/// `session` is the module's session handle (empty without a `sid`).
fn header_values(
    id: &Identity,
    preset: HeaderPreset,
    max: usize,
    session: &str,
) -> (&'static [&'static str], Vec<String>) {
    let groups = groups_header(&id.groups, max);
    let v = |s: &str| sanitize(s, max);
    match preset {
        HeaderPreset::KaseyaOne => {
            let mut values = vec![
                v(&id.username),
                v(&id.email),
                v(&id.name),
                v(&groups),
                v(&id.company),
                v(session),
            ];
            if let Some(u) = &id.module_user {
                values.push(v(u));
            }
            (&KASEYAONE_HEADERS[..values.len()], values)
        }
        HeaderPreset::Forwarded => (
            &FORWARDED_HEADERS,
            vec![
                v(&id.sub),
                v(&id.email),
                v(&groups),
                v(id.module_user.as_deref().unwrap_or(&id.username)),
            ],
        ),
    }
}

/// The identity headers of a preset, values sanitised; `session`: the
/// module's session handle (`AssertionSigner::session_handle`).
pub fn headers(id: &Identity, preset: HeaderPreset, max: usize, session: &str) -> Vec<(&'static str, String)> {
    let (names, values) = header_values(id, preset, max, session);
    names.iter().copied().zip(values).collect()
}

/// The headers of a preset as ready-to-send values.
pub fn header_set(id: &Identity, preset: HeaderPreset, max: usize, session: &str) -> crate::session::HeaderSet {
    let (names, values) = header_values(id, preset, max, session);
    crate::session::HeaderSet::new(names, values)
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    email: &'a str,
    name: &'a str,
    preferred_username: &'a str,
    groups: &'a [String],
    /// The module account (matched or linked), when it differs or was checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    module_user: Option<&'a str>,
    iat: u64,
    exp: u64,
}

/// Signs the assertion a module may verify.
pub struct AssertionSigner {
    pub key: SigningKey,
    pub issuer: String,
    pub ttl: Duration,
    /// Assertions for reuse, by session serial: each kept for half its
    /// lifetime, and only for the most recently used sessions, so that
    /// memory does not grow with idle sessions.
    cache: moka::sync::Cache<u64, http::HeaderValue>,
    /// Derives the session handles modules get (and logout form tokens).
    pub deployment: super::handles::DeploymentKey,
}

impl AssertionSigner {
    /// `cached`: how many sessions' assertions are kept for reuse.
    pub fn new(key: SigningKey, issuer: &str, ttl: Duration, cached: u64) -> AssertionSigner {
        AssertionSigner {
            key,
            issuer: issuer.into(),
            ttl,
            cache: moka::sync::Cache::builder()
                .max_capacity(cached)
                .time_to_live((ttl / 2).max(Duration::from_secs(1)))
                .build(),
            deployment: super::handles::DeploymentKey::random(),
        }
    }

    /// The same, with the deployment key every replica shares.
    pub fn with_deployment_key(mut self, key: super::handles::DeploymentKey) -> AssertionSigner {
        self.deployment = key;
        self
    }

    /// What module `label` gets as `X-KaseyaOne-Session` for this identity:
    /// a keyed hash of its `sid`, or nothing without one.
    pub fn session_handle(&self, label: &str, id: &Identity) -> String {
        match id.sid.as_deref().filter(|s| !s.is_empty()) {
            Some(sid) => self.deployment.session_handle(label, sid),
            None => String::new(),
        }
    }

    /// The session's assertion: a kept one while it has more than half its
    /// life left, else a newly signed one. Signing is the costliest step of
    /// an authenticated request, so it happens at most every `ttl / 2` for
    /// a session in use.
    pub fn for_session(&self, s: &crate::session::Session, now: SystemTime) -> Result<http::HeaderValue, KeyError> {
        if let Some(v) = self.cache.get(&s.serial) {
            return Ok(v);
        }
        let jwt = self.sign(&s.identity, &s.module, now)?;
        let v = http::HeaderValue::from_str(&jwt).map_err(|_| KeyError::Sign)?;
        self.cache.insert(s.serial, v.clone());
        Ok(v)
    }

    pub fn sign(&self, id: &Identity, module: &str, now: SystemTime) -> Result<String, KeyError> {
        let iat = crate::clock::unix(now);
        self.key.sign(
            "JWT",
            &AssertionClaims {
                iss: &self.issuer,
                aud: module,
                sub: &id.sub,
                email: &id.email,
                name: &id.name,
                preferred_username: &id.username,
                groups: &id.groups,
                module_user: id.module_user.as_deref(),
                iat,
                exp: iat + self.ttl.as_secs(),
            },
        )
    }
}

#[cfg(test)]
mod tests;
