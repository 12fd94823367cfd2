//! unigate's sessions: what a logged-in browser is, the in-memory store
//! (moka, with idle and absolute timeouts), login transactions, and the
//! cookie codec. The cookie holds only a random 256-bit id; tokens stay here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;

use crate::config::settings::SessionSettings;

pub mod cookie_forms;
pub mod redis;

/// Who the user is, as unigate passes it to modules.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub sub: Box<str>,
    /// (`Box<str>`, not `String`, here and below: every session holds one.)
    pub sid: Option<Box<str>>,
    pub email: Box<str>,
    pub name: Box<str>,
    pub username: Box<str>,
    pub company: Box<str>,
    pub groups: Vec<String>,
    /// The module account this user is, when account matching or linking
    /// found one (it may differ from the KaseyaOne username).
    pub module_user: Option<Box<str>>,
}

impl Identity {
    /// The identity of user `sub` with the attributes the provider gave
    /// (no module account yet).
    pub fn from_profile(sub: &str, sid: Option<&str>, p: crate::oidc::claims::Profile) -> Identity {
        Identity {
            sub: sub.into(),
            sid: sid.map(Into::into),
            email: p.email.unwrap_or_default().into(),
            name: p.name.unwrap_or_default().into(),
            username: p.username.unwrap_or_default().into(),
            company: p.company.unwrap_or_default().into(),
            groups: p.groups.unwrap_or_default(),
            module_user: None,
        }
    }
}

/// Tokens kept server-side for refresh and logout.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub id_token: Option<IdToken>,
    pub refresh_token: Option<Box<str>>,
    /// Unix time the access token expires.
    pub access_exp: u64,
    /// How many refreshes these tokens are from the login: a replica takes
    /// tokens from the shared record only when they are newer.
    pub generation: u64,
}

/// An ID token kept for `id_token_hint` at logout, in three quarters of its
/// size: its three base64url parts decoded. A token that would not come
/// back byte for byte (padding, stray bits, not three parts) is kept as
/// it came.
#[derive(Clone, PartialEq, Eq)]
pub struct IdToken {
    bytes: Box<[u8]>,
    /// Where the decoded payload and signature start; `RAW` when `bytes`
    /// is the token's text.
    splits: [u32; 2],
}

impl IdToken {
    const RAW: [u32; 2] = [u32::MAX; 2];

    pub fn new(jwt: &str) -> IdToken {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        let decoded = (|| {
            let mut parts = jwt.split('.');
            let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || jwt.len() >= u32::MAX as usize {
                return None;
            }
            let mut bytes = B64.decode(h).ok()?;
            let second = bytes.len() as u32;
            bytes.extend(B64.decode(p).ok()?);
            let third = bytes.len() as u32;
            bytes.extend(B64.decode(s).ok()?);
            let t = IdToken {
                bytes: bytes.into(),
                splits: [second, third],
            };
            (t.jwt() == jwt).then_some(t)
        })();
        decoded.unwrap_or_else(|| IdToken {
            bytes: jwt.as_bytes().into(),
            splits: Self::RAW,
        })
    }

    /// The token as the identity provider issued it.
    pub fn jwt(&self) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        if self.splits == Self::RAW {
            return String::from_utf8_lossy(&self.bytes).into_owned();
        }
        let [second, third] = self.splits.map(|i| i as usize);
        let b = &self.bytes;
        format!(
            "{}.{}.{}",
            B64.encode(&b[..second]),
            B64.encode(&b[second..third]),
            B64.encode(&b[third..])
        )
    }

    /// Kept decoded (not as it came)?
    pub fn is_decoded(&self) -> bool {
        self.splits != Self::RAW
    }
}

impl std::fmt::Debug for IdToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdToken(..)")
    }
}

/// Identity headers, built once per session rather than per request. The
/// values sit in one buffer: a session holds one allocation for all of
/// them, and a request takes slices of it (a reference count each, no
/// copy). The names are the preset's static list.
#[derive(Debug, Clone, Default)]
pub struct HeaderSet {
    values: bytes::Bytes,
    names: &'static [&'static str],
    /// Where each value ends in `values` (it starts where the last ended).
    ends: [u16; HeaderSet::MAX],
    /// Values that are not valid header values (bit per header): left out.
    invalid: u8,
}

impl HeaderSet {
    /// The most headers a set holds (a preset has at most seven).
    pub const MAX: usize = 7;

    /// `values[i]` is the value of `names[i]`.
    pub fn new(names: &'static [&'static str], values: Vec<String>) -> HeaderSet {
        let names = &names[..names.len().min(values.len()).min(Self::MAX)];
        let mut buf = Vec::with_capacity(values.iter().map(String::len).sum());
        let mut ends = [0; Self::MAX];
        let mut invalid = 0;
        for (i, v) in values.iter().take(names.len()).enumerate() {
            // Beyond 64 KiB in all (values are at most 8 KiB each) or not
            // a header value: left out.
            if http::HeaderValue::from_str(v).is_err() || buf.len() + v.len() > u16::MAX as usize {
                invalid |= 1 << i;
            } else {
                buf.extend_from_slice(v.as_bytes());
            }
            ends[i] = buf.len() as u16;
        }
        HeaderSet {
            values: buf.into(),
            names,
            ends,
            invalid,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len() - self.invalid.count_ones() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The headers, ready to send.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, http::HeaderValue)> + '_ {
        let ends = &self.ends[..self.names.len()];
        let starts = std::iter::once(0).chain(ends.iter().copied());
        self.names
            .iter()
            .zip(starts.zip(ends.iter().copied()))
            .enumerate()
            .filter(|(i, _)| self.invalid & (1 << i) == 0)
            .filter_map(|(_, (name, (start, end)))| {
                let v = self.values.slice(start as usize..end as usize);
                http::HeaderValue::from_maybe_shared(v).ok().map(|v| (*name, v))
            })
    }
}

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

/// Which index a key belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum By {
    Sid,
    Sub,
}

/// Session ids by IdP session and user: plain maps
/// kept in step with the sessions (an expiry or removal takes its id out),
/// sharing the ids' allocations with the session cache. Keyed by a keyed
/// hash of the value, so no session pays for a copy of its sid, sub and
/// email here; two values with one hash only put one more session in front
/// of `MemoryStore::revoke`, which checks each.
#[derive(Default)]
struct Indexes {
    map: Mutex<IndexMap>,
    hasher: std::collections::hash_map::RandomState,
}

/// An index key (which index, and the value's hash) → the ids of its
/// sessions (nearly always one: kept inline).
type IndexMap = HashMap<(By, u64), smallvec::SmallVec<[Arc<str>; 1]>>;

impl Indexes {
    fn key(&self, by: By, value: &str) -> (By, u64) {
        use std::hash::BuildHasher;
        (by, self.hasher.hash_one(value))
    }

    /// By email there is no index: only an administrator revokes by
    /// email, and a pass over the sessions (about 5 ms per 100,000) costs
    /// less than an index entry in every session.
    fn keys(&self, s: &Session) -> impl Iterator<Item = (By, u64)> {
        let id = &s.identity;
        let sid = id
            .sid
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| self.key(By::Sid, v));
        let sub = Some(&id.sub).filter(|v| !v.is_empty()).map(|v| self.key(By::Sub, v));
        [sid, sub].into_iter().flatten()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, id: &Arc<str>, s: &Session) {
        let keys: smallvec::SmallVec<[_; 2]> = self.keys(s).collect();
        let mut map = self.lock();
        for k in keys {
            Self::put(&mut map, k, id);
        }
    }

    fn put(map: &mut IndexMap, k: (By, u64), id: &Arc<str>) {
        let ids = map.entry(k).or_default();
        if !ids.iter().any(|i| **i == **id) {
            ids.push(id.clone());
        }
    }

    fn forget(&self, id: &str, s: &Session) {
        let keys: smallvec::SmallVec<[_; 2]> = self.keys(s).collect();
        let mut map = self.lock();
        for k in keys {
            if let Some(ids) = map.get_mut(&k) {
                ids.retain(|i| **i != *id);
                if ids.is_empty() {
                    map.remove(&k);
                }
            }
        }
    }

    /// The ids under `value`'s key, taken out; `keep` says which are
    /// really `value`'s (the others share its hash and are put back).
    /// `keep` runs without the index lock: it may look in the session
    /// cache, whose eviction listener takes that lock.
    fn take(&self, by: By, value: &str, keep: impl Fn(&Arc<str>) -> bool) -> Vec<Arc<str>> {
        let k = self.key(by, value);
        let Some(ids) = self.lock().remove(&k) else {
            return Vec::new();
        };
        let (taken, others): (Vec<_>, Vec<_>) = ids.into_iter().partition(|id| keep(id));
        if !others.is_empty() {
            let mut map = self.lock();
            for id in &others {
                Self::put(&mut map, k, id);
            }
        }
        taken
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Sessions in memory: gone after `idle_timeout` unused or
/// `absolute_timeout` after login, whichever comes first (the cache tracks
/// idleness; the absolute deadline is each session's `expires_at`, checked
/// on every lookup, which spares the cache a second queue entry per
/// session); indexed by IdP
/// session and user so that logouts can find them (an administrator's
/// revocation by email looks through them all).
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
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                // Expired, evicted or removed: whatever still holds it
                // stops too, and the indexes forget it. (A replaced session
                // is `replace`'s to revoke, and keeps its id's entries: its
                // successor uses them.)
                .eviction_listener(move |id: Arc<Arc<str>>, s: Arc<Session>, cause| {
                    if cause != moka::notification::RemovalCause::Replaced {
                        s.revoke();
                        on_evict.forget(&id, &s);
                    }
                })
                .build(),
            index,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.get_at(id, crate::clock::unix_now())
    }

    /// The session, if live at `now` (Unix seconds).
    pub fn get_at(&self, id: &str, now: u64) -> Option<Arc<Session>> {
        let s = self.sessions.get(id)?;
        if s.expires_at != 0 && s.expires_at <= now {
            // Past its absolute timeout: ended now.
            self.remove(id);
            return None;
        }
        Some(s)
    }

    pub fn insert(&self, id: String, s: Arc<Session>) {
        let id: Arc<str> = id.into();
        self.index.add(&id, &s);
        self.sessions.insert(id, s);
    }

    /// Puts `new` in the place of `old` under the same id (a link), unless
    /// `old` has ended meanwhile: false then, and nothing is stored. The
    /// old object is revoked (replaced), so whatever held it stops.
    pub fn replace(&self, id: &str, old: &Arc<Session>, new: Arc<Session>) -> bool {
        use moka::ops::compute::{CompResult, Op};
        let id: Arc<str> = id.into();
        let done = self.sessions.entry(id.clone()).and_compute_with(|e| match e {
            Some(e) if Arc::ptr_eq(e.value(), old) && !old.is_revoked() => Op::Put(new.clone()),
            _ => Op::Nop,
        });
        if !matches!(done, CompResult::ReplacedWith(_)) {
            return false;
        }
        // A logout may have taken `old` out between the look and the put
        // (moka locks the key for each, not across both); its listener has
        // revoked `old` by the time the put could go in.
        if old.is_revoked() {
            self.remove(&id);
            return false;
        }
        old.revoke();
        self.index.add(&id, &new);
        true
    }

    /// Takes a session out (logout); it is revoked.
    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.sessions.remove(id)?;
        s.revoke();
        Some(s)
    }

    /// Ends every session `what` names; returns how many were live.
    pub fn revoke(&self, what: &Revoke) -> usize {
        let (by, value) = match what {
            Revoke::Sid(k) => (By::Sid, k),
            Revoke::Sub(k) => (By::Sub, k),
            Revoke::Email(k) => {
                let lower = |v: &str| v.chars().flat_map(char::to_lowercase).collect::<String>();
                let want = lower(k);
                let ids: Vec<Arc<str>> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| !s.identity.email.is_empty() && lower(&s.identity.email) == want)
                    .map(|(id, _)| (*id).clone())
                    .collect();
                return ids.iter().filter(|id| self.remove(id).is_some()).count();
            }
        };
        let named = |s: &Session| match by {
            By::Sid => s.identity.sid.as_deref() == Some(value.as_str()),
            _ => *s.identity.sub == **value,
        };
        // A session already gone is dropped from the index too.
        let ids = self
            .index
            .take(by, value, |id| self.sessions.get(id).is_none_or(|s| named(&s)));
        ids.iter().filter(|id| self.remove(id).is_some()).count()
    }

    /// The IdP session ids (`sid`) with live sessions here.
    pub fn sids(&self) -> Vec<String> {
        self.listed(|s| s.identity.sid.as_deref().map(str::to_string))
    }

    /// The users (`sub`) with sessions here.
    pub fn subs(&self) -> Vec<String> {
        self.listed(|s| Some(s.identity.sub.to_string()))
    }

    fn listed(&self, f: impl Fn(&Session) -> Option<String>) -> Vec<String> {
        let mut out: Vec<String> = self.sessions.iter().filter_map(|(_, s)| f(&s)).collect();
        out.sort();
        out.dedup();
        out
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
    /// Set `Secure` (or named so that it must be): its expiry is too.
    #[serde(rename = "s", default, skip_serializing_if = "std::ops::Not::not")]
    pub secure: bool,
    /// The KaseyaOne login it was issued under (a hash of the IdP session's
    /// `sid`): after a new login of the same user it is not let through.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub login: Option<u64>,
}

/// A KaseyaOne login's mark in module cookie records: the first 8 bytes of
/// SHA-256 of its `sid` (the same on every replica).
pub fn login_mark(sid: &str) -> u64 {
    let h = redis::id_hash(sid);
    u64::from_be_bytes(h[..8].try_into().unwrap_or_default())
}

/// Whether a browser only takes or removes this cookie with `Secure`.
fn prefixed_secure(name: &str) -> bool {
    name.starts_with("__Secure-") || name.starts_with("__Host-")
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
            secure: c.secure().unwrap_or(false) || prefixed_secure(c.name()),
            login: None,
        }
    }

    /// Where the browser keeps a cookie set without `Path`: the directory of
    /// the request's path (RFC 6265 §5.1.4), e.g. `/app` for `/app/login`.
    pub fn set_at(mut self, request_path: &str) -> Self {
        if self.path.is_none() {
            let dir = match request_path.rfind('/') {
                Some(i) if i > 0 && request_path.starts_with('/') => &request_path[..i],
                _ => "/",
            };
            self.path = Some(dir.to_string());
        }
        self
    }

    /// Issued under the KaseyaOne login with this `sid` (if the IdP sent one).
    pub fn in_login(mut self, sid: Option<&str>) -> Self {
        self.login = sid.filter(|s| !s.is_empty()).map(login_mark);
        self
    }

    /// Whether it was issued under the login with this `sid` (records of a
    /// login without `sid` know only their user).
    pub fn same_login(&self, sid: Option<&str>) -> bool {
        self.login.is_none_or(|mark| sid.is_some_and(|s| login_mark(s) == mark))
    }

    /// `Set-Cookie` values that expire this cookie wherever it was set:
    /// with its recorded `Path` and `Domain`, and at `Path=/` host-only;
    /// `Secure` where it was (a browser ignores a `__Secure-` or `__Host-`
    /// cookie without it).
    pub fn expiry(name: &str, owner: Option<&CookieOwner>) -> Vec<String> {
        const GONE: &str = "Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT";
        let secure = if prefixed_secure(name) || owner.is_some_and(|o| o.secure) {
            "; Secure"
        } else {
            ""
        };
        let mut out = vec![format!("{name}=; Path=/{secure}; {GONE}")];
        if let Some(o) = owner.filter(|_| !name.starts_with("__Host-")) {
            let path = o.path.as_deref().unwrap_or("/");
            if path != "/" || o.domain.is_some() {
                let domain = o.domain.as_deref().map(|d| format!("; Domain={d}")).unwrap_or_default();
                out.push(format!("{name}=; Path={path}{domain}{secure}; {GONE}"));
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

    pub fn key(value: impl AsRef<[u8]>) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(value.as_ref()).into()
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

        // Set without Path at /app/login: the browser keeps it at /app.
        let o = CookieOwner::of(&parse("s=v"), "a", true, day, now).set_at("/app/login");
        assert_eq!(o.path.as_deref(), Some("/app"));
        for (at, dir) in [("/login", "/"), ("/", "/"), ("", "/"), ("/a/b/", "/a/b")] {
            let o = CookieOwner::of(&parse("s=v"), "a", true, day, now).set_at(at);
            assert_eq!(o.path.as_deref(), Some(dir), "{at}");
        }
        let o = CookieOwner::of(&parse("s=v; Path=/x"), "a", true, day, now).set_at("/app/login");
        assert_eq!(o.path.as_deref(), Some("/x"), "an explicit Path wins");
        // Secure cookies are expired with Secure; __Host- ones only at /.
        let o = CookieOwner::of(&parse("s=v; Secure; Path=/app"), "a", true, day, now);
        assert!(
            CookieOwner::expiry("s", Some(&o))
                .iter()
                .all(|c| c.contains("; Secure;"))
        );
        assert!(!plain[0].contains("Secure"));
        let host = CookieOwner::of(&parse("__Host-s=v; Secure; Path=/"), "a", true, day, now);
        assert_eq!(
            CookieOwner::expiry("__Host-s", Some(&host)),
            ["__Host-s=; Path=/; Secure; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"]
        );
        assert!(CookieOwner::expiry("__Secure-s", None)[0].contains("; Secure;"));
        // The login it was issued under.
        let o = CookieOwner::of(&parse("s=v"), "a", true, day, now).in_login(Some("sid-1"));
        assert!(o.same_login(Some("sid-1")));
        assert!(!o.same_login(Some("sid-2")) && !o.same_login(None));
        let o = CookieOwner::of(&parse("s=v"), "a", true, day, now).in_login(None);
        assert!(o.same_login(Some("sid-2")), "no sid at issue: the user decides");
        let o = CookieOwner::of(&parse("s=v; Secure"), "a", true, day, now).in_login(Some("sid-1"));
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<CookieOwner>(&json).unwrap(), o);
    }

    #[tokio::test]
    async fn a_revocation_wakes_the_waiters_of_its_sessions() {
        let sessions: Vec<Arc<Session>> = (0..3).map(|i| bare_session(&format!("u-{i}"), "s", "e")).collect();
        let waiters: Vec<_> = sessions
            .iter()
            .map(|s| {
                let s = s.clone();
                tokio::spawn(async move { s.revoked().await })
            })
            .collect();
        let mut waiters = waiters.into_iter();
        let first = waiters.next().unwrap();
        tokio::task::yield_now().await;
        sessions[0].revoke();
        tokio::time::timeout(Duration::from_secs(1), first)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            waiters.as_slice().iter().all(|w| !w.is_finished()),
            "only its own waiter"
        );
        assert_eq!(Session::revoke_all(sessions.iter().map(|s| &**s)), 2);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(1), w).await.unwrap().unwrap();
        }
    }

    #[test]
    fn a_replacement_never_brings_an_ended_session_back() {
        let store = MemoryStore::new(&small_store());
        let old = bare_session("u-1", "s-1", "a@example.com");
        store.insert("a".into(), old.clone());
        let linked = bare_session("u-1", "s-1", "a@example.com");
        assert!(store.replace("a", &old, linked.clone()));
        assert!(old.is_revoked(), "whatever held the old object stops");
        assert!(Arc::ptr_eq(&store.get("a").unwrap(), &linked));
        // A stale predecessor replaces nothing.
        assert!(!store.replace("a", &old, bare_session("u-1", "s-1", "a@example.com")));
        assert!(Arc::ptr_eq(&store.get("a").unwrap(), &linked));
        // Ended (a logout) before the replacement lands: nothing is stored.
        assert_eq!(store.revoke(&Revoke::Sid("s-1".into())), 1);
        assert!(!store.replace("a", &linked, bare_session("u-1", "s-1", "a@example.com")));
        assert!(store.get("a").is_none());
        assert_eq!(store.revoke(&Revoke::Sub("u-1".into())), 0);
    }

    #[test]
    fn the_indexes_follow_the_sessions() {
        let store = MemoryStore::new(&small_store());
        let session = |sid: &str| bare_session("u-1", sid, "Alice@Example.com");
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
        assert_eq!(store.index.len(), 0, "the indexes are emptied");
    }

    /// A session with only a user, an IdP session and an email.
    fn bare_session(sub: &str, sid: &str, email: &str) -> Arc<Session> {
        let id = Identity {
            sub: sub.into(),
            sid: Some(sid.into()),
            email: email.into(),
            name: "".into(),
            username: "".into(),
            company: "".into(),
            groups: Vec::new(),
            module_user: None,
        };
        let tokens = Tokens {
            id_token: None,
            refresh_token: None,
            access_exp: 0,
            generation: 0,
        };
        Arc::new(Session::new("m".into(), id, HeaderSet::default(), tokens))
    }

    fn small_store() -> SessionSettings {
        SessionSettings {
            redis: None,
            idle_timeout: Duration::from_secs(60),
            absolute_timeout: Duration::from_secs(600),
            max_sessions: 100,
            refresh_before: Duration::from_secs(60),
            login_starts_per_minute: 10,
            module_cookie_ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_revoke_ends_only_the_sessions_it_names_even_when_hashes_meet() {
        let store = MemoryStore::new(&small_store());
        let session = |sub: &str, sid: &str| bare_session(sub, sid, &format!("{sub}@example.com"));
        store.insert("a".into(), session("u-1", "s-1"));
        store.insert("b".into(), session("u-2", "s-2"));
        // Pretend u-2's session sits under u-1's key too (a hash collision).
        let k = store.index.key(By::Sub, "u-1");
        Indexes::put(&mut store.index.lock(), k, &Arc::from("b"));
        assert_eq!(store.revoke(&Revoke::Sub("u-1".into())), 1);
        assert!(store.get("a").is_none());
        assert!(store.get("b").is_some(), "the other user's session lives on");
        // It stays findable under its own keys.
        assert_eq!(store.revoke(&Revoke::Sid("s-2".into())), 1);
        assert!(store.get("b").is_none());
    }

    #[test]
    fn a_header_set_gives_back_each_valid_value_under_its_name() {
        static NAMES: [&str; 4] = ["x-a", "x-b", "x-c", "x-d"];
        let set = HeaderSet::new(
            &NAMES,
            vec!["one".into(), "bad\u{7f}".into(), String::new(), "zwei ü".into()],
        );
        let got: Vec<_> = set.iter().map(|(n, v)| (n, v.as_bytes().to_vec())).collect();
        assert_eq!(
            got,
            [
                ("x-a", b"one".to_vec()),
                ("x-c", Vec::new()),
                ("x-d", "zwei ü".as_bytes().to_vec())
            ]
        );
        assert_eq!(set.len(), 3);
        assert!(HeaderSet::default().is_empty());
    }

    #[test]
    fn an_id_token_is_kept_decoded_and_given_back_byte_for_byte() {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        let jwt = format!(
            "{}.{}.{}",
            B64.encode(r#"{"alg":"ES256","kid":"k1"}"#),
            B64.encode(r#"{"iss":"https://idp.example","sub":"u-1","aud":"c","exp":1800000000}"#),
            B64.encode([7u8; 64])
        );
        let t = IdToken::new(&jwt);
        assert!(t.is_decoded(), "a canonical token is decoded");
        assert_eq!(t.jwt(), jwt);
        // Anything that would not come back the same is kept as it came.
        for odd in [
            format!("{jwt}="),
            "a.b".into(),
            "not a token".into(),
            format!("{jwt}.x"),
            "a.b.c.".into(),
        ] {
            let t = IdToken::new(&odd);
            assert!(!t.is_decoded(), "{odd}");
            assert_eq!(t.jwt(), odd);
        }
        // A last base64 character with stray low bits decodes, but would
        // not re-encode to the same text.
        let stray = format!("{}.e30.AB", B64.encode("{}"));
        assert_eq!(IdToken::new(&stray).jwt(), stray);
        assert_eq!(format!("{:?}", IdToken::new(&jwt)), "IdToken(..)");
    }
}
