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
//! Pub/sub is Redis's ordinary `PUBLISH`/`SUBSCRIBE`, which a cluster
//! broadcasts to every node: unigate subscribes on one node — a replica
//! if there is one, so that a master's failover leaves the subscription
//! alone — and publishes (revocations, changes, its heartbeat) on that
//! same node, which passes them to every other. Sharded pub/sub would
//! bind the channel to one shard, whose failover would then cut every
//! replica off from every revocation; and each replica needs every
//! revocation anyway. When that node goes, the subscription drops, the
//! store fails closed, and unigate subscribes on another node at once.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection, PubSub};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};

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
    },
}

/// A connection to Redis, of whichever kind the source needs.
#[derive(Clone)]
pub enum Conn {
    /// One server (reconnecting by itself).
    Server(ConnectionManager),
    /// One node of a cluster (the one subscribed on).
    Node(MultiplexedConnection),
    /// A whole cluster, each command routed to its key's node.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Node(c) => c.req_packed_command(cmd),
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
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// What `Source::connect` opens.
pub(super) struct Connections {
    pub commands: Conn,
    /// Where revocations, changes and heartbeats are published: the
    /// server, or the cluster node `subscription` is on.
    pub publish: Conn,
    /// Not subscribed to anything yet.
    pub subscription: PubSub,
}

impl Source {
    pub(super) fn new(target: Target<'_>) -> Result<Source, String> {
        Ok(match target {
            Target::Url(url) => Source::Direct(redis::Client::open(url).map_err(|e| format!("redis_url: {e}"))?),
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
                    master.to_string(),
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
                let client = ClusterClient::builder(seeds.clone())
                    .connection_timeout(TIMEOUT)
                    .response_timeout(TIMEOUT)
                    .retries(3)
                    .build()
                    .map_err(|e| format!("redis_cluster: {e}"))?;
                Source::Cluster { client, seeds }
            }
        })
    }

    /// Opens the connections.
    pub(super) async fn connect(&self) -> RedisResult<Connections> {
        let client = match self {
            Source::Direct(c) => c.clone(),
            Source::Sentinel(s) => s.lock().await.async_get_client().await?,
            Source::Cluster { client, seeds } => return connect_cluster(client, seeds).await,
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let manager = Conn::Server(client.get_connection_manager_with_config(config).await?);
        Ok(Connections {
            commands: manager.clone(),
            publish: manager,
            subscription: client.get_async_pubsub().await?,
        })
    }
}

async fn connect_cluster(client: &ClusterClient, seeds: &[ConnectionInfo]) -> RedisResult<Connections> {
    let mut commands = Conn::Cluster(client.get_async_connection().await?);
    let shards: Value = redis::cmd("CLUSTER").arg("SHARDS").query_async(&mut commands).await?;
    let seed = &seeds[0];
    let tls = matches!(seed.addr(), ConnectionAddr::TcpTls { .. });
    let mut candidates = subscription_nodes(&shards, tls);
    // Should the map say nothing usable, the configured nodes.
    candidates.extend(seeds.iter().filter_map(|s| match s.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
        _ => None,
    }));
    let mut last = None;
    for (host, port) in candidates {
        let node = redis::Client::open(node_info(seed, &host, port))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let opened = async {
            let publish = node.get_multiplexed_async_connection_with_config(&config).await?;
            let subscription = tokio::time::timeout(TIMEOUT, node.get_async_pubsub())
                .await
                .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connection timed out")))??;
            Ok::<_, redis::RedisError>((publish, subscription))
        };
        match opened.await {
            Ok((publish, subscription)) => {
                tracing::info!(node = %format!("{host}:{port}"), "session store (Redis Cluster): pub/sub on this node");
                return Ok(Connections {
                    commands,
                    publish: Conn::Node(publish),
                    subscription,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| (redis::ErrorKind::Io, "no Redis Cluster node to subscribe on").into()))
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

/// The nodes `CLUSTER SHARDS` does not name failed, replicas first: where
/// to subscribe (their TLS port with `tls`). A master's failover then
/// leaves the subscription alone. (A replica that has not had a write to
/// copy yet counts as `loading`: it takes subscriptions all the same.)
pub(super) fn subscription_nodes(shards: &Value, tls: bool) -> Vec<(String, u16)> {
    let (mut replicas, mut masters) = (Vec::new(), Vec::new());
    let Value::Array(shards) = shards else {
        return Vec::new();
    };
    for shard in shards {
        let Some(Value::Array(nodes)) = field(shard, "nodes") else {
            continue;
        };
        for node in nodes {
            let text = |k: &str| match field(node, k) {
                Some(Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
                Some(Value::SimpleString(s)) => Some(s.clone()),
                _ => None,
            };
            let port = match field(node, if tls { "tls-port" } else { "port" }) {
                Some(Value::Int(p)) => u16::try_from(*p).ok(),
                _ => None,
            };
            let (Some(endpoint), Some(port)) = (text("endpoint"), port) else {
                continue;
            };
            // `?` stands for an unknown endpoint.
            if endpoint.is_empty() || endpoint == "?" || text("health").as_deref() == Some("failed") {
                continue;
            }
            match text("role").as_deref() {
                Some("replica") => replicas.push((endpoint, port)),
                _ => masters.push((endpoint, port)),
            }
        }
    }
    replicas.extend(masters);
    replicas
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
    fn subscriptions_go_to_healthy_replicas_first() {
        let shard = |nodes: Vec<Value>| {
            Value::Array(vec![
                bulk("slots"),
                Value::Array(vec![Value::Int(0), Value::Int(5460)]),
                bulk("nodes"),
                Value::Array(nodes),
            ])
        };
        let shards = Value::Array(vec![
            shard(vec![
                node("10.0.0.1", 7000, "master", "online"),
                node("10.0.0.4", 7003, "replica", "failed"),
            ]),
            shard(vec![
                node("10.0.0.2", 7001, "master", "online"),
                node("10.0.0.5", 7004, "replica", "loading"),
                node("?", 7006, "replica", "online"),
            ]),
        ]);
        assert_eq!(
            subscription_nodes(&shards, false),
            vec![
                ("10.0.0.5".to_string(), 7004),
                ("10.0.0.1".to_string(), 7000),
                ("10.0.0.2".to_string(), 7001),
            ]
        );
        assert!(subscription_nodes(&Value::Nil, false).is_empty());
    }

    #[test]
    fn a_found_node_keeps_the_configured_password() {
        let seed = "redis://:pw@10.0.0.1:7000".into_connection_info().unwrap();
        let info = node_info(&seed, "10.0.0.9", 7009);
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert!(matches!(info.addr(), ConnectionAddr::Tcp(h, 7009) if h == "10.0.0.9"));
    }
}
