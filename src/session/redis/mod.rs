//! The Redis session store, for several unigate replicas: sessions, used
//! login `state`s, the logout-token `jti` replay cache, account links and
//! revocations live in one Redis; each replica keeps a local cache of the
//! sessions it serves, and revocations reach every replica within moments
//! by pub/sub. Session records are sealed with AES-256-GCM (key derived by
//! HKDF-SHA256 from a secret reference, the Redis key as associated data):
//! someone who can read only Redis reads no token. Session ids are stored
//! only as SHA-256 hashes.
//!
//! Redis down: `healthy()` turns false as soon as the pub/sub connection
//! drops, and the gateway fails closed (503) until it is back; then the
//! local cache is dropped, as revocations may have been missed.
//!
//! Redis is one server, the master Sentinel names, or a Redis Cluster
//! (`conn`). On a cluster every key may live on another shard, so each
//! command touches one key (a pipeline or Lua script, one key's); none
//! uses `KEYS`, `SCAN`, `SELECT` or a transaction. The operations that
//! span several keys, and how they stay safe:
//!
//! - a session and its indexes (`save`): each index (by IdP session, user,
//!   email) is one sorted set, scored by its sessions' absolute expiry and
//!   pruned of the expired ones at each write, updated before the record:
//!   a failure half-way leaves an index naming a session that does not
//!   exist (harmless), never a session no logout can find.
//! - the end of sessions (`delete`, `delete_indexed`): each record is
//!   replaced by a short-lived *tombstone* (`SET … GET`, one key), then
//!   its revocation is published; then the index loses the entries. A new
//!   session is stored only where nothing is (`SET NX`), and a changed one
//!   only over its live record (a one-key script), so a session being
//!   stored while its logout runs is refused, not brought back.
//! - a refresh's lock (`lock_refresh`, `unlock_refresh`, a Lua script on
//!   one key): on a cluster its key carries the session record's key as
//!   hash tag, `{prefix:s:…}`, so a session's record and lock live on one
//!   shard and a session depends on that shard alone.
//! - bearer revocation marks (`bearer_revoked_at`): one `MGET`, which the
//!   cluster client splits by slot.
//! - logout token `jti`s, login `state`s, module cookie records, account
//!   links: one key each (`SET NX`, a Lua script on its one key).
//!
//! **Writes that must survive a failover.** Redis copies writes to its
//! replicas after answering, so a master that fails right after a logout
//! can take the logout with it: the promoted replica still holds the
//! session. With `wait_replicas` (none by default) each write a
//! logout or a login's index depends on is followed by `WAIT`, and counts
//! as done only once that many replicas hold it; otherwise the request
//! fails (503) and can be retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use futures_util::future::try_join_all;
use futures_util::{StreamExt, TryStreamExt};
use redis::{AsyncCommands, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use super::Identity;
use conn::Source;
pub use conn::{Conn, Target};

mod conn;
mod pubsub;
mod records;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store (Redis) is unavailable: {0}")]
    Down(String),
    #[error("a stored record cannot be read: {0}")]
    Corrupt(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Down(e.to_string())
    }
}

/// A session as stored: everything needed to rebuild it on any replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub module: String,
    pub identity: Identity,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub access_exp: u64,
    pub link_pending: bool,
    /// Unix time of the absolute timeout.
    pub expires_at: u64,
    /// `Tokens::generation` (records written before it: 0).
    #[serde(default)]
    pub generation: u64,
}

/// Index kinds: which sessions belong to an IdP session, a user, an email.
#[derive(Clone, Copy, Debug)]
pub enum IndexKind {
    Sid,
    Sub,
    Email,
}

impl IndexKind {
    fn tag(self) -> &'static str {
        match self {
            IndexKind::Sid => "sid",
            IndexKind::Sub => "sub",
            IndexKind::Email => "email",
        }
    }
}

/// How the store treats Redis, beyond where it is.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replicas that must hold a logout or an index write (`WAIT`); None:
    /// 0.
    pub wait_replicas: Option<u32>,
    /// The certificate authorities (PEM) that `rediss://` servers'
    /// certificates chain to; None: the system's.
    pub tls_ca: Option<Vec<u8>>,
}

pub struct RedisStore {
    source: Source,
    /// While connected: the connection for commands (on a cluster, it
    /// routes each by its key), and the one for writes that `WAIT`.
    conn: RwLock<Option<(Conn, Conn)>>,
    key: LessSafeKey,
    prefix: String,
    healthy: Arc<AtomicBool>,
    rng: SystemRandom,
    /// This replica, in the "changed" messages it publishes (and ignores).
    origin: String,
    /// How many replicas must hold a logout or an index write before it
    /// counts (`WAIT`); 0: none asked.
    wait_replicas: u32,
}

/// The payload prefix of a "session changed" message (a refresh updated
/// the user's attributes): replicas drop their copy, and whatever holds it
/// stops, but the session itself lives on.
const CHANGED: &str = "changed:";

/// What an ended session's record is replaced with for a while: a save
/// that raced with the logout finds it and is refused. (A sealed record is
/// never one byte long.)
const TOMBSTONE: &[u8] = b"-";

/// How long a tombstone stays: far longer than a save takes from its index
/// write to its record write.
const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

/// How long `WAIT` waits for the replicas.
const WAIT_TIMEOUT: Duration = Duration::from_millis(250);

fn hex(h: &[u8; 32]) -> String {
    hex::encode(h)
}

pub fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// SHA-256 of a session id: how Redis and pub/sub name a session.
pub fn id_hash(id: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(id.as_bytes()).into()
}

impl RedisStore {
    /// Sets up the store; connecting happens in the background (`run`),
    /// and until it succeeds the store reports itself unhealthy.
    pub fn new(target: Target<'_>, secret: &str, prefix: &str, options: Options) -> Result<Arc<RedisStore>, String> {
        let source = Source::new(target, options.tls_ca.as_deref())?;
        let salt = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, b"unigate session store");
        let prk = salt.extract(secret.as_bytes());
        let info: &[&[u8]] = &[b"aes-256-gcm session records"];
        let okm = prk
            .expand(info, &AES_256_GCM)
            .map_err(|_| "cannot derive the encryption key".to_string())?;
        let key = LessSafeKey::new(UnboundKey::from(okm));
        Ok(Arc::new(RedisStore {
            source,
            conn: RwLock::new(None),
            key,
            prefix: prefix.to_string(),
            healthy: Arc::new(AtomicBool::new(false)),
            origin: {
                let mut b = [0u8; 16];
                SystemRandom::new()
                    .fill(&mut b)
                    .map_err(|_| "no randomness for the replica id".to_string())?;
                hex::encode(b)
            },
            rng: SystemRandom::new(),
            wait_replicas: options.wait_replicas.unwrap_or(0),
        }))
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn k(&self, parts: &[&str]) -> String {
        let mut s = self.prefix.clone();
        for p in parts {
            s.push(':');
            s.push_str(p);
        }
        s
    }

    /// The connection for commands.
    async fn conn(&self) -> Result<Conn, StoreError> {
        self.conns(false).await
    }

    /// The connection for writes followed by `WAIT` (the command
    /// connection when none is asked for).
    async fn waiting_conn(&self) -> Result<Conn, StoreError> {
        self.conns(self.wait_replicas > 0).await
    }

    async fn conns(&self, waiting: bool) -> Result<Conn, StoreError> {
        if !self.healthy() {
            return Err(StoreError::Down("not connected".into()));
        }
        let held = self.conn.read().await;
        let (commands, wait) = held.as_ref().ok_or_else(|| StoreError::Down("not connected".into()))?;
        Ok(if waiting { wait.clone() } else { commands.clone() })
    }

    fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster { .. })
    }

    /// Publishes `message` to every replica: `SPUBLISH` on a cluster (to
    /// the master owning the channel's slot), `PUBLISH` on one server.
    async fn publish(&self, c: &mut Conn, channel: &str, message: &str) -> redis::RedisResult<()> {
        let verb = if self.is_cluster() { "SPUBLISH" } else { "PUBLISH" };
        redis::cmd(verb).arg(channel).arg(message).exec_async(c).await
    }

    /// `pipe`, then `WAIT` for `wait_replicas` (on the node of the pipe's
    /// key): its answers (the `WAIT`'s left out), and whether enough
    /// replicas confirmed them. The outer error: the commands failed.
    async fn query_copied(
        &self,
        c: &mut Conn,
        mut pipe: redis::Pipeline,
    ) -> Result<(Vec<Value>, Result<(), StoreError>), StoreError> {
        if self.wait_replicas > 0 {
            pipe.cmd("WAIT")
                .arg(self.wait_replicas)
                .arg(WAIT_TIMEOUT.as_millis() as u64);
        }
        let mut answers: Vec<Value> = pipe.query_async(c).await?;
        let mut copied = Ok(());
        if self.wait_replicas > 0 {
            let copies = match answers.pop() {
                Some(Value::Int(n)) => n,
                _ => 0,
            };
            if copies < i64::from(self.wait_replicas) {
                copied = Err(StoreError::Down(format!(
                    "a write reached {copies} of the {} replicas asked for (redis_wait_replicas) within {} ms",
                    self.wait_replicas,
                    WAIT_TIMEOUT.as_millis()
                )));
            }
        }
        Ok((answers, copied))
    }

    fn seal(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| StoreError::Corrupt("no randomness".into()))?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| StoreError::Corrupt("cannot seal".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < NONCE_LEN {
            return Err(StoreError::Corrupt("too short".into()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| StoreError::Corrupt("nonce".into()))?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| StoreError::Corrupt("does not open with this key".into()))?;
        Ok(plain.to_vec())
    }

    fn session_key(&self, h: &[u8; 32]) -> String {
        self.k(&["s", &hex(h)])
    }

    pub async fn load(&self, h: &[u8; 32]) -> Result<Option<Record>, StoreError> {
        let key = self.session_key(h);
        let sealed: Option<Vec<u8>> = self.conn().await?.get(&key).await?;
        let Some(sealed) = sealed.filter(|v| v != TOMBSTONE) else {
            return Ok(None);
        };
        let plain = self.open(&key, &sealed)?;
        let r: Record = serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(r))
    }

    /// Where the sessions of a `sid`, user or email are listed (a sorted
    /// set scored by each session's absolute expiry).
    fn index_key(&self, kind: IndexKind, value: &str) -> String {
        self.k(&["ix", kind.tag(), &hex(&id_hash(value))])
    }

    /// The same, as a plain set: how versions before the sorted sets kept
    /// it. Still read and emptied at logout, never written.
    fn legacy_index_key(&self, kind: IndexKind, value: &str) -> String {
        self.k(&[kind.tag(), &hex(&id_hash(value))])
    }

    /// Stores a session for `ttl` (the idle timeout, at most until its
    /// absolute timeout) and indexes it. A new session only where nothing
    /// is stored; with `update`, only over its live record. False when
    /// that failed: the session was ended meanwhile (its tombstone), and
    /// stays ended.
    ///
    /// The indexes first, each on its own (on a cluster each may be on
    /// another shard), then the record: a failure half-way leaves at most
    /// an index naming a session that is not stored, never a stored
    /// session that a logout by `sid`, user or email cannot find.
    pub async fn save(&self, h: &[u8; 32], r: &Record, ttl: Duration, update: bool) -> Result<bool, StoreError> {
        /// Adds a member scored by its expiry, forgets the expired ones,
        /// and keeps the index as long as its longest-lived session.
        const INDEX: &str = r"redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
            redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
            redis.call('EXPIRE', KEYS[1], ARGV[4], 'NX')
            redis.call('EXPIRE', KEYS[1], ARGV[4], 'GT')
            return 1";
        /// Replaces a live record only (not a tombstone, not nothing).
        const UPDATE: &str = r"local v = redis.call('GET', KEYS[1])
            if (not v) or v == ARGV[3] then return 0 end
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
            return 1";
        let key = self.session_key(h);
        let plain = serde_json::to_vec(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sealed = self.seal(&key, &plain)?;
        let c = self.conn().await?;
        let waiting = self.waiting_conn().await?;
        let now = crate::clock::unix_now();
        let index_ttl = r.expires_at.saturating_sub(now).max(1);
        let mut indexes: Vec<(IndexKind, String)> = Vec::new();
        if let Some(sid) = &r.identity.sid {
            indexes.push((IndexKind::Sid, sid.to_string()));
        }
        indexes.push((IndexKind::Sub, r.identity.sub.to_string()));
        indexes.push((IndexKind::Email, r.identity.email.to_lowercase()));
        try_join_all(indexes.into_iter().filter(|(_, v)| !v.is_empty()).map(|(kind, v)| {
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(INDEX)
                .arg(1)
                .arg(self.index_key(kind, &v))
                .arg(hex(h))
                .arg(r.expires_at)
                .arg(now)
                .arg(index_ttl);
            let mut c = waiting.clone();
            async move {
                let copied = self.query_copied(&mut c, pipe).await?.1;
                // A change (a refreshed token) is written even when its
                // index entries, there since the login, were not copied
                // again: its rotated token must not be lost.
                if update { Ok(()) } else { copied }
            }
        }))
        .await?;
        let ms = ttl.as_millis().max(1) as u64;
        let mut c = c;
        if update {
            let set: i64 = redis::cmd("EVAL")
                .arg(UPDATE)
                .arg(1)
                .arg(&key)
                .arg(&sealed)
                .arg(ms)
                .arg(TOMBSTONE)
                .query_async(&mut c)
                .await?;
            return Ok(set == 1);
        }
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ms));
        let set: Option<String> = c.set_options(&key, &sealed, opts).await?;
        if set.is_some() {
            return Ok(true);
        }
        // A SET retried after a lost answer finds its own first attempt.
        let there: Option<Vec<u8>> = c.get(&key).await?;
        Ok(there.as_deref() == Some(sealed.as_slice()))
    }

    /// Pushes a session's idle expiry out again.
    pub async fn touch(&self, h: &[u8; 32], ttl: Duration) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: bool = c.pexpire(self.session_key(h), ttl.as_millis().max(1) as i64).await?;
        Ok(())
    }

    /// Takes the right to refresh session `h` for `ttl`: one replica at a
    /// time, so that a rotated refresh token is never used twice. `Some`
    /// with this attempt's own value when taken; `None` when another
    /// replica holds it.
    pub async fn lock_refresh(&self, h: &[u8; 32], ttl: Duration) -> Result<Option<String>, StoreError> {
        let mut value = [0u8; 16];
        self.rng
            .fill(&mut value)
            .map_err(|_| StoreError::Corrupt("no randomness".into()))?;
        let value = hex::encode(value);
        let key = self.refresh_lock_key(h);
        let mut c = self.conn().await?;
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl.as_millis().max(1) as u64));
        let set: Option<String> = c.set_options(&key, &value, opts).await?;
        if set.is_some() {
            return Ok(Some(value));
        }
        // A SET retried after a lost answer finds its own first attempt.
        let holder: Option<String> = c.get(&key).await?;
        Ok((holder.as_deref() == Some(value.as_str())).then_some(value))
    }

    /// Gives the right back, unless it expired and another replica took it.
    pub async fn unlock_refresh(&self, h: &[u8; 32], value: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = redis::cmd("EVAL")
            .arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end")
            .arg(1)
            .arg(self.refresh_lock_key(h))
            .arg(value)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Where the right to refresh session `h` is kept. On a cluster, on
    /// the session record's shard: its hash tag is the record's key.
    fn refresh_lock_key(&self, h: &[u8; 32]) -> String {
        if self.is_cluster() {
            self.k(&["refreshing", &format!("{{{}}}", self.session_key(h))])
        } else {
            self.k(&["refreshing", &hex(h)])
        }
    }

    /// Ends sessions and tells every replica (this one too), each session
    /// on its own (on a cluster each may be on another shard): whether
    /// each record was there. Each record is replaced by a tombstone
    /// (copied to `wait_replicas` replicas), then the revocation is
    /// published: a replica reading it again finds nothing. An error when
    /// too few replicas confirmed a tombstone, though it is published.
    pub async fn delete(&self, hashes: &[[u8; 32]]) -> Result<Vec<bool>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let (c, waiting) = (self.conn().await?, self.waiting_conn().await?);
        let channel = self.revoke_channel();
        let ends: Vec<_> = hashes
            .iter()
            .map(|h| {
                let (mut c, mut waiting, key, channel) = (c.clone(), waiting.clone(), self.session_key(h), &channel);
                async move {
                    let mut pipe = redis::pipe();
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(TOMBSTONE)
                        .arg("PX")
                        .arg(TOMBSTONE_TTL.as_millis() as u64)
                        .arg("GET");
                    let (answers, copied) = self.query_copied(&mut waiting, pipe).await?;
                    let was = match answers.first() {
                        Some(Value::BulkString(v)) => v.as_slice() != TOMBSTONE,
                        _ => false,
                    };
                    // Told even when too few replicas hold the tombstone: the
                    // record is gone here, and copies elsewhere must go too.
                    // The logout still fails, so that it is tried again.
                    self.publish(&mut c, channel, &hex(h)).await?;
                    copied?;
                    Ok::<_, StoreError>(was)
                }
            })
            .collect();
        // At most 16 at a time: a user with thousands of sessions does not
        // flood Redis.
        let deleted = futures_util::stream::iter(ends).buffered(16).try_collect().await?;
        Ok(deleted)
    }

    /// Ends the sessions found through an index, then takes them out of
    /// it: how many were there. A session being stored right now is
    /// refused by its tombstone, so every entry can go.
    pub async fn delete_indexed(&self, kind: IndexKind, value: &str, hashes: &[[u8; 32]]) -> Result<usize, StoreError> {
        if hashes.is_empty() {
            return Ok(0);
        }
        let deleted = self.delete(hashes).await?;
        let members: Vec<String> = hashes.iter().map(hex).collect();
        let mut c = self.conn().await?;
        let _: i64 = c.zrem(self.index_key(kind, value), &members).await?;
        let _: i64 = c.srem(self.legacy_index_key(kind, value), &members).await?;
        Ok(deleted.into_iter().filter(|d| *d).count())
    }

    /// How long a session has left before it idles out in Redis (None:
    /// not stored).
    pub async fn ttl(&self, h: &[u8; 32]) -> Result<Option<Duration>, StoreError> {
        let mut c = self.conn().await?;
        let key = self.session_key(h);
        let (len, ms): (usize, i64) = redis::pipe().strlen(&key).pttl(&key).query_async(&mut c).await?;
        Ok((len > TOMBSTONE.len() && ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    /// Whether a session is still stored.
    pub async fn exists(&self, h: &[u8; 32]) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let len: usize = c.strlen(self.session_key(h)).await?;
        Ok(len > TOMBSTONE.len())
    }

    /// Reads an index: the sessions of a `sid`, `sub` or email not past
    /// their absolute expiry (and those of the older, plain-set index).
    pub async fn take_index(&self, kind: IndexKind, value: &str) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut c = self.conn().await?;
        // Read only: the index goes with its sessions (`delete_indexed`), so
        // a failure half-way leaves it for the retry.
        let mut members: Vec<String> = c
            .zrangebyscore(self.index_key(kind, value), crate::clock::unix_now(), "+inf")
            .await?;
        let legacy: Vec<String> = c.smembers(self.legacy_index_key(kind, value)).await?;
        members.extend(legacy);
        let mut out: Vec<[u8; 32]> = members.iter().filter_map(|m| unhex(m)).collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_sealed_and_bound_to_their_key() {
        let s = RedisStore::new(
            Target::Url("redis://127.0.0.1:1/"),
            "a secret of at least thirty-two chars!",
            "t",
            Options::default(),
        )
        .unwrap();
        let sealed = s.seal("t:s:1", b"refresh-token-value").unwrap();
        assert!(
            !sealed.windows(13).any(|w| w == b"refresh-token"),
            "no plaintext in Redis"
        );
        assert_eq!(s.open("t:s:1", &sealed).unwrap(), b"refresh-token-value");
        assert!(s.open("t:s:2", &sealed).is_err(), "moved to another key: refused");
        let other = RedisStore::new(
            Target::Url("redis://127.0.0.1:1/"),
            "another secret of thirty-two chars!!",
            "t",
            Options::default(),
        )
        .unwrap();
        assert!(other.open("t:s:1", &sealed).is_err(), "another key: refused");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(s.open("t:s:1", &tampered).is_err());
        assert_eq!(unhex(&hex(&id_hash("x"))), Some(id_hash("x")));
    }
}
