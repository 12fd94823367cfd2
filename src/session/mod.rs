//! unigate's sessions: what a logged-in browser is, the in-memory store
//! (moka, with idle and absolute timeouts), login transactions, and the
//! cookie codec. The cookie holds only a random 256-bit id; tokens stay here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;

use crate::gateway::config::SessionSettings;

pub mod redis;

/// Who the user is, as unigate passes it to modules.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub sub: String,
    pub sid: Option<String>,
    pub email: String,
    pub name: String,
    pub username: String,
    pub company: String,
    pub groups: Vec<String>,
    /// The module account this user is, when account matching or linking
    /// found one (it may differ from the KaseyaOne username).
    pub module_user: Option<String>,
}

/// Tokens kept server-side for refresh and logout.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    /// Unix time the access token expires.
    pub access_exp: u64,
}

/// Identity headers, built once per session rather than per request.
pub type HeaderSet = Vec<(&'static str, http::HeaderValue)>;

#[derive(Debug)]
pub struct Session {
    pub module: String,
    pub identity: Arc<Identity>,
    /// The module's identity headers for this user, ready to send.
    pub headers: HeaderSet,
    /// The last signed assertion and its expiry, reused while fresh.
    pub assertion: Mutex<Option<(http::HeaderValue, u64)>>,
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
    revoked_notify: tokio::sync::Notify,
    /// Unix time of the absolute timeout (0: not set).
    pub expires_at: u64,
    /// Unix time the shared store's idle expiry was last pushed out.
    pub touched: AtomicU64,
}

impl Session {
    pub fn new(module: String, identity: Identity, headers: HeaderSet, tokens: Tokens) -> Self {
        Session {
            module,
            identity: Arc::new(identity),
            headers,
            assertion: Mutex::new(None),
            access_exp: AtomicU64::new(tokens.access_exp),
            tokens: Mutex::new(tokens),
            refreshing: AtomicBool::new(false),
            needs_login: AtomicBool::new(false),
            launcher: Arc::from(""),
            link_pending: false,
            revoked: AtomicBool::new(false),
            revoked_notify: tokio::sync::Notify::new(),
            expires_at: 0,
            touched: AtomicU64::new(0),
        }
    }

    pub fn with_expiry(mut self, expires_at: u64) -> Self {
        self.expires_at = expires_at;
        self
    }

    /// Ends the session for everything still holding it.
    pub fn revoke(&self) {
        if !self.revoked.swap(true, Ordering::AcqRel) {
            self.revoked_notify.notify_waiters();
        }
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Resolves once the session is revoked.
    pub async fn revoked(&self) {
        loop {
            let wait = self.revoked_notify.notified();
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

/// Which index a key belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum By {
    Sid,
    Sub,
    Email,
}

/// Session ids by IdP session, user and (lowercased) email: plain maps
/// kept in step with the sessions (an expiry or removal takes its id out),
/// sharing the ids' allocations with the session cache.
#[derive(Default)]
struct Indexes(Mutex<IndexMap>);

/// An index key (which index, and the value) → the ids of its sessions.
type IndexMap = HashMap<(By, Box<str>), Vec<Arc<str>>>;

impl Indexes {
    fn keys(s: &Session) -> impl Iterator<Item = (By, String)> + '_ {
        let sid = s.identity.sid.iter().map(|v| (By::Sid, v.clone()));
        let sub = std::iter::once((By::Sub, s.identity.sub.clone()));
        let email = std::iter::once((By::Email, s.identity.email.to_lowercase()));
        sid.chain(sub).chain(email).filter(|(_, k)| !k.is_empty())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexMap> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, id: &Arc<str>, s: &Session) {
        let mut map = self.lock();
        for (by, key) in Self::keys(s) {
            let ids = map.entry((by, key.into_boxed_str())).or_default();
            if !ids.iter().any(|i| **i == **id) {
                ids.push(id.clone());
            }
        }
    }

    fn forget(&self, id: &str, s: &Session) {
        let mut map = self.lock();
        for (by, key) in Self::keys(s) {
            let k = (by, key.into_boxed_str());
            if let Some(ids) = map.get_mut(&k) {
                ids.retain(|i| **i != *id);
                if ids.is_empty() {
                    map.remove(&k);
                }
            }
        }
    }

    fn take(&self, by: By, key: &str) -> Vec<Arc<str>> {
        self.lock().remove(&(by, Box::from(key))).unwrap_or_default()
    }

    fn list(&self, by: By) -> Vec<String> {
        self.lock()
            .keys()
            .filter(|(b, _)| *b == by)
            .map(|(_, k)| k.to_string())
            .collect()
    }
}

/// Sessions in memory: gone after `idle_timeout` unused or
/// `absolute_timeout` after login, whichever comes first; indexed by IdP
/// session, user and email so that logouts can find them.
#[derive(Clone)]
pub struct MemoryStore {
    sessions: Cache<Arc<str>, Arc<Session>>,
    index: Arc<Indexes>,
}

impl MemoryStore {
    pub fn new(s: &SessionSettings) -> Self {
        let index = Arc::new(Indexes::default());
        let on_evict = index.clone();
        MemoryStore {
            sessions: Cache::builder()
                .max_capacity(s.max_sessions)
                .time_to_idle(s.idle_timeout)
                .time_to_live(s.absolute_timeout)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                // Expired, evicted or removed: whatever still holds it
                // stops too, and the indexes forget it (a replaced session
                // keeps its id's entries: its successor uses them).
                .eviction_listener(move |id: Arc<Arc<str>>, s: Arc<Session>, cause| {
                    s.revoke();
                    if cause != moka::notification::RemovalCause::Replaced {
                        on_evict.forget(&id, &s);
                    }
                })
                .build(),
            index,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.get(id)
    }

    pub fn insert(&self, id: String, s: Arc<Session>) {
        let id: Arc<str> = id.into();
        self.index.add(&id, &s);
        self.sessions.insert(id, s);
    }

    /// Takes a session out (logout); it is revoked.
    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.sessions.remove(id)?;
        s.revoke();
        Some(s)
    }

    /// Ends every session `what` names; returns how many were live.
    pub fn revoke(&self, what: &Revoke) -> usize {
        let ids = match what {
            Revoke::Sid(k) => self.index.take(By::Sid, k),
            Revoke::Sub(k) => self.index.take(By::Sub, k),
            Revoke::Email(k) => self.index.take(By::Email, &k.to_lowercase()),
        };
        ids.iter().filter(|id| self.remove(id).is_some()).count()
    }

    /// The IdP session ids (`sid`) with live sessions here.
    pub fn sids(&self) -> Vec<String> {
        self.index.list(By::Sid)
    }

    /// The users (`sub`) with sessions here.
    pub fn subs(&self) -> Vec<String> {
        self.index.list(By::Sub)
    }

    /// Expiries are noticed on access; this notices them now (and so
    /// closes what the expired sessions still hold open).
    pub fn housekeeping(&self) {
        self.sessions.run_pending_tasks();
    }

    pub fn len(&self) -> u64 {
        self.sessions.run_pending_tasks();
        self.sessions.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Account links: a KaseyaOne user (sub) to their account on one module
/// instance, made once on the link page. Only the module username is kept,
/// never the credentials that proved it.
#[derive(Clone)]
pub struct LinkStore {
    links: Cache<(String, String), Arc<str>>,
}

impl LinkStore {
    pub fn new(capacity: u64) -> Self {
        LinkStore {
            links: Cache::builder().max_capacity(capacity).build(),
        }
    }

    pub fn get(&self, sub: &str, route: &str) -> Option<Arc<str>> {
        self.links.get(&(sub.to_string(), route.to_string()))
    }

    pub fn insert(&self, sub: &str, route: &str, module_user: &str) {
        self.links
            .insert((sub.to_string(), route.to_string()), Arc::from(module_user));
    }
}

/// Who a module session cookie was issued to, and where it was set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CookieOwner {
    /// The KaseyaOne `sub`, or the module username of a local exception.
    #[serde(rename = "u")]
    pub user: Arc<str>,
    /// Issued in answer to a KaseyaOne session's request (else: a local
    /// exception's own login).
    #[serde(rename = "k")]
    pub kaseyaone: bool,
    /// The cookie's `Path` and `Domain` attributes, to expire it with.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// When the record ends (Unix seconds): when the cookie does.
    #[serde(rename = "e")]
    pub until: u64,
}

impl CookieOwner {
    /// The record of a cookie the module just set for `user`: it lasts as
    /// long as the cookie (`Max-Age`, else `Expires`; between a minute and
    /// 400 days), or `default_ttl` for a cookie that names no lifetime.
    pub fn of(c: &cookie::Cookie<'_>, user: &str, kaseyaone: bool, default_ttl: Duration, now: u64) -> CookieOwner {
        const MAX: u64 = 400 * 86_400;
        let life = match (c.max_age(), c.expires_datetime()) {
            (Some(age), _) => age.whole_seconds().max(0) as u64,
            (None, Some(at)) => (at.unix_timestamp().max(0) as u64).saturating_sub(now),
            (None, None) => default_ttl.as_secs(),
        };
        CookieOwner {
            user: Arc::from(user),
            kaseyaone,
            path: c.path().map(str::to_string),
            domain: c.domain().map(str::to_string),
            until: now + life.clamp(60, MAX),
        }
    }

    /// `Set-Cookie` values that expire this cookie wherever it was set:
    /// with its recorded `Path` and `Domain`, and at `Path=/` host-only.
    pub fn expiry(name: &str, owner: Option<&CookieOwner>) -> Vec<String> {
        const GONE: &str = "Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT";
        let mut out = vec![format!("{name}=; Path=/; {GONE}")];
        if let Some(o) = owner {
            let path = o.path.as_deref().unwrap_or("/");
            if path != "/" || o.domain.is_some() {
                let domain = o.domain.as_deref().map(|d| format!("; Domain={d}")).unwrap_or_default();
                out.push(format!("{name}=; Path={path}{domain}; {GONE}"));
            }
        }
        out
    }
}

/// Module cookie records end with their cookies.
struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<CookieOwner>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        owner: &Arc<CookieOwner>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Some(Duration::from_secs(owner.until.saturating_sub(now)))
    }

    fn expire_after_update(
        &self,
        key: &[u8; 32],
        owner: &Arc<CookieOwner>,
        updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, owner, updated_at)
    }
}

/// The module session cookies unigate saw the module issue: to KaseyaOne
/// sessions (so a logout or a user switch can keep them out) and to the
/// local exceptions of modules that require KaseyaOne. Keyed by the
/// SHA-256 of the cookie's value: the cookie itself is not kept.
#[derive(Clone)]
pub struct ModuleCookies {
    cookies: Cache<[u8; 32], Arc<CookieOwner>>,
    /// Cookies looked up in the shared store and not found, for a moment.
    misses: Cache<[u8; 32], ()>,
}

impl ModuleCookies {
    pub fn new(capacity: u64) -> Self {
        ModuleCookies {
            cookies: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .build(),
            misses: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(2))
                .build(),
        }
    }

    pub fn key(value: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(value.as_bytes()).into()
    }

    pub fn insert(&self, key: [u8; 32], owner: CookieOwner) {
        self.misses.invalidate(&key);
        self.cookies.insert(key, Arc::new(owner));
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<CookieOwner>> {
        self.cookies.get(key)
    }

    pub fn missed(&self, key: [u8; 32]) {
        self.misses.insert(key, ());
    }

    pub fn recently_missed(&self, key: &[u8; 32]) -> bool {
        self.misses.contains_key(key)
    }

    pub fn remove(&self, key: &[u8; 32]) {
        self.cookies.invalidate(key);
    }
}

/// A login in progress, from the redirect to the IdP to the callback.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoginTxn {
    /// SHA-256 of the browser's login cookie: only that browser may finish it.
    pub binding: String,
    pub nonce: String,
    pub verifier: String,
    pub return_path: String,
    pub module: usize,
    pub host: String,
}

/// Login transactions: bounded, short-lived, each used once.
#[derive(Clone)]
pub struct TxnStore {
    txns: Cache<String, Arc<LoginTxn>>,
}

impl TxnStore {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        TxnStore {
            txns: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
        }
    }

    pub fn insert(&self, state: String, t: LoginTxn) {
        self.txns.insert(state, Arc::new(t));
    }

    /// Takes the transaction out: a state works once.
    pub fn take(&self, state: &str) -> Option<Arc<LoginTxn>> {
        self.txns.remove(state)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_parsing() {
        let h = [b"a=1; unigate=abc; b=2".as_slice(), b"unigate=second".as_slice()];
        assert_eq!(cookie_value(h.iter().copied(), "unigate"), Some("abc"));
        assert_eq!(cookie_value(h.iter().copied(), "b"), Some("2"));
        assert_eq!(cookie_value(h.iter().copied(), "missing"), None);
        let twice: [&[u8]; 2] = [b"m=first; x=1", b"m=\"second\""];
        assert_eq!(
            cookie_values(twice.iter().copied(), "m").collect::<Vec<_>>(),
            ["first", "second"]
        );
        let q = [b"x=\"quoted\"".as_slice()];
        assert_eq!(cookie_value(q.iter().copied(), "x"), Some("quoted"));
        let odd = [b";;=;novalue; unigate =  spaced ;".as_slice()];
        assert_eq!(cookie_value(odd.iter().copied(), "unigate"), Some("spaced"));
        let bad = [b"unigate=\xff\xfe".as_slice()];
        assert_eq!(cookie_value(bad.iter().copied(), "unigate"), None);
        assert!(is_session_id(&"a".repeat(43)));
        assert!(!is_session_id(&"a".repeat(42)));
        assert!(!is_session_id(&format!("{}=", "a".repeat(42))));
    }

    #[test]
    fn txn_is_single_use() {
        let s = TxnStore::new(10, Duration::from_secs(60));
        s.insert(
            "st".into(),
            LoginTxn {
                binding: "b".into(),
                nonce: "n".into(),
                verifier: "v".into(),
                return_path: "/".into(),
                module: 0,
                host: "h".into(),
            },
        );
        assert!(s.take("st").is_some());
        assert!(s.take("st").is_none());
    }

    #[test]
    fn module_cookie_records_last_as_long_as_their_cookies_and_expire_where_set() {
        let now = 1_800_000_000;
        let day = Duration::from_secs(86_400);
        let parse = |v: &str| cookie::Cookie::parse(v.to_string()).unwrap();
        let o = CookieOwner::of(&parse("s=v; Max-Age=7200; Path=/app"), "alice", true, day, now);
        assert_eq!(o.until, now + 7200);
        assert_eq!(o.path.as_deref(), Some("/app"));
        let o = CookieOwner::of(
            &parse("s=v; Expires=Wed, 21 Oct 2037 07:28:00 GMT"),
            "a",
            true,
            day,
            now,
        );
        assert_eq!(o.until, 2_139_722_880.min(now + 400 * 86_400));
        let o = CookieOwner::of(&parse("s=v"), "a", true, day, now);
        assert_eq!(
            o.until,
            now + 86_400,
            "a browser-session cookie: the configured default"
        );
        let o = CookieOwner::of(&parse("s=v; Max-Age=5"), "a", true, day, now);
        assert_eq!(o.until, now + 60, "at least a minute");

        let plain = CookieOwner::expiry("s", Some(&CookieOwner::of(&parse("s=v"), "a", true, day, now)));
        assert_eq!(plain, ["s=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"]);
        let scoped = CookieOwner::of(&parse("s=v; Path=/app; Domain=example.com"), "a", true, day, now);
        let set = CookieOwner::expiry("s", Some(&scoped));
        assert_eq!(set.len(), 2);
        assert!(
            set[1].starts_with("s=; Path=/app; Domain=example.com; Max-Age=0"),
            "{set:?}"
        );
        let json = serde_json::to_string(&scoped).unwrap();
        assert_eq!(serde_json::from_str::<CookieOwner>(&json).unwrap(), scoped);
    }

    #[test]
    fn the_indexes_follow_the_sessions() {
        let settings = SessionSettings {
            redis: None,
            idle_timeout: Duration::from_secs(60),
            absolute_timeout: Duration::from_secs(600),
            max_sessions: 100,
            refresh_before: Duration::from_secs(60),
            login_starts_per_minute: 10,
            module_cookie_ttl: Duration::from_secs(60),
        };
        let store = MemoryStore::new(&settings);
        let session = |sid: &str| {
            let id = Identity {
                sub: "u-1".into(),
                sid: Some(sid.into()),
                email: "Alice@Example.com".into(),
                name: String::new(),
                username: String::new(),
                company: String::new(),
                groups: Vec::new(),
                module_user: None,
            };
            let tokens = Tokens {
                id_token: None,
                refresh_token: None,
                access_exp: 0,
            };
            Arc::new(Session::new("m".into(), id, Vec::new(), tokens))
        };
        store.insert("a".into(), session("s-1"));
        store.insert("b".into(), session("s-2"));
        assert_eq!(store.subs(), ["u-1"]);
        let mut sids = store.sids();
        sids.sort();
        assert_eq!(sids, ["s-1", "s-2"]);
        // A logout of one session takes its id out of every index.
        assert!(store.remove("a").is_some());
        store.housekeeping();
        assert_eq!(store.sids(), ["s-2"]);
        assert_eq!(store.subs(), ["u-1"], "the user still has a session");
        // Revoking by email (any case) ends the rest and empties the indexes.
        assert_eq!(store.revoke(&Revoke::Email("ALICE@example.com".into())), 1);
        store.housekeeping();
        assert!(store.sids().is_empty() && store.subs().is_empty());
        assert!(store.is_empty());
    }
}
