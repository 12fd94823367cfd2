//! Pub/sub between replicas: revocations and changes reach every replica
//! within moments, and a heartbeat decides whether the store is healthy.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;

/// What a heartbeat carries (on each replica's own channel).
const HEARTBEAT: &str = "1";

impl RedisStore {
    /// This process's own heartbeat channel; on a cluster in the
    /// revocation channel's slot (a hash tag), so that the heartbeat
    /// travels as revocations do.
    fn heartbeat_channel(&self) -> String {
        let me = &self.origin;
        if self.is_cluster() {
            format!("{}:heartbeat:{me}", self.bus_tag())
        } else {
            self.k(&["heartbeat", me])
        }
    }

    pub(super) fn revoke_channel(&self) -> String {
        if self.is_cluster() {
            format!("{}:revoked", self.bus_tag())
        } else {
            self.k(&["revoked"])
        }
    }

    /// The hash tag of the channels on a cluster: one slot for them all.
    fn bus_tag(&self) -> String {
        format!("{{{}:bus}}", self.prefix)
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
        let weak = Arc::downgrade(&self);
        drop(self);
        let mut first = true;
        loop {
            let Some(store) = weak.upgrade() else { return };
            let connected = async {
                let mut c = store.source.connect(&store.revoke_channel()).await?;
                c.subscription
                    .subscribe(&[store.revoke_channel(), store.heartbeat_channel()])
                    .await?;
                Ok::<_, redis::RedisError>(c)
            }
            .await;
            match connected {
                Ok(c) => {
                    *store.conn.write().await = Some((c.commands.clone(), c.waiting));
                    // A heartbeat every 300 ms, published as revocations
                    // are: a subscription that dies silently (half-open
                    // connection, partition, a slot that moved) is noticed
                    // within a second, not never.
                    let (mut hb, channel, beating) = (c.commands, store.heartbeat_channel(), weak.clone());
                    let beat = tokio::spawn(async move {
                        loop {
                            let Some(store) = beating.upgrade() else { return };
                            let _: Result<(), _> = store.publish(&mut hb, &channel, HEARTBEAT).await;
                            drop(store);
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                    });
                    if !first {
                        on_reconnect();
                    }
                    first = false;
                    tracing::info!("session store (Redis) connected");
                    let mut messages = c.subscription.into_messages();
                    let own_origin = store.origin.clone();
                    let healthy = store.healthy.clone();
                    drop(store);
                    // Healthy once this replica hears its own heartbeat:
                    // the path revocations take works.
                    while let Ok(Some(payload)) = tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
                        if payload == HEARTBEAT {
                            healthy.store(true, Ordering::Release);
                        } else if let Some(rest) = payload.strip_prefix(CHANGED) {
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
                    *store.conn.write().await = None;
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
        let mut c = self.conn().await?;
        let message = format!("{CHANGED}{}:{}", self.origin, hex(h));
        self.publish(&mut c, &self.revoke_channel(), &message).await?;
        Ok(())
    }
}
