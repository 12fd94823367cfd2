//! Pub/sub between replicas: revocations and changes reach every replica
//! within moments, and a heartbeat decides whether the store is healthy.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::AsyncCommands;

use super::*;

impl RedisStore {
    /// This process's own heartbeat channel.
    fn heartbeat_channel(&self) -> String {
        self.k(&["heartbeat", &hex(&id_hash(&format!("{:p}", self)))])
    }

    pub(super) fn revoke_channel(&self) -> String {
        self.k(&["revoked"])
    }

    /// Keeps the connections up for as long as the store lives: the command
    /// connection, and the pub/sub subscription that delivers revocations
    /// (`on_revoked`, with the session's id hash) and decides `healthy`.
    /// `on_reconnect` runs each time the subscription comes back, `on_lost`
    /// each time it is lost (noticed within a second). `on_changed` gets
    /// the sessions another replica changed (see `publish_changed`).
    pub async fn run(
        self: Arc<Self>,
        on_revoked: impl Fn([u8; 32]) + Send + Sync + 'static,
        on_changed: impl Fn([u8; 32]) + Send + Sync + 'static,
        on_reconnect: impl Fn() + Send + Sync + 'static,
        on_lost: impl Fn() + Send + Sync + 'static,
    ) {
        use futures_util::StreamExt;
        let weak = Arc::downgrade(&self);
        drop(self);
        let mut first = true;
        loop {
            let Some(store) = weak.upgrade() else { return };
            let connected = async {
                let mut c = store.source.connect().await?;
                c.subscription.subscribe(store.revoke_channel()).await?;
                c.subscription.subscribe(store.heartbeat_channel()).await?;
                Ok::<_, redis::RedisError>(c)
            }
            .await;
            match connected {
                Ok(c) => {
                    let pubsub = c.subscription;
                    *store.conns.write().await = Some((c.commands, c.publish.clone()));
                    // A heartbeat through Redis every 300 ms, on the node
                    // subscribed on: a connection that dies silently
                    // (half-open, partition) is noticed within a second,
                    // not never.
                    let (mut hb, channel) = (c.publish, store.heartbeat_channel());
                    let beat = tokio::spawn(async move {
                        loop {
                            let _: Result<(), _> = hb.publish(&channel, "1").await;
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                    });
                    if !first {
                        on_reconnect();
                    }
                    first = false;
                    store.healthy.store(true, Ordering::Release);
                    tracing::info!("session store (Redis) connected");
                    let mut messages = pubsub.into_on_message();
                    let own_origin = store.origin.clone();
                    drop(store);
                    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        if let Some(rest) = payload.strip_prefix(CHANGED) {
                            let (origin, h) = rest.split_once(':').unwrap_or_default();
                            if let Some(h) = unhex(h)
                                && origin != own_origin
                            {
                                on_changed(h);
                            }
                        } else if let Some(h) = unhex(&payload) {
                            on_revoked(h);
                        }
                    }
                    beat.abort();
                    let Some(store) = weak.upgrade() else { return };
                    store.healthy.store(false, Ordering::Release);
                    *store.conns.write().await = None;
                    tracing::error!("session store (Redis) connection lost; failing closed until it is back");
                    on_lost();
                }
                Err(e) => {
                    store.healthy.store(false, Ordering::Release);
                    tracing::warn!(error = %e, "session store (Redis) not reachable; retrying");
                    drop(store);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Tells the other replicas that session `h` was stored anew with
    /// other attributes: their copies (and what holds them) must go.
    pub async fn publish_changed(&self, h: &[u8; 32]) -> Result<(), StoreError> {
        let mut c = self.publisher().await?;
        let _: () = c
            .publish(self.revoke_channel(), format!("{CHANGED}{}:{}", self.origin, hex(h)))
            .await?;
        Ok(())
    }
}
