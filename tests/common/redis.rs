//! A `redis-server` of a test's own, and the `[session]` keys that use it.

use std::time::Duration;

use super::TomlEdit;
use unigate::gateway::server::free_port;

/// A `redis-server` of our own; killed when dropped.
pub struct Redis {
    pub child: std::process::Child,
    pub port: u16,
}

impl Redis {
    pub async fn start(port: u16) -> Redis {
        Self::start_with(port, &[]).await
    }

    /// A `redis-server` on `port` with `extra` arguments (`--replicaof …`).
    pub async fn start_with(port: u16, extra: &[&str]) -> Redis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server (scripts/test does)");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Redis { child, port }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis for one test, and the `[session]` table that uses it.
pub async fn redis_store() -> (Redis, toml::Table) {
    let redis = Redis::start(unigate::gateway::server::free_port().unwrap()).await;
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(dir.join("redis_url"), format!("redis://127.0.0.1:{}/0", redis.port)).unwrap();
    std::fs::write(dir.join("key"), "a-test-key-of-more-than-32-characters!").unwrap();
    let mut session = toml::Table::new();
    session
        .set("store", "redis")
        .set("redis_url", format!("file:{}", dir.join("redis_url").display()))
        .set("encryption_key", format!("file:{}", dir.join("key").display()));
    (redis, session)
}

/// A Redis Cluster of our own on loopback: three masters with a replica
/// each, `cluster-node-timeout 1000`, and `cluster-require-full-coverage
/// no` (the other shards serve while one has no master, as unigate's docs
/// advise). Its servers are killed when it is dropped.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
    pub dir: std::path::PathBuf,
    /// The ports of the nodes killed.
    pub killed: Vec<u16>,
    /// Each node's port and cluster bus port.
    buses: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts the cluster. A free port another process takes before the
    /// node binds it: that node starts again on others (five tries); a
    /// cluster that cannot be made is made anew (three attempts).
    pub async fn start() -> RedisCluster {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start().await {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("no Redis Cluster: {last}");
    }

    async fn try_start() -> Result<RedisCluster, String> {
        let dir = tempfile::tempdir().unwrap().keep();
        let (mut nodes, mut buses) = (Vec::new(), Vec::new());
        while nodes.len() < 6 {
            let mut tries = 0;
            let node = loop {
                let (port, bus) = loop {
                    let (a, b) = (free_port().unwrap(), free_port().unwrap());
                    if a != b {
                        break (a, b);
                    }
                };
                std::fs::create_dir(dir.join(port.to_string())).unwrap();
                match Self::node(&dir, port, bus).await {
                    Ok(node) => break (node, bus),
                    Err(e) if tries == 4 => return Err(e),
                    Err(_) => tries += 1,
                }
            };
            buses.push((node.0.port, node.1));
            nodes.push(node.0);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli is not installed: apt-get install redis-tools (scripts/test does)");
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cluster = RedisCluster {
            nodes,
            dir,
            killed: Vec::new(),
            buses,
        };
        cluster.wait_ok(3, Duration::from_secs(20)).await;
        Ok(cluster)
    }

    /// The node on `port` (bus `bus`), in its folder under `dir` (its
    /// cluster state, and what a replica loads), once it answers as itself.
    async fn node(dir: &std::path::Path, port: u16, bus: u16) -> Result<Redis, String> {
        let own = dir.join(port.to_string());
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--cluster-port", &bus.to_string()])
            .args(["--bind", "127.0.0.1", "--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(own.join("nodes.conf"))
            .arg("--dir")
            .arg(&own)
            .args([
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
            ])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--appendonly", "no", "--save", ""])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server (scripts/test does)");
        let mut node = Redis { child, port };
        let pid = format!("process_id:{}\r\n", node.child.id());
        for _ in 0..200 {
            if node.child.try_wait().ok().flatten().is_some() {
                return Err(format!("the node on {port} (bus {bus}) stopped: a port was taken"));
            }
            if Self::text(port, redis::cmd("INFO").arg("server")).await.contains(&pid) {
                return Ok(node);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        node.kill();
        Err(format!("the node on {port} did not answer as itself"))
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// `cmd` sent to the node on `port` alone (no redirect followed).
    pub async fn ask<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let mut c = client.get_multiplexed_async_connection().await?;
        cmd.query_async(&mut c).await
    }

    pub async fn text(port: u16, cmd: &redis::Cmd) -> String {
        Self::ask(port, cmd).await.unwrap_or_default()
    }

    fn live(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().map(|n| n.port).filter(|p| !self.killed.contains(p))
    }

    /// Waits until every node still running says the cluster is up, and
    /// `replicas` of the masters have a replica that holds their writes:
    /// a write there and `WAIT` for one replica say so. (A replica shown
    /// in sync by both sides can still take most of a second to confirm
    /// writes to a newly promoted master; unigate's `WAIT` would time out
    /// meanwhile.)
    pub async fn wait_ok(&self, replicas: usize, timeout: Duration) {
        let ports: Vec<u16> = self.live().collect();
        super::wait_until("the Redis Cluster is up", timeout, async || {
            let mut copied = 0;
            for &p in &ports {
                let info = Self::text(p, redis::cmd("CLUSTER").arg("INFO")).await;
                if !info.contains("cluster_state:ok") {
                    return false;
                }
                let repl = Self::text(p, redis::cmd("INFO").arg("replication")).await;
                if repl.contains("role:master") && !repl.contains("connected_slaves:0") && Self::copies_writes(p).await
                {
                    copied += 1;
                }
            }
            copied == replicas
        })
        .await;
    }

    /// Whether a write to the master on `port` reaches a replica within
    /// 100 ms (on a key of one of its slots).
    async fn copies_writes(port: u16) -> bool {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
            return false;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        for k in 0..1000 {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(format!("test:wait-ok:{k}"))
                .arg(1)
                .arg("PX")
                .arg(10_000)
                .cmd("WAIT")
                .arg(1)
                .arg(100)
                // Gone at once: a slot a test moves must hold only its keys.
                .cmd("DEL")
                .arg(format!("test:wait-ok:{k}"));
            // Another master's key answers MOVED: the next one.
            if let Ok((_, copies, _)) = pipe.query_async::<((), i64, i64)>(&mut c).await {
                return copies >= 1;
            }
        }
        false
    }

    /// The port of the master that holds `key`.
    pub async fn master_of(&self, key: &str) -> u16 {
        for p in self.live() {
            // Any other node answers MOVED; a replica too (no READONLY).
            if Self::ask::<i64>(p, redis::cmd("EXISTS").arg(key)).await == Ok(1) {
                return p;
            }
        }
        panic!("no master holds {key}");
    }

    /// The port of the replica of the master on `port`.
    pub async fn replica_of(&self, master: u16) -> u16 {
        for p in self.live() {
            let repl = Self::text(p, redis::cmd("INFO").arg("replication")).await;
            if repl.contains("role:slave") && repl.contains(&format!("master_port:{master}\r\n")) {
                return p;
            }
        }
        panic!("no replica of {master}");
    }

    /// Whether the node on `observer` holds the one on `port` failed.
    pub async fn marked_failed(observer: u16, port: u16) -> bool {
        let nodes = Self::text(observer, redis::cmd("CLUSTER").arg("NODES")).await;
        nodes.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() > 2 && f[1].starts_with(&format!("127.0.0.1:{port}@")) && f[2].split(',').any(|x| x == "fail")
        })
    }

    /// The cluster's id of the node on `port`.
    pub async fn node_id(port: u16) -> String {
        Self::ask(port, redis::cmd("CLUSTER").arg("MYID")).await.unwrap()
    }

    /// The masters' ports.
    pub async fn masters(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for p in self.live() {
            if Self::text(p, redis::cmd("INFO").arg("replication"))
                .await
                .contains("role:master")
            {
                out.push(p);
            }
        }
        out
    }

    /// Starts the node killed on `port` again, with its cluster state: it
    /// rejoins, as a replica of whoever took its slots.
    pub async fn restart(&mut self, port: u16) {
        let bus = self
            .buses
            .iter()
            .find(|(p, _)| *p == port)
            .expect("a node of the cluster")
            .1;
        let node = Self::node(&self.dir, port, bus).await.expect("the node starts again");
        let i = self.nodes.iter().position(|n| n.port == port).unwrap();
        self.nodes[i] = node;
        self.killed.retain(|p| *p != port);
    }

    /// The port of the master that owns the slot of `name` (a key or a
    /// sharded channel), as the first live node sees the cluster.
    pub async fn owner_of(&self, name: &str) -> u16 {
        let first = self.live().next().expect("a live node");
        let slot: i64 = Self::ask(first, redis::cmd("CLUSTER").arg("KEYSLOT").arg(name))
            .await
            .unwrap();
        let nodes = Self::text(first, redis::cmd("CLUSTER").arg("NODES")).await;
        for line in nodes.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let owns = f[8..].iter().any(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                matches!((a.parse::<i64>(), b.parse::<i64>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
            });
            if owns {
                let port = f[1].split(['@', ':']).nth(1).unwrap();
                return port.parse().unwrap();
            }
        }
        panic!("no master owns the slot of {name}");
    }

    /// Kills (SIGKILL) the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of the cluster");
        n.kill();
        self.killed.push(port);
    }
}
