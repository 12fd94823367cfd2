//! The small records every replica shares: used logout tokens (`jti`),
//! used login `state`s, module session cookie owners, account links and
//! bearer revocation marks.

use std::time::Duration;

use redis::AsyncCommands;

use super::*;

impl RedisStore {
    /// Where a logout token's `jti` is kept (by its hash).
    fn jti_key(&self, jti: &str) -> String {
        self.k(&["jti", &hex(&id_hash(jti))])
    }

    /// Marks a logout token's `jti` done: its logout happened, and from now
    /// on the token is a replay.
    pub async fn finish_jti(&self, jti: &str) -> Result<(), StoreError> {
        let key = self.jti_key(jti);
        let mut c = self.conn().await?;
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg("done")
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    pub async fn delete_module_cookie(&self, h: &[u8; 32]) -> Result<(), StoreError> {
        let key = self.k(&["mc", &hex(h)]);
        let mut c = self.conn().await?;
        let _: () = c.del(&key).await?;
        Ok(())
    }

    /// Claims a logout token's `jti`, on any replica: true unless a logout
    /// with it is done (a replay). A claim whose logout never finished (the
    /// store failed half-way) stays claimable, so the IdP's retry works.
    /// (`1` is what versions before the claim wrote for a used `jti`.)
    pub async fn claim_jti(&self, jti: &str, ttl: Duration) -> Result<bool, StoreError> {
        const CLAIM: &str = r"local v = redis.call('GET', KEYS[1])
            if v == 'done' or v == '1' then return 0 end
            if not v then redis.call('SET', KEYS[1], 'pending', 'PX', ARGV[1]) end
            return 1";
        let key = self.jti_key(jti);
        let mut c = self.conn().await?;
        let claimed: i64 = redis::cmd("EVAL")
            .arg(CLAIM)
            .arg(1)
            .arg(&key)
            .arg(ttl.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        Ok(claimed == 1)
    }

    /// Claims a login's `state` (by hash), on any replica: true the first
    /// time, false for a replayed callback. Kept as long as the login's
    /// cookie could be valid.
    pub async fn claim_login_state(&self, h: &[u8; 32], ttl: Duration) -> Result<bool, StoreError> {
        let key = self.k(&["login", &hex(h)]);
        let mut c = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        Ok(set.is_some())
    }

    /// Who a module session cookie (by hash) was issued to; the record
    /// ends when the cookie does.
    pub async fn put_module_cookie(&self, h: &[u8; 32], owner: &crate::session::CookieOwner) -> Result<(), StoreError> {
        let key = self.k(&["mc", &hex(h)]);
        let value = serde_json::to_string(owner).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let now = crate::clock::unix_now();
        let mut c = self.conn().await?;
        let _: () = c.set_ex(&key, value, owner.until.saturating_sub(now).max(1)).await?;
        Ok(())
    }

    pub async fn get_module_cookie(&self, h: &[u8; 32]) -> Result<Option<crate::session::CookieOwner>, StoreError> {
        let key = self.k(&["mc", &hex(h)]);
        let mut c = self.conn().await?;
        let v: Option<String> = c.get(&key).await?;
        v.map(|v| serde_json::from_str(&v).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    pub async fn get_link(&self, sub: &str, route: &str) -> Result<Option<String>, StoreError> {
        let key = self.k(&["link", route, &hex(&id_hash(sub))]);
        let mut c = self.conn().await?;
        Ok(c.get(&key).await?)
    }

    /// Where a bearer revocation marker is kept (by the hash of its name,
    /// e.g. `sub:…`).
    fn bearer_mark_key(&self, mark: &str) -> String {
        self.k(&["brev", &hex(&id_hash(mark))])
    }

    /// Records that bearer tokens named by `mark` and issued at or before
    /// `at` (Unix seconds) are revoked, for `ttl`; a later mark wins.
    pub async fn mark_bearer_revoked(&self, mark: &str, at: u64, ttl: Duration) -> Result<(), StoreError> {
        const MARK: &str = r"local v = tonumber(redis.call('GET', KEYS[1]))
            if (not v) or v < tonumber(ARGV[1]) then
              redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
            else
              redis.call('PEXPIRE', KEYS[1], ARGV[2])
            end
            return 1";
        let mut c = self.waiting_conn().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(MARK)
            .arg(1)
            .arg(self.bearer_mark_key(mark))
            .arg(at)
            .arg(ttl.as_millis() as u64);
        // A revocation: it must outlive a failover.
        self.query_copied(&mut c, pipe).await?.1
    }

    /// The latest revocation time among `marks`, if any is marked.
    pub async fn bearer_revoked_at(&self, marks: &[String]) -> Result<Option<u64>, StoreError> {
        if marks.is_empty() {
            return Ok(None);
        }
        let keys: Vec<String> = marks.iter().map(|m| self.bearer_mark_key(m)).collect();
        let mut c = self.conn().await?;
        // One command; on a cluster the client splits it by slot.
        let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
        Ok(values.into_iter().flatten().max())
    }

    pub async fn put_link(&self, sub: &str, route: &str, module_user: &str) -> Result<(), StoreError> {
        let key = self.k(&["link", route, &hex(&id_hash(sub))]);
        let mut c = self.conn().await?;
        let _: () = c.set(&key, module_user).await?;
        Ok(())
    }
}
