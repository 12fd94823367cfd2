//! unigate's sessions: what a logged-in browser is (`Session`, with its
//! identity, tokens and identity headers), where sessions are kept
//! (`store::Sessions`: in memory, `memory.rs`, or in Redis, `redis/`, with
//! this replica's copies in `replica.rs`), the module session cookies seen
//! issued (`module_cookies.rs`, read in every form `cookie_forms.rs`
//! knows), and the session cookie's value. The cookie holds only a random
//! 256-bit id; tokens stay here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;

use crate::config::settings::SessionSettings;

pub mod cookie_forms;
mod headers;
mod identity;
mod memory;
mod module_cookies;
pub mod redis;
pub mod replica;
pub mod store;
#[cfg(test)]
mod tests;
mod tokens;

pub use headers::HeaderSet;
pub use identity::Identity;
pub use memory::{LinkStore, MemoryStore};
pub use module_cookies::{CookieOwner, ModuleCookies, login_mark};
pub use store::Sessions;
pub use tokens::{IdToken, Tokens};

/// Wakes whatever waits on a session's end (`Session::revoked`) when a
/// session of its shard (serial modulo 64) ends; each waiter checks its
/// own. Shared by the sessions of a shard rather than one per session:
/// sessions are many and hold none, while a revocation wakes only about a
/// 64th of the long-lived responses in flight.
static REVOCATIONS: [tokio::sync::Notify; 64] = [const { tokio::sync::Notify::const_new() }; 64];

#[derive(Debug)]
pub struct Session {
    /// The route's label, shared with the route.
    pub module: Arc<str>,
    pub identity: Identity,
    /// The module's identity headers for this user, ready to send.
    pub headers: HeaderSet,
    /// Unique in this process: what the assertion signer keeps this
    /// session's assertion under.
    pub serial: u64,
    pub tokens: Mutex<Tokens>,
    /// Unix time the access token expires, readable without the lock.
    pub access_exp: AtomicU64,
    /// One refresh at a time per session.
    pub refreshing: AtomicBool,
    /// A refresh failed: the next navigation logs in again.
    pub needs_login: AtomicBool,
    /// The App Launcher (icon and menu of this user's modules), built once.
    pub launcher: Arc<str>,
    /// Logged in, but the module account is not linked yet: every request
    /// goes to the link page first.
    pub link_pending: bool,
    /// Ended (logout, back- or front-channel logout, admin, expiry): requests
    /// still holding it stop, and its long-lived responses are closed.
    revoked: AtomicBool,
    /// Unix time of the absolute timeout (0: not set).
    pub expires_at: u64,
    /// Unix time the shared store's idle expiry was last pushed out.
    pub touched: AtomicU64,
}

impl Session {
    /// When the user last logged in at the identity provider: the ID
    /// token's `auth_time` (None: not known).
    pub fn auth_time(&self) -> Option<u64> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.id_token.as_ref().and_then(IdToken::auth_time)
    }

    pub fn new(module: Arc<str>, identity: Identity, headers: HeaderSet, tokens: Tokens) -> Self {
        Session {
            module,
            identity,
            headers,
            serial: {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
            access_exp: AtomicU64::new(tokens.access_exp),
            tokens: Mutex::new(tokens),
            refreshing: AtomicBool::new(false),
            needs_login: AtomicBool::new(false),
            launcher: Arc::from(""),
            link_pending: false,
            revoked: AtomicBool::new(false),
            expires_at: 0,
            touched: AtomicU64::new(0),
        }
    }

    pub fn with_expiry(mut self, expires_at: u64) -> Self {
        self.expires_at = expires_at;
        self
    }

    fn revocations(&self) -> &'static tokio::sync::Notify {
        &REVOCATIONS[(self.serial % 64) as usize]
    }

    /// Ends the session for everything still holding it.
    pub fn revoke(&self) {
        if !self.revoked.swap(true, Ordering::AcqRel) {
            self.revocations().notify_waiters();
        }
    }

    /// Ends many sessions, waking each shard's waiters once rather than
    /// once per session.
    pub fn revoke_all<'a>(sessions: impl IntoIterator<Item = &'a Session>) -> usize {
        let (mut ended, mut shards) = (0, 0u64);
        for s in sessions {
            if !s.revoked.swap(true, Ordering::AcqRel) {
                ended += 1;
                shards |= 1 << (s.serial % 64);
            }
        }
        for (i, n) in REVOCATIONS.iter().enumerate() {
            if shards & (1 << i) != 0 {
                n.notify_waiters();
            }
        }
        ended
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Resolves once the session is revoked.
    pub async fn revoked(&self) {
        loop {
            let wait = self.revocations().notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            if self.is_revoked() {
                return;
            }
            wait.await;
        }
    }

    pub fn with_launcher(mut self, launcher: Arc<str>) -> Self {
        self.launcher = launcher;
        self
    }

    pub fn with_link_pending(mut self, pending: bool) -> Self {
        self.link_pending = pending;
        self
    }

    pub fn usable(&self) -> bool {
        !self.needs_login.load(Ordering::Acquire) && !self.is_revoked()
    }
}

/// Which sessions to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoke {
    /// Every session of one IdP session (`sid`).
    Sid(String),
    /// Every session of one user (`sub`).
    Sub(String),
    /// Every session of the user with this email (case-insensitive).
    Email(String),
}

/// The value of cookie `name` in `Cookie` header values, without allocating
/// (this runs on every request). The first occurrence wins.
pub fn cookie_value<'a>(headers: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a str> {
    cookie_values(headers, name).next()
}

/// Every value of the cookie `name` in these `Cookie` headers, in order (a
/// browser sends one per path and domain it was set for).
pub fn cookie_values<'a, 'n>(
    headers: impl Iterator<Item = &'a [u8]> + 'n,
    name: &'n str,
) -> impl Iterator<Item = &'a str> + 'n
where
    'a: 'n,
{
    headers.flat_map(|h| h.split(|b| *b == b';')).filter_map(move |pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        if pair[..eq].trim_ascii() != name.as_bytes() {
            return None;
        }
        let v = pair[eq + 1..].trim_ascii();
        let v = v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v);
        std::str::from_utf8(v).ok()
    })
}

/// A session id as unigate issues them: 43 base64url characters.
pub fn is_session_id(v: &str) -> bool {
    v.len() == 43 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
