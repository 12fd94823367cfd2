//! The provider's short-lived state: login flows, IdP sessions, authorization
//! codes, grants, refresh tokens, access-token ids, reset links and failed-login
//! counters. All of it lives in bounded moka caches with a TTL, so hostile
//! traffic cannot grow it without limit. Codes and tokens are stored under
//! their SHA-256, never as themselves.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use super::config::{IdpConfig, LoginConfig};
use super::directory::UserId;
use super::oauth::AuthRequest;

pub use crate::crypto::random_token;
pub use crate::rate::{RateCounter, client_key};

/// The key a secret token is stored under.
pub fn token_key(token: &str) -> String {
    B64.encode(Sha256::digest(token.as_bytes()))
}

/// Where a login stands, kept between the form posts.
#[derive(Clone, Debug)]
pub struct LoginFlow {
    /// SHA-256 of the browser's flow cookie: the flow only continues in the
    /// browser that started it.
    pub binding: String,
    /// The authorization request to finish, or `None` for a login to the
    /// IdP's own home page.
    pub request: Option<Arc<AuthRequest>>,
    pub username: String,
    pub company: String,
    /// The password step's result, kept server-side past the code step: a
    /// wrong code returns to the code step whatever the password was, and
    /// the password is asked again only once a right code shows it was
    /// wrong, so no page is a password oracle.
    pub password_ok: bool,
    pub stage: Stage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Identify,
    Password,
    Code,
}

/// A logged-in browser at the IdP.
#[derive(Debug)]
pub struct IdpSession {
    pub sid: String,
    pub user: UserId,
    /// Updated when the same user authenticates again (`prompt=login`, `max_age`).
    pub auth_time: std::sync::atomic::AtomicU64,
    /// Clients that got a code under this session, to be told at logout.
    pub clients: Mutex<BTreeSet<String>>,
    /// Grants issued under this session, revoked at logout; `None` once the
    /// session has ended, so no grant can join it afterwards.
    pub grants: Mutex<Option<Vec<String>>>,
}

impl IdpSession {
    pub fn new(sid: String, user: UserId, auth_time: u64) -> Self {
        IdpSession {
            sid,
            user,
            auth_time: auth_time.into(),
            clients: Default::default(),
            grants: Mutex::new(Some(Vec::new())),
        }
    }
}

/// An issued authorization code.
#[derive(Debug)]
pub struct CodeRecord {
    pub request: Arc<AuthRequest>,
    pub user: UserId,
    pub sid: String,
    pub auth_time: u64,
    pub issued: Instant,
    /// Set at the first redemption; a second redemption revokes this grant.
    pub redeemed: Mutex<Option<String>>,
}

/// What a code exchange granted: the root of a refresh-token family.
#[derive(Debug)]
pub struct Grant {
    pub client_id: String,
    pub user: UserId,
    pub sid: String,
    pub scope: String,
    pub auth_time: u64,
    pub revoked: AtomicBool,
}

impl Grant {
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release)
    }
}

#[derive(Debug)]
pub struct RefreshRecord {
    pub grant_id: String,
    pub used: AtomicBool,
}

pub struct Stores {
    pub flows: Cache<String, LoginFlow>,
    pub sessions: Cache<String, Arc<IdpSession>>,
    /// sid → session key, for logout by `id_token_hint` alone.
    pub sid_index: Cache<String, String>,
    pub codes: Cache<String, Arc<CodeRecord>>,
    pub grants: Cache<String, Arc<Grant>>,
    pub refresh: Cache<String, Arc<RefreshRecord>>,
    /// access-token jti → grant id.
    pub access: Cache<String, String>,
    /// Opaque access token (by `token_key`) → its claims.
    pub opaque: Cache<String, Arc<crate::idp::oauth::AccessTokenClaims>>,
    pub reset_links: Cache<String, UserId>,
    /// user → the last TOTP time step accepted.
    pub totp_steps: Cache<UserId, u64>,
    /// CSRF token of a logout form → the session key it may end.
    pub logout_csrf: Cache<String, String>,
    /// "You are logged in as carol…" forms (by `token_key` of their token).
    pub account_choices: Cache<String, AccountChoice>,
}

/// An authorization request whose `login_hint` names someone other than
/// the browser's IdP session's user, waiting for the person to choose.
#[derive(Clone, Debug)]
pub struct AccountChoice {
    /// The IdP session it was offered under; the choice counts only in it.
    pub session_key: String,
    pub request: Arc<AuthRequest>,
    /// The hint as the page showed it (empty when it was not shown), to
    /// prefill the login if the person switches.
    pub hint: String,
}

fn cache<K, V>(cap: u64, ttl: Duration) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    // LRU, not moka's default TinyLFU admission: a full cache must still take
    // a new code or session (dropping the oldest), never refuse it.
    Cache::builder()
        .max_capacity(cap)
        .time_to_live(ttl)
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .build()
}

impl Stores {
    pub fn new(cfg: &IdpConfig) -> Self {
        let t = &cfg.tokens;
        Stores {
            flows: cache(100_000, Duration::from_secs(900)),
            sessions: cache(1_000_000, t.session_ttl),
            sid_index: cache(1_000_000, t.session_ttl),
            // Kept past the code's life so a late replay still revokes.
            codes: cache(1_000_000, (t.code_ttl * 5).max(Duration::from_secs(300))),
            grants: cache(1_000_000, t.refresh_token_ttl),
            refresh: cache(2_000_000, t.refresh_token_ttl),
            access: cache(2_000_000, t.access_token_ttl),
            opaque: cache(2_000_000, t.access_token_ttl),
            reset_links: cache(10_000, cfg.login.reset_link_ttl),
            totp_steps: cache(1_000_000, Duration::from_secs(120)),
            logout_csrf: cache(100_000, Duration::from_secs(900)),
            account_choices: cache(100_000, Duration::from_secs(900)),
        }
    }

    /// Ends an IdP session: removes it and revokes every grant made under it.
    /// Returns it, so the caller can tell its clients.
    pub fn end_session(&self, session_key: &str) -> Option<Arc<IdpSession>> {
        let s = self.sessions.remove(session_key)?;
        self.sid_index.invalidate(&s.sid);
        let ended = s.grants.lock().unwrap_or_else(|p| p.into_inner()).take();
        for g in ended.unwrap_or_default() {
            if let Some(grant) = self.grants.get(&g) {
                grant.revoke();
            }
        }
        Some(s)
    }
}

/// Failed-login counters per username+company and per client address, and
/// rate limits on the requests that cost the provider work: login starts,
/// password checks and recovery mail.
pub struct Throttle {
    users: Cache<String, (u32, Instant)>,
    ips: Cache<IpAddr, (u32, Instant)>,
    max_user: u32,
    max_ip: u32,
    window: Duration,
    pub starts: RateCounter<IpAddr>,
    pub password_checks: RateCounter<IpAddr>,
    pub recoveries: RateCounter<IpAddr>,
    /// New welcome mails per user: one per `WELCOME_RENEWAL_INTERVAL`.
    pub welcome_renewals: RateCounter<UserId>,
}

/// How often *Forgot password* may send a user who has no password yet a
/// new welcome mail.
pub const WELCOME_RENEWAL_INTERVAL: Duration = Duration::from_secs(600);

impl Throttle {
    pub fn new(cfg: &LoginConfig) -> Self {
        let minute = Duration::from_secs(60);
        Throttle {
            users: cache(1_000_000, cfg.failure_window),
            ips: cache(1_000_000, cfg.failure_window),
            max_user: cfg.max_failures_per_user,
            max_ip: cfg.max_failures_per_ip,
            window: cfg.failure_window,
            starts: RateCounter::new(cfg.max_starts_per_minute_per_ip, minute),
            password_checks: RateCounter::new(cfg.max_password_checks_per_minute_per_ip, minute),
            recoveries: RateCounter::new(cfg.max_failures_per_ip, cfg.failure_window),
            welcome_renewals: RateCounter::with_capacity(1, WELCOME_RENEWAL_INTERVAL, 100_000),
        }
    }

    /// How long until a throttled login may try again, or `None` when it may
    /// try now.
    pub fn blocked_for(&self, user_key: &str, ip: IpAddr, now: Instant) -> Option<Duration> {
        let check = |entry: Option<(u32, Instant)>, max: u32| {
            entry
                .filter(|(n, _)| *n >= max)
                .map(|(_, last)| (last + self.window).saturating_duration_since(now))
                .filter(|d| !d.is_zero())
        };
        check(self.users.get(user_key), self.max_user).max(check(self.ips.get(&client_key(ip)), self.max_ip))
    }

    pub fn record_failure(&self, user_key: &str, ip: IpAddr, now: Instant) {
        self.users
            .entry(user_key.to_string())
            .and_upsert_with(|e| (e.map_or(0, |e| e.value().0) + 1, now));
        self.ips
            .entry(client_key(ip))
            .and_upsert_with(|e| (e.map_or(0, |e| e.value().0) + 1, now));
    }

    pub fn record_success(&self, user_key: &str) {
        self.users.invalidate(user_key);
    }

    /// Counts one "Can't Log In?" request from `ip`; how long to wait when
    /// that address has asked too often, so the outbox cannot be flooded.
    pub fn recovery_request(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.recoveries.hit(client_key(ip), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login_cfg(max_user: u32, max_ip: u32) -> LoginConfig {
        LoginConfig {
            max_failures_per_user: max_user,
            max_failures_per_ip: max_ip,
            failure_window: Duration::from_secs(60),
            totp_replay_protection: true,
            reset_link_ttl: Duration::from_secs(60),
            welcome_link_ttl: Duration::from_secs(3600),
            max_starts_per_minute_per_ip: 100,
            max_password_checks_per_minute_per_ip: 100,
        }
    }

    #[test]
    fn throttle_blocks_after_max_failures_until_window_passes() {
        let cfg = login_cfg(3, 10);
        let t = Throttle::new(&cfg);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..2 {
            t.record_failure("acme/alice", ip, now);
        }
        assert_eq!(t.blocked_for("acme/alice", ip, now), None);
        t.record_failure("acme/alice", ip, now);
        assert_eq!(t.blocked_for("acme/alice", ip, now), Some(Duration::from_secs(60)));
        assert!(
            t.blocked_for("acme/bob", ip, now).is_none(),
            "other users are not blocked"
        );
        assert_eq!(t.blocked_for("acme/alice", ip, now + Duration::from_secs(60)), None);
    }

    #[test]
    fn throttle_counts_per_address() {
        let cfg = login_cfg(100, 4);
        let t = Throttle::new(&cfg);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let now = Instant::now();
        for i in 0..4 {
            t.record_failure(&format!("acme/user{i}"), ip, now);
        }
        assert!(t.blocked_for("acme/someone-else", ip, now).is_some());
        assert!(
            t.blocked_for("acme/someone-else", "127.0.0.3".parse().unwrap(), now)
                .is_none()
        );
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn rate_counter_allows_max_per_window_then_resets() {
        let r = RateCounter::new(3, Duration::from_secs(60));
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(r.hit("a", t), None);
        }
        assert_eq!(r.hit("a", t + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(r.hit("b", t), None);
        assert_eq!(r.hit("a", t + Duration::from_secs(60)), None);
    }

    #[test]
    fn rate_counter_memory_is_capped() {
        let r = RateCounter::with_capacity(3, Duration::from_secs(60), 1_000);
        let t = Instant::now();
        for i in 0..20_000u32 {
            assert_eq!(r.hit(i, t), None);
        }
        assert!(r.entry_count() <= 1_000, "{}", r.entry_count());
    }

    #[test]
    fn ipv6_counts_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}
