//! Who is asking: unigate's assertion, trusted only once verified against
//! unigate's published keys, or the portal's own session cookie, read as
//! leniently as the frameworks legacy portals are built on.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, header};
use jsonwebtoken::jwk::JwkSet;

use super::{COOKIE, DemoModule, Who};
use crate::crypto::random_token;
use crate::oidc::id_token::{ProviderKeys, verify_signature};

impl DemoModule {
    async fn keys(&self, force: bool) -> Option<ProviderKeys> {
        {
            let k = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((keys, at)) = k.as_ref()
                && (!force || at.elapsed() < Duration::from_secs(10))
            {
                return Some(keys.clone());
            }
        }
        let set: JwkSet = self.http.get(&self.cfg.jwks_url).send().await.ok()?.json().await.ok()?;
        let keys = ProviderKeys::from_jwks(&set);
        *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = Some((keys.clone(), std::time::Instant::now()));
        Some(keys)
    }

    /// The identity unigate asserts, once its signature, audience and
    /// expiry check out. Plain identity headers alone are never trusted.
    pub(super) async fn asserted(&self, headers: &HeaderMap) -> Option<serde_json::Value> {
        let jwt = headers.get("x-unigate-assertion")?.to_str().ok()?;
        let mut keys = self.keys(false).await?;
        let mut verified = verify_signature(jwt, &keys, &[jsonwebtoken::Algorithm::ES256]);
        if verified.is_err() {
            keys = self.keys(true).await?;
            verified = verify_signature(jwt, &keys, &[jsonwebtoken::Algorithm::ES256]);
        }
        let (_, claims) = verified.ok()?;
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        let fresh = claims["exp"].as_u64().is_some_and(|e| e > now);
        let ours = claims["aud"].as_str() == Some(self.cfg.name.as_str()) && claims["iss"] == "unigate";
        (fresh && ours).then_some(claims)
    }

    /// The portal's own session, read as leniently as the frameworks
    /// legacy portals are built on: any value of the cookie (PHP and Rack
    /// read the first, Django the last), its name as PHP mangles it
    /// (`portal.session`, `portal%5fsession`), its value quoted, with
    /// Python's octal escapes, or percent-encoded. unigate's checks must
    /// hold against the most lenient reader.
    pub(super) fn local_session(&self, headers: &HeaderMap) -> Option<(String, Who)> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let pairs = headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
            .filter_map(|pair| {
                let pair = String::from_utf8_lossy(pair).into_owned();
                let (n, v) = pair.split_once('=')?;
                Some((n.trim().to_string(), v.trim().to_string()))
            });
        for (name, value) in pairs {
            let name = lenient_decode(&name).replace(['.', ' '], "_");
            if !name.eq_ignore_ascii_case(COOKIE) {
                continue;
            }
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(python_unescape);
            // Express: a leading quote drops the first and last characters.
            let express = value
                .strip_prefix('"')
                .and_then(|v| v.char_indices().last().map(|(i, _)| v[..i].to_string()));
            let candidates = [
                Some(value.clone()),
                unquoted.clone(),
                Some(lenient_decode(&value)),
                unquoted.as_deref().map(lenient_decode),
                express.clone(),
                express.as_deref().map(lenient_decode),
            ];
            for id in candidates.into_iter().flatten() {
                if let Some(who) = sessions.get(&id) {
                    return Some((id, who.clone()));
                }
            }
        }
        None
    }

    pub(super) fn open_session(&self, who: Who) -> String {
        let id = random_token();
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), who);
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax")
    }
}

/// Percent-decoding as PHP's `urldecode` (`+` is a space).
fn lenient_decode(v: &str) -> String {
    let plus = v.replace('+', " ");
    form_urlencoded::parse(format!("x={}", plus.replace('&', "%26").replace('=', "%3D")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or(plus)
}

/// Python's `http.cookies._unquote` escapes: `\ooo` octal, `\c` is `c`.
fn python_unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.len() >= i + 4 && b[i] == b'\\' && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        if octal {
            out.push(
                (b[i + 1] - b'0')
                    .wrapping_mul(64)
                    .wrapping_add((b[i + 2] - b'0') * 8 + (b[i + 3] - b'0')),
            );
            i += 4;
        } else if b[i] == b'\\' && i + 1 < b.len() {
            out.push(b[i + 1]);
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Who is asking: a verified unigate assertion (opening the portal's own
/// session for that user if needed), or the portal's own session.
pub(super) async fn whoami(m: &DemoModule, headers: &HeaderMap) -> (Option<Who>, Option<String>) {
    if let Some(c) = m.asserted(headers).await {
        // The module account unigate matched or linked, else the KaseyaOne username.
        let username = c["module_user"].as_str().or(c["preferred_username"].as_str());
        let who = Who {
            username: username.unwrap_or_default().to_string(),
            email: c["email"].as_str().unwrap_or_default().to_string(),
            via_kaseyaone: true,
        };
        return match m.local_session(headers) {
            Some((_, existing)) if existing == who => (Some(who), None),
            _ => {
                let cookie = m.open_session(who.clone());
                (Some(who), Some(cookie))
            }
        };
    }
    (m.local_session(headers).map(|(_, w)| w), None)
}
