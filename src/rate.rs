//! Counting events per key in fixed windows, with bounded memory: login
//! starts per client address, link attempts per user, the IdP's throttles.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use moka::sync::Cache;

/// The address a client is counted under: IPv4 as is, IPv6 by its /64
/// (one host easily holds a whole /64).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Counts events per key in fixed windows.
#[derive(Clone)]
pub struct RateCounter<K> {
    counts: Cache<K, (u32, Instant)>,
    max: u32,
    window: Duration,
}

impl<K: std::hash::Hash + Eq + Send + Sync + Clone + 'static> RateCounter<K> {
    pub fn new(max: u32, window: Duration) -> Self {
        Self::with_capacity(max, window, 1_000_000)
    }

    /// Counting at most `capacity` keys at once: beyond them the least
    /// recently seen are forgotten, so a flood from many addresses costs
    /// bounded memory.
    pub fn with_capacity(max: u32, window: Duration, capacity: u64) -> Self {
        RateCounter {
            counts: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(window)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
            max,
            window,
        }
    }

    /// Counts one event; returns how long to wait when `key` is over its
    /// limit (the event is then not counted).
    pub fn hit(&self, key: K, now: Instant) -> Option<Duration> {
        if let Some((n, start)) = self.counts.get(&key)
            && n >= self.max
        {
            let wait = (start + self.window).saturating_duration_since(now);
            if !wait.is_zero() {
                return Some(wait);
            }
        }
        self.counts.entry(key).and_upsert_with(|e| match e.map(|e| *e.value()) {
            Some((n, start)) if now.saturating_duration_since(start) < self.window => (n + 1, start),
            _ => (1, now),
        });
        None
    }

    /// How many keys are counted now.
    pub fn entry_count(&self) -> u64 {
        self.counts.run_pending_tasks();
        self.counts.entry_count()
    }
}
