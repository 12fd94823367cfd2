//! How unigate reaches Redis — one server, the master Redis Sentinel
//! names, or a Redis Cluster — and the three connections it keeps: one
//! for commands, one subscribed to the replicas' channels, one to publish
//! on. One store for the three: `Conn` is an enum of connection kinds, and
//! the store's commands run unchanged on each.
//!
//! **Redis Cluster.** Commands go through the `redis` crate's cluster
//! connection, which routes each by its key's slot, follows `MOVED`/`ASK`
//! redirects and, when a node fails, asks the others for the new map (a
//! promoted replica). Every operation the store makes touches one key, or
//! is split into one-key steps ordered so that a failure half-way fails
//! safe (see `RedisStore::save`), so no two keys need to share a slot.
//!
//! Revocations travel by **sharded pub/sub** (`SPUBLISH`/`SSUBSCRIBE`,
//! Redis ≥ 7) on channels that share one slot (a hash tag): the master
//! that owns that slot delivers every revocation to every replica itself,
//! with no hop over the cluster bus. Each unigate replica subscribes on
//! that master and publishes through the cluster connection, which routes
//! `SPUBLISH` to whichever node owns the slot now; its heartbeat goes the
//! same way, so a heartbeat heard proves the very path revocations take.
//! When the slot moves (the server ends the subscription) or its master
//! fails (the connection drops, or the heartbeat stops), the store fails
//! closed and subscribes again on the slot's new owner. The price: while
//! that one shard has no master, every replica fails closed.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, PubSub, PubSubStream};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, PushKind,
    RedisFuture, RedisResult, Value,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// The longest one connection attempt, or one answer, may take.
const TIMEOUT: Duration = Duration::from_secs(1);

/// How to reach Redis: one server, the master Sentinel names, or a
/// cluster.
pub enum Target<'a> {
    Url(&'a str),
    Sentinel {
        sentinels: &'a [String],
        master: &'a str,
        /// The data nodes' database and password (`redis://:pw@host/db`;
        /// the host is ignored).
        node: Option<&'a str>,
    },
    /// Some of a Redis Cluster's nodes; the others are found through them.
    Cluster(Vec<&'a str>),
}

/// Where Redis is.
pub(super) enum Source {
    Direct(redis::Client),
    /// Asked of Redis Sentinel at every (re)connection: after a failover,
    /// the new master.
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
    Cluster {
        client: ClusterClient,
        /// The nodes as configured: their password and TLS settings serve
        /// every node found.
        seeds: Vec<ConnectionInfo>,
        /// `Options::tls_ca`, for the subscription's own connection.
        certs: Option<Vec<u8>>,
    },
}

/// The certificates a TLS connection trusts: `ca`'s, not the system's.
fn certs(ca: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.to_vec()),
    }
}

/// A client for `info`, trusting `ca` (if any) for TLS.
fn client_for(info: ConnectionInfo, ca: Option<&[u8]>) -> RedisResult<redis::Client> {
    match ca {
        Some(ca) => redis::Client::build_with_tls(info, certs(ca)),
        None => redis::Client::open(info),
    }
}

/// The connection commands go through, of whichever kind the source
/// needs.
#[derive(Clone)]
pub enum Conn {
    /// One server (reconnecting by itself).
    Server(ConnectionManager),
    /// A whole cluster, each command routed to its key's node.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// What `Source::connect` opens.
pub(super) struct Connections {
    pub commands: Conn,
    /// For the writes followed by `WAIT`, which holds up the connection it
    /// runs on until the replicas answer: never the one reads and the
    /// heartbeat use.
    pub waiting: Conn,
    /// Not subscribed to anything yet.
    pub subscription: Subscription,
}

/// The connection revocations arrive on.
pub(super) enum Subscription {
    /// Ordinary pub/sub, on the one server.
    Plain(PubSub),
    /// Sharded pub/sub, on the master that owns the channels' slot (a
    /// connection of its own, in RESP3: its messages come as pushes).
    Sharded {
        node: redis::aio::MultiplexedConnection,
        pushes: UnboundedReceiver<PushInfo>,
    },
}

impl Subscription {
    /// Subscribes to `channels` (on a cluster, all in one slot).
    pub(super) async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        for channel in channels {
            match self {
                Subscription::Plain(p) => p.subscribe(channel).await?,
                Subscription::Sharded { node, .. } => {
                    // One channel per command: one confirmation, which is
                    // the command's answer.
                    redis::cmd("SSUBSCRIBE").arg(channel).exec_async(node).await?
                }
            }
        }
        Ok(())
    }

    pub(super) fn into_messages(self) -> Messages {
        match self {
            Subscription::Plain(p) => Messages::Plain(p.into_on_message()),
            Subscription::Sharded { node, pushes } => Messages::Sharded { _node: node, pushes },
        }
    }
}

/// The messages of a subscription, until it is lost.
pub(super) enum Messages {
    Plain(PubSubStream),
    Sharded {
        /// Kept open: the pushes come through it.
        _node: redis::aio::MultiplexedConnection,
        pushes: UnboundedReceiver<PushInfo>,
    },
}

impl Messages {
    /// The next message's text; `None` once the subscription is lost: the
    /// connection dropped, or (sharded) the server ended the subscription
    /// because the slot moved. Messages that are not text are skipped.
    pub(super) async fn next(&mut self) -> Option<String> {
        use futures_util::StreamExt;
        loop {
            match self {
                Messages::Plain(stream) => {
                    if let Ok(text) = stream.next().await?.get_payload::<String>() {
                        return Some(text);
                    }
                }
                Messages::Sharded { pushes, .. } => {
                    let push = pushes.recv().await?;
                    match sharded_message(push) {
                        Pushed::Message(text) => return Some(text),
                        Pushed::Other => {}
                        Pushed::Lost => return None,
                    }
                }
            }
        }
    }
}

/// What a push on the sharded subscription means.
#[derive(Debug, PartialEq)]
pub(super) enum Pushed {
    Message(String),
    /// A subscription's confirmation (its copy), or a message not text.
    Other,
    /// The subscription ended (`sunsubscribe`: the slot moved), the
    /// connection dropped, or something unforeseen: start over.
    Lost,
}

pub(super) fn sharded_message(push: PushInfo) -> Pushed {
    match push.kind {
        PushKind::SMessage => match push.data.as_slice() {
            [_, Value::BulkString(b)] => String::from_utf8(b.clone()).map_or(Pushed::Other, Pushed::Message),
            _ => Pushed::Other,
        },
        PushKind::SSubscribe => Pushed::Other,
        _ => Pushed::Lost,
    }
}

impl Source {
    pub(super) fn new(target: Target<'_>, ca: Option<&[u8]>) -> Result<Source, String> {
        // `rediss://` needs rustls's process-wide provider.
        crate::config::tls::install_crypto_provider();
        Ok(match target {
            Target::Url(url) => Source::Direct(
                url.into_connection_info()
                    .and_then(|info| client_for(info, ca))
                    .map_err(|e| format!("redis_url: {e}"))?,
            ),
            Target::Sentinel {
                sentinels,
                master,
                node,
            } => {
                let mut info = redis::sentinel::SentinelNodeConnectionInfo::default();
                if let Some(n) = node {
                    let ci = n.into_connection_info().map_err(|e| format!("redis_url: {e}"))?;
                    info = info.set_redis_connection_info(ci.redis_settings().clone());
                }
                let client = redis::sentinel::SentinelClient::build(
                    sentinels.to_vec(),
                    master,
                    Some(info),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| format!("redis_sentinels: {e}"))?;
                Source::Sentinel(tokio::sync::Mutex::new(client))
            }
            Target::Cluster(nodes) => {
                let seeds = nodes
                    .iter()
                    .map(|n| n.into_connection_info())
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(|e| format!("redis_cluster: {e}"))?;
                // Each attempt and each answer bounded, retries included: a
                // request for a failed shard fails (503) within a second
                // instead of hanging.
                let mut builder = ClusterClient::builder(seeds.clone())
                    .connection_timeout(TIMEOUT)
                    .response_timeout(TIMEOUT)
                    .retries(3);
                if let Some(ca) = ca {
                    builder = builder.certs(certs(ca));
                }
                let client = builder.build().map_err(|e| format!("redis_cluster: {e}"))?;
                Source::Cluster {
                    client,
                    seeds,
                    certs: ca.map(<[u8]>::to_vec),
                }
            }
        })
    }

    /// Opens the connections; on a cluster, the subscription goes to the
    /// master that owns `channel`'s slot.
    pub(super) async fn connect(&self, channel: &str) -> RedisResult<Connections> {
        let client = match self {
            Source::Direct(c) => c.clone(),
            Source::Sentinel(s) => s.lock().await.async_get_client().await?,
            Source::Cluster { client, seeds, certs } => {
                return connect_cluster(client, seeds, certs.as_deref(), channel).await;
            }
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        Ok(Connections {
            commands: Conn::Server(client.get_connection_manager_with_config(config.clone()).await?),
            waiting: Conn::Server(client.get_connection_manager_with_config(config).await?),
            subscription: Subscription::Plain(client.get_async_pubsub().await?),
        })
    }
}

async fn connect_cluster(
    client: &ClusterClient,
    seeds: &[ConnectionInfo],
    ca: Option<&[u8]>,
    channel: &str,
) -> RedisResult<Connections> {
    let mut commands = Conn::Cluster(client.get_async_connection().await?);
    let waiting = Conn::Cluster(client.get_async_connection().await?);
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(channel)
        .query_async(&mut commands)
        .await?;
    let shards: Value = redis::cmd("CLUSTER").arg("SHARDS").query_async(&mut commands).await?;
    let seed = &seeds[0];
    let tls = matches!(seed.addr(), ConnectionAddr::TcpTls { .. });
    let Some((host, port)) = slot_master(&shards, slot, tls) else {
        return Err((redis::ErrorKind::Io, "no master owns the revocation channel's slot").into());
    };
    let info = node_info(seed, &host, port);
    let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    let node = client_for(info.set_redis_settings(settings), ca)?;
    let (tx, pushes) = unbounded_channel();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_push_sender(tx);
    let node = node.get_multiplexed_async_connection_with_config(&config).await?;
    tracing::info!(node = %format!("{host}:{port}"), "session store (Redis Cluster): revocations heard on this master");
    Ok(Connections {
        commands,
        waiting,
        subscription: Subscription::Sharded { node, pushes },
    })
}

/// `seed`'s settings (password, TLS) for the node at `host:port`.
fn node_info(seed: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match seed.addr() {
        ConnectionAddr::TcpTls {
            insecure, tls_params, ..
        } => ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_string(), port),
    };
    seed.clone().set_addr(addr)
}

/// The master that `CLUSTER SHARDS` says owns `slot`, unless it is
/// marked failed (its TLS port with `tls`).
pub(super) fn slot_master(shards: &Value, slot: i64, tls: bool) -> Option<(String, u16)> {
    let Value::Array(shards) = shards else {
        return None;
    };
    let owns = |shard: &Value| match field(shard, "slots") {
        Some(Value::Array(ranges)) => ranges.chunks(2).any(|r| match r {
            [Value::Int(from), Value::Int(to)] => (*from..=*to).contains(&slot),
            _ => false,
        }),
        _ => false,
    };
    let shard = shards.iter().find(|s| owns(s))?;
    let Some(Value::Array(nodes)) = field(shard, "nodes") else {
        return None;
    };
    nodes.iter().find_map(|node| {
        let text = |k: &str| match field(node, k) {
            Some(Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
            Some(Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        };
        let port = match field(node, if tls { "tls-port" } else { "port" }) {
            Some(Value::Int(p)) => u16::try_from(*p).ok(),
            _ => None,
        };
        let endpoint = text("endpoint")?;
        // `?` stands for an unknown endpoint.
        let usable = !endpoint.is_empty() && endpoint != "?" && text("health").as_deref() != Some("failed");
        (usable && text("role").as_deref() == Some("master")).then_some((endpoint, port?))
    })
}

/// Field `name` of a reply map (RESP3), or of its flat key-value list
/// (RESP2).
fn field<'v>(map: &'v Value, name: &str) -> Option<&'v Value> {
    match map {
        Value::Map(pairs) => pairs.iter().find_map(|(k, v)| is(k, name).then_some(v)),
        Value::Array(items) => items.chunks(2).find_map(|kv| match kv {
            [k, v] if is(k, name) => Some(v),
            _ => None,
        }),
        _ => None,
    }
}

fn is(v: &Value, name: &str) -> bool {
    match v {
        Value::BulkString(b) => b == name.as_bytes(),
        Value::SimpleString(s) => s == name,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node(endpoint: &str, port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk("abc"),
            bulk("port"),
            Value::Int(port),
            bulk("ip"),
            bulk(endpoint),
            bulk("endpoint"),
            bulk(endpoint),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            Value::Int(1),
            bulk("health"),
            bulk(health),
        ])
    }

    #[test]
    fn the_subscription_goes_to_the_live_master_that_owns_the_slot() {
        let shard = |ranges: &[i64], nodes: Vec<Value>| {
            Value::Array(vec![
                bulk("slots"),
                Value::Array(ranges.iter().map(|r| Value::Int(*r)).collect()),
                bulk("nodes"),
                Value::Array(nodes),
            ])
        };
        let shards = Value::Array(vec![
            shard(
                &[0, 5460],
                vec![
                    node("10.0.0.4", 7003, "replica", "online"),
                    node("10.0.0.1", 7000, "master", "online"),
                ],
            ),
            shard(
                &[5461, 6000, 9000, 10922],
                vec![
                    node("10.0.0.5", 7004, "replica", "online"),
                    node("10.0.0.2", 7001, "master", "online"),
                ],
            ),
            shard(&[10923, 16383], vec![node("10.0.0.3", 7002, "master", "failed")]),
            shard(&[6001, 8999], vec![node("?", 7006, "master", "online")]),
        ]);
        let at = |slot| slot_master(&shards, slot, false);
        assert_eq!(at(0), Some(("10.0.0.1".to_string(), 7000)));
        assert_eq!(at(5460), Some(("10.0.0.1".to_string(), 7000)));
        assert_eq!(at(5461), Some(("10.0.0.2".to_string(), 7001)));
        assert_eq!(at(9500), Some(("10.0.0.2".to_string(), 7001)), "the second range");
        assert_eq!(at(12000), None, "its master failed: no replica stands in");
        assert_eq!(at(7000), None, "an unknown endpoint");
        assert_eq!(at(6000), Some(("10.0.0.2".to_string(), 7001)));
        assert!(slot_master(&Value::Nil, 0, false).is_none());
    }

    #[test]
    fn a_sharded_subscription_is_lost_on_anything_but_its_messages() {
        let push = |kind, data| PushInfo { kind, data };
        assert_eq!(
            sharded_message(push(PushKind::SMessage, vec![bulk("ch"), bulk("abc")])),
            Pushed::Message("abc".into())
        );
        assert_eq!(
            sharded_message(push(PushKind::SSubscribe, vec![bulk("ch"), Value::Int(1)])),
            Pushed::Other
        );
        assert_eq!(
            sharded_message(push(PushKind::SMessage, vec![bulk("ch"), Value::Int(1)])),
            Pushed::Other
        );
        for kind in [PushKind::SUnsubscribe, PushKind::Disconnection, PushKind::Message] {
            assert_eq!(sharded_message(push(kind, vec![bulk("ch")])), Pushed::Lost);
        }
    }

    #[test]
    fn a_found_node_keeps_the_configured_password() {
        let seed = "redis://:pw@10.0.0.1:7000".into_connection_info().unwrap();
        let info = node_info(&seed, "10.0.0.9", 7009);
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert!(matches!(info.addr(), ConnectionAddr::Tcp(h, 7009) if h == "10.0.0.9"));
    }
}
