//! The module session cookies unigate saw the module issue, and to whom.

use super::*;

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
        let now = crate::clock::unix_now();
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
