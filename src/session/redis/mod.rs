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
//! operation touches one key, or runs as one-key steps in an order that
//! fails safe; none uses `KEYS`, `SCAN`, `SELECT` or a transaction. The
//! operations that span several keys, and how:
//!
//! - a session and its indexes (`save`): each index (by IdP session, user,
//!   email) is one key, updated on its own (`SADD` and its expiry, one
//!   key), before the record: a failure half-way leaves an index naming a
//!   session that does not exist (harmless), never a session no logout
//!   can find. No hash tag could join them: a session is found by its id
//!   alone, and an index spans many sessions.
//! - the end of sessions (`delete`, `delete_indexed`): one `DEL` per
//!   record, then its revocation published; then the index loses (`SREM`,
//!   one key) only the sessions whose record this deleted, so a session
//!   being stored at that very moment stays findable.
//! - a refresh's lock (`lock_refresh`, `unlock_refresh`, a Lua script on
//!   one key): on a cluster its key carries the session record's key as
//!   hash tag, `{prefix:s:…}`, so a session's record and lock live on one
//!   shard and a session depends on that shard alone.
//! - bearer revocation marks (`bearer_revoked_at`): one `GET` per mark,
//!   side by side, rather than one `MGET` over several slots.
//! - logout token `jti`s, login `state`s, module cookie records, account
//!   links: one key each (`SET NX`, a Lua script on its one key).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use futures_util::future::try_join_all;
use redis::AsyncCommands;
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

pub struct RedisStore {
    source: Source,
    /// While connected: the connection for commands, and the one
    /// revocations are published on.
    conns: RwLock<Option<(Conn, Conn)>>,
    key: LessSafeKey,
    prefix: String,
    healthy: Arc<AtomicBool>,
    rng: SystemRandom,
    /// This replica, in the "changed" messages it publishes (and ignores).
    origin: String,
}

/// The payload prefix of a "session changed" message (a refresh updated
/// the user's attributes): replicas drop their copy, and whatever holds it
/// stops, but the session itself lives on.
const CHANGED: &str = "changed:";

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
    pub fn new(target: Target<'_>, secret: &str, prefix: &str) -> Result<Arc<RedisStore>, String> {
        let source = Source::new(target)?;
        let salt = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, b"unigate session store");
        let prk = salt.extract(secret.as_bytes());
        let info: &[&[u8]] = &[b"aes-256-gcm session records"];
        let okm = prk
            .expand(info, &AES_256_GCM)
            .map_err(|_| "cannot derive the encryption key".to_string())?;
        let key = LessSafeKey::new(UnboundKey::from(okm));
        Ok(Arc::new(RedisStore {
            source,
            conns: RwLock::new(None),
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
        Ok(self.conns().await?.0)
    }

    /// The connection revocations and changes are published on.
    async fn publisher(&self) -> Result<Conn, StoreError> {
        Ok(self.conns().await?.1)
    }

    async fn conns(&self) -> Result<(Conn, Conn), StoreError> {
        if !self.healthy() {
            return Err(StoreError::Down("not connected".into()));
        }
        self.conns
            .read()
            .await
            .clone()
            .ok_or_else(|| StoreError::Down("not connected".into()))
    }

    fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster { .. })
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
        let Some(sealed) = sealed else { return Ok(None) };
        let plain = self.open(&key, &sealed)?;
        let r: Record = serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(r))
    }

    /// Stores a session for `ttl` (the idle timeout, at most until its
    /// absolute timeout) and indexes it. With `update`, only if it is still
    /// stored: a session revoked meanwhile is never brought back (false).
    ///
    /// The indexes first, each on its own (on a cluster each may be on
    /// another shard), then the record: a failure half-way leaves at most
    /// an index naming a session that is not stored, never a stored
    /// session that a logout by `sid`, user or email cannot find.
    pub async fn save(&self, h: &[u8; 32], r: &Record, ttl: Duration, update: bool) -> Result<bool, StoreError> {
        let key = self.session_key(h);
        let plain = serde_json::to_vec(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sealed = self.seal(&key, &plain)?;
        let c = self.conn().await?;
        let index_ttl = r.expires_at.saturating_sub(crate::clock::unix_now()).max(1) as i64;
        let mut indexes: Vec<(IndexKind, String)> = Vec::new();
        if let Some(sid) = &r.identity.sid {
            indexes.push((IndexKind::Sid, sid.to_string()));
        }
        indexes.push((IndexKind::Sub, r.identity.sub.to_string()));
        indexes.push((IndexKind::Email, r.identity.email.to_lowercase()));
        try_join_all(indexes.into_iter().filter(|(_, v)| !v.is_empty()).map(|(kind, v)| {
            let ik = self.k(&[kind.tag(), &hex(&id_hash(&v))]);
            let mut c = c.clone();
            async move {
                // One key: the index lives as long as its longest-lived
                // session.
                redis::pipe()
                    .sadd(&ik, hex(h))
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&ik)
                    .arg(index_ttl)
                    .arg("NX")
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&ik)
                    .arg(index_ttl)
                    .arg("GT")
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            }
        }))
        .await?;
        let ms = ttl.as_millis().max(1) as u64;
        let mut expiry = redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ms));
        if update {
            expiry = expiry.conditional_set(redis::ExistenceCheck::XX);
        }
        let set: Option<String> = c.clone().set_options(&key, sealed, expiry).await?;
        Ok(set.is_some())
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

    /// Deletes sessions and tells every replica (this one too), each
    /// session on its own (on a cluster each may be on another shard):
    /// whether each record was there.
    pub async fn delete(&self, hashes: &[[u8; 32]]) -> Result<Vec<bool>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let (c, publish) = self.conns().await?;
        let channel = self.revoke_channel();
        let deleted = try_join_all(hashes.iter().map(|h| {
            let (mut c, mut publish, key, channel) = (c.clone(), publish.clone(), self.session_key(h), &channel);
            async move {
                let n: i64 = c.del(&key).await?;
                // Told once deleted: a replica reading it again finds
                // nothing.
                let _: i64 = publish.publish(channel, hex(h)).await?;
                Ok::<_, redis::RedisError>(n > 0)
            }
        }))
        .await?;
        Ok(deleted)
    }

    /// Deletes sessions found through an index, then their entries in the
    /// index: those whose record this deleted (how many). An entry without
    /// a record may be a session being stored right now, which must stay
    /// findable; the index expires with its sessions.
    pub async fn delete_indexed(&self, kind: IndexKind, value: &str, hashes: &[[u8; 32]]) -> Result<usize, StoreError> {
        let deleted = self.delete(hashes).await?;
        let gone: Vec<String> = hashes
            .iter()
            .zip(deleted)
            .filter(|(_, d)| *d)
            .map(|(h, _)| hex(h))
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let ik = self.k(&[kind.tag(), &hex(&id_hash(value))]);
        let _: i64 = self.conn().await?.srem(&ik, &gone).await?;
        Ok(gone.len())
    }

    /// How long a session has left before it idles out in Redis (None:
    /// not stored).
    pub async fn ttl(&self, h: &[u8; 32]) -> Result<Option<Duration>, StoreError> {
        let mut c = self.conn().await?;
        let ms: i64 = c.pttl(self.session_key(h)).await?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    /// Whether a session is still stored.
    pub async fn exists(&self, h: &[u8; 32]) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        Ok(c.exists(self.session_key(h)).await?)
    }

    /// Takes an index: the sessions of a `sid`, `sub` or email.
    pub async fn take_index(&self, kind: IndexKind, value: &str) -> Result<Vec<[u8; 32]>, StoreError> {
        let ik = self.k(&[kind.tag(), &hex(&id_hash(value))]);
        let mut c = self.conn().await?;
        // Read only: the index goes with its sessions (`delete_indexed`), so
        // a failure half-way leaves it for the retry.
        let members: Vec<String> = c.smembers(&ik).await?;
        Ok(members.iter().filter_map(|m| unhex(m)).collect())
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
        )
        .unwrap();
        assert!(other.open("t:s:1", &sealed).is_err(), "another key: refused");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(s.open("t:s:1", &tampered).is_err());
        assert_eq!(unhex(&hex(&id_hash("x"))), Some(id_hash("x")));
    }
}
