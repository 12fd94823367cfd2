//! Module session cookies as the module could read them: every value of
//! every cookie whose name a framework could read as one of the module's
//! `session_cookies`, each in every form frameworks decode it to (see
//! `session::cookie_forms`). The logout refusal, the user-switch check and
//! the local exceptions of Require Log In with KaseyaOne all decide on
//! these readings; a request with too many is refused, never cut short.

use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::config::ModuleConfig;
use super::{Gateway, client_kind, respond};
use crate::pages;
use crate::session::CookieOwner;
use crate::session::cookie_forms::{self, MAX_READINGS, Reading, TooMany};
use crate::session::redis::StoreError;

impl Gateway {
    /// Every reading of `module`'s session cookies in the request.
    pub(super) fn module_cookie_readings(
        &self,
        req: &RequestHeader,
        module: &ModuleConfig,
    ) -> Result<Vec<Reading>, TooMany> {
        if module.session_cookies.is_empty() {
            return Ok(Vec::new());
        }
        cookie_forms::readings(
            req.headers.get_all(http::header::COOKIE).iter().map(|v| v.as_bytes()),
            &module.session_cookies,
            MAX_READINGS,
        )
    }

    /// Whom the module issued a reading to, in any of its forms (one owner
    /// per form found).
    pub(super) async fn reading_owners(&self, r: &Reading) -> Result<Vec<Arc<CookieOwner>>, StoreError> {
        let mut owners = Vec::new();
        for f in &r.forms {
            if let Some(o) = self.module_cookie_owner(f).await? {
                owners.push(o);
            }
        }
        Ok(owners)
    }
}

/// The bit of `strip_cookies` for the configured name at `index` (the
/// last bit stands for every name from 63 on).
pub fn strip_bit(index: usize) -> u64 {
    1u64 << index.min(63)
}

/// `Set-Cookie` values expiring a reading under the name it was sent
/// with, when that is not the configured name and a browser could have
/// stored it (a cookie-name token).
pub fn raw_name_expiry(r: &Reading, configured: &str, owner: Option<&CookieOwner>) -> Vec<String> {
    let token = !r.raw_name.is_empty()
        && r.raw_name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if r.raw_name == configured || !token {
        return Vec::new();
    }
    CookieOwner::expiry(&r.raw_name, owner)
}

/// More module session cookie values than any browser sends: refused
/// (a page for browsers, JSON for API clients), not partly checked.
pub async fn too_many(session: &mut PSession, module: &ModuleConfig) -> Result<bool> {
    tracing::warn!(module.name = %module.label(), limit = MAX_READINGS, decision = "deny", "request refused: too many module session cookie values");
    if client_kind(session.req_header()) == crate::policy::ClientKind::Api {
        let body = serde_json::json!({
            "error": "invalid_request",
            "error_description": format!("more than {MAX_READINGS} values of the module's session cookies"),
        });
        return respond(session, 400, "application/json", &[], body.to_string()).await;
    }
    let headers: Vec<(&str, String)> = module
        .session_cookies
        .iter()
        .flat_map(|c| CookieOwner::expiry(c, None))
        .map(|c| ("set-cookie", c))
        .collect();
    respond(
        session,
        400,
        "text/html; charset=utf-8",
        &headers,
        pages::too_many_cookies(&module.display_name),
    )
    .await
}
