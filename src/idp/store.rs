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
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::config::{IdpConfig, LoginConfig};
use super::directory::UserId;
use super::oauth::AuthRequest;

/// 256 random bits, base64url.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    B64.encode(b)
}

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
    /// The password step's result, kept until the code step so that no page
    /// tells which of the values was wrong.
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
    /// Grants issued under this session, revoked at logout.
    pub grants: Mutex<Vec<String>>,
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
    pub reset_links: Cache<String, UserId>,
    /// user → the last TOTP time step accepted.
    pub totp_steps: Cache<UserId, u64>,
    /// CSRF token of a logout form → the session key it may end.
    pub logout_csrf: Cache<String, String>,
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
            reset_links: cache(10_000, cfg.login.reset_link_ttl),
            totp_steps: cache(1_000_000, Duration::from_secs(120)),
            logout_csrf: cache(100_000, Duration::from_secs(900)),
        }
    }

    /// Ends an IdP session: removes it and revokes every grant made under it.
    /// Returns it, so the caller can tell its clients.
    pub fn end_session(&self, session_key: &str) -> Option<Arc<IdpSession>> {
        let s = self.sessions.remove(session_key)?;
        self.sid_index.invalidate(&s.sid);
        for g in s.grants.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(grant) = self.grants.get(g) {
                grant.revoke();
            }
        }
        Some(s)
    }
}

/// Failed-login counters per username+company and per client address.
pub struct Throttle {
    users: Cache<String, (u32, Instant)>,
    ips: Cache<IpAddr, (u32, Instant)>,
    recoveries: Cache<IpAddr, (u32, Instant)>,
    max_user: u32,
    max_ip: u32,
    window: Duration,
}

impl Throttle {
    pub fn new(cfg: &LoginConfig) -> Self {
        Throttle {
            users: cache(1_000_000, cfg.failure_window),
            ips: cache(1_000_000, cfg.failure_window),
            recoveries: cache(1_000_000, cfg.failure_window),
            max_user: cfg.max_failures_per_user,
            max_ip: cfg.max_failures_per_ip,
            window: cfg.failure_window,
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
        check(self.users.get(user_key), self.max_user).max(check(self.ips.get(&ip), self.max_ip))
    }

    pub fn record_failure(&self, user_key: &str, ip: IpAddr, now: Instant) {
        self.users
            .entry(user_key.to_string())
            .and_upsert_with(|e| (e.map_or(0, |e| e.value().0) + 1, now));
        self.ips
            .entry(ip)
            .and_upsert_with(|e| (e.map_or(0, |e| e.value().0) + 1, now));
    }

    pub fn record_success(&self, user_key: &str) {
        self.users.invalidate(user_key);
    }

    /// Counts one "Can't Log In?" request from `ip`; returns how long to wait
    /// when that address has asked too often (as many times as it may fail
    /// a login), so the outbox cannot be flooded.
    pub fn recovery_request(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if let Some((n, last)) = self.recoveries.get(&ip)
            && n >= self.max_ip
        {
            return Some((last + self.window).saturating_duration_since(now)).filter(|d| !d.is_zero());
        }
        self.recoveries
            .entry(ip)
            .and_upsert_with(|e| (e.map_or(0, |e| e.value().0) + 1, now));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_blocks_after_max_failures_until_window_passes() {
        let cfg = LoginConfig {
            max_failures_per_user: 3,
            max_failures_per_ip: 10,
            failure_window: Duration::from_secs(60),
            totp_replay_protection: true,
            reset_link_ttl: Duration::from_secs(60),
        };
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
        let cfg = LoginConfig {
            max_failures_per_user: 100,
            max_failures_per_ip: 4,
            failure_window: Duration::from_secs(60),
            totp_replay_protection: true,
            reset_link_ttl: Duration::from_secs(60),
        };
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
