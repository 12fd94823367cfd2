//! A `redis-server` of a test's own, and the `[session]` keys that use it.

use std::time::Duration;

use super::TomlEdit;

/// A `redis-server` of our own; killed when dropped.
pub struct Redis {
    pub child: std::process::Child,
    pub port: u16,
}

impl Redis {
    pub async fn start(port: u16) -> Redis {
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
