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
        let iat = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
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
mod tests {
    use super::*;

    #[test]
    fn the_quick_filter_lets_every_listed_name_through_and_few_others() {
        let lists = [
            IDENTITY_HEADERS,
            IDENTITY_PREFIXES,
            &FORWARDED_HEADERS[..],
            &KASEYAONE_HEADERS[..],
            super::super::forwarded::FORWARDING_HEADERS,
            super::super::forwarded::PATH_OVERRIDE_HEADERS,
        ];
        for name in lists.iter().flat_map(|l| l.iter()) {
            assert!(may_be_special(name.as_bytes()), "{name}");
            assert!(
                may_be_special(name.replace('-', "_").to_uppercase().as_bytes()),
                "{name}"
            );
        }
        for common in [
            "host",
            "accept",
            "accept-encoding",
            "cookie",
            "user-agent",
            "content-type",
            "authorization",
            "sec-fetch-mode",
            "connection",
        ] {
            assert!(!may_be_special(common.as_bytes()), "{common}");
        }
    }

    #[test]
    fn every_spelling_is_an_identity_header() {
        for n in [
            "X-KaseyaOne-User",
            "x_kaseyaone_user",
            "X_KASEYAONE_EMAIL",
            "x-KaseyaOne-anything",
            "X-Forwarded-User",
            "x_forwarded_email",
            "X-Forwarded-Preferred_Username",
            "X-Unigate-Assertion",
            "x-auth-request-user",
            "Remote-User",
        ] {
            assert!(is_identity_header(n), "{n}");
        }
        for n in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "cookie",
            "accept",
            "x-request-id",
        ] {
            assert!(!is_identity_header(n), "{n}");
        }
    }

    /// Each spelling a client (or a CGI-style framework) could use.
    fn spellings(name: &str) -> Vec<String> {
        let mixed: String = name
            .chars()
            .enumerate()
            .map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c })
            .collect();
        let title: String = name
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map_or(String::new(), |f| f.to_ascii_uppercase().to_string() + c.as_str())
            })
            .collect::<Vec<_>>()
            .join("-");
        vec![
            name.to_string(),
            name.to_ascii_uppercase(),
            name.replace('-', "_"),
            title.replace('-', "_"),
            mixed.clone(),
            mixed.replace('-', "_"),
            title,
        ]
    }

    #[test]
    fn the_strip_list_in_every_spelling() {
        let named = [
            "remote-groups",
            "x-webauth-user",
            "x-webauth-groups",
            "x-webauth-email",
            "remote-email",
            "remote-name",
            "x-remote-group",
            "x-remote-groups",
            "x-authenticated-user",
            "x-auth-user",
            "x-ms-client-principal",
            "x-ms-client-principal-name",
            "x-ms-client-principal-id",
            "cf-access-jwt-assertion",
            "cf-access-authenticated-user-email",
            "x-goog-authenticated-user-email",
            "x-amzn-oidc-identity",
            "x-pomerium-jwt-assertion",
            "oidc-claim-email",
        ];
        let prefixed = IDENTITY_PREFIXES.iter().map(|p| format!("{p}anything"));
        let all: Vec<String> = IDENTITY_HEADERS
            .iter()
            .chain(FORWARDED_HEADERS.iter())
            .chain(KASEYAONE_HEADERS.iter())
            .chain(named.iter())
            .map(|s| s.to_string())
            .chain(prefixed)
            .collect();
        for name in &all {
            for n in spellings(name) {
                assert!(is_identity_header(&n), "{n}");
            }
        }
        // No length limit: a long name of a family is still one.
        let long = format!("x-kaseyaone-{}", "a".repeat(200));
        assert!(is_identity_header(&long));
        assert!(is_identity_header(&long.to_ascii_uppercase().replace('-', "_")));
        // Forwarding headers are `forwarded`'s, and ordinary headers pass.
        for n in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "cookie",
            "accept",
            "x-request-id",
            "authorization",
            "x-auth-token",
            "user-agent",
            "x-use",
            "remote",
            "x-kaseyaone",
        ] {
            assert!(!is_identity_header(n), "{n}");
        }
    }

    #[test]
    fn presets() {
        let id = Identity {
            sub: "s-1".into(),
            sid: Some("sid".into()),
            email: "a@x.example".into(),
            name: "A\r\nB".into(),
            username: "a".into(),
            company: "Acme".into(),
            groups: vec!["g1".into(), "g2".into()],
            module_user: None,
        };
        let k: Vec<_> = headers(&id, HeaderPreset::KaseyaOne, 100, "handle");
        assert_eq!(
            k,
            vec![
                ("x-kaseyaone-user", "a".to_string()),
                ("x-kaseyaone-email", "a@x.example".to_string()),
                ("x-kaseyaone-name", "AB".to_string()),
                ("x-kaseyaone-groups", "g1,g2".to_string()),
                ("x-kaseyaone-company", "Acme".to_string()),
                ("x-kaseyaone-session", "handle".to_string()),
            ]
        );
        assert!(k.iter().all(|(_, v)| v != "sid"), "the sid itself never goes");
        let f: Vec<_> = headers(&id, HeaderPreset::Forwarded, 100, "handle");
        assert_eq!(
            f,
            vec![
                ("x-forwarded-user", "s-1".to_string()),
                ("x-forwarded-email", "a@x.example".to_string()),
                ("x-forwarded-groups", "g1,g2".to_string()),
                ("x-forwarded-preferred-username", "a".to_string()),
            ]
        );
        let set: Vec<_> = header_set(&id, HeaderPreset::Forwarded, 100, "handle").iter().collect();
        assert_eq!(set.len(), 4);
        assert_eq!(set[1].0, "x-forwarded-email");
        assert_eq!(set[1].1, "a@x.example");
        assert_eq!(set[3].1, "a");
    }

    #[test]
    fn neither_the_headers_nor_the_assertion_carry_the_sid() {
        let sid = "idp-session-id-0123456789";
        let id = Identity {
            sub: "s-1".into(),
            sid: Some(sid.into()),
            email: "a@x.example".into(),
            name: "A".into(),
            username: "a".into(),
            company: "Acme".into(),
            groups: vec!["g".into()],
            module_user: Some("m".into()),
        };
        let key = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
        let signer = AssertionSigner::new(key, "unigate", Duration::from_secs(60), 10);
        let handle = signer.session_handle("portal", &id);
        assert!(!handle.is_empty() && handle != sid);
        assert_ne!(handle, signer.session_handle("crm", &id), "per module");
        for preset in [HeaderPreset::KaseyaOne, HeaderPreset::Forwarded] {
            for (n, v) in headers(&id, preset, 4096, &handle) {
                assert!(!v.contains(sid), "{n}: {v}");
            }
        }
        let jwt = signer.sign(&id, "portal", SystemTime::now()).unwrap();
        use base64::Engine;
        for part in jwt.split('.').take(2) {
            let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
            let text = String::from_utf8(text).unwrap();
            assert!(!text.contains(sid) && !text.contains("\"sid\""), "{text}");
        }
        let none = Identity { sid: None, ..id };
        assert_eq!(signer.session_handle("portal", &none), "");
    }

    #[test]
    fn values_are_sanitised() {
        assert_eq!(sanitize("a\r\nSet-Cookie: x", 100), "aSet-Cookie: x");
        assert_eq!(sanitize("äöü", 4), "äö");
        assert_eq!(sanitize("abc\0", 10), "abc");
    }

    #[test]
    fn a_comma_in_a_group_name_never_splits_it() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(groups_header(&g(&["a", "b"]), 4096), "a,b");
        assert_eq!(groups_header(&g(&["x,admins"]), 4096), "x%2Cadmins");
        assert_eq!(
            groups_header(&g(&["CN=Admins,OU=IT", "100%"]), 4096),
            "CN=Admins%2COU=IT,100%25"
        );
        assert_eq!(
            groups_header(&g(&["adm\u{7f}ins", "a\r\nb"]), 4096),
            "adm%7Fins,a%0D%0Ab"
        );
        assert_eq!(groups_header(&[], 4096), "");
        // Never cut inside a name: `admins-readonly` is not `admins`.
        assert_eq!(groups_header(&g(&["staff", "admins-readonly", "x"]), 12), "staff,x");
        assert_eq!(groups_header(&g(&["a%b"]), 4), "");
    }
}
