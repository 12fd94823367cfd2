//! Loopback stacks for the measurements: `unigate demo` (the embedded IdP,
//! the demo modules and unigate), `unigate passthrough` (a plain Pingora
//! proxy with no auth) and the like, each a child process of the given
//! binary — so that each is measured alone, and may run under a profiler —
//! on free loopback ports, stopped (SIGTERM, then waited for) when done.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use url::Url;

use super::User;

/// The demo user every measurement logs in as.
pub const DEMO_USER: &str = "alice";
const DEMO_PASSWORD: &str = "alice-demo-pass";

/// Child processes, stopped together: SIGTERM to each, then each waited
/// for (killed when it outlasts the timeout). Dropping stops them too.
pub struct Children {
    procs: Vec<(String, Child)>,
    timeout: Duration,
}

impl Children {
    /// `timeout`: how long each may take to stop once asked.
    pub fn new(timeout: Duration) -> Children {
        Children {
            procs: Vec::new(),
            timeout,
        }
    }

    /// Starts `cmd` (named `name` in errors); returns its process id.
    pub fn spawn(&mut self, name: &str, cmd: &mut Command) -> anyhow::Result<u32> {
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        self.procs.push((name.to_string(), child));
        Ok(pid)
    }

    /// Asks each to stop, and waits for them.
    pub fn stop(&mut self) {
        for (_, c) in &mut self.procs {
            if matches!(c.try_wait(), Ok(None)) {
                // std's kill is SIGKILL: a graceful stop (and a profiler's
                // last dump) needs SIGTERM.
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for (name, c) in &mut self.procs {
            let end = Instant::now() + self.timeout;
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= end => {
                        eprintln!("{name} did not stop within {:?}: killed", self.timeout);
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.procs.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port, never handed out twice in this process.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(crate::gateway::server::free_port()?)
}

/// The first of `span` consecutive free loopback ports.
pub fn free_ports(span: u16) -> anyhow::Result<u16> {
    for _ in 0..100 {
        // Handed out one below the other: consecutive unless one was busy.
        let ports = (0..span).map(|_| free_port()).collect::<anyhow::Result<Vec<u16>>>()?;
        let low = *ports.iter().min().expect("span > 0");
        if ports.iter().all(|p| (low..low + span).contains(p)) {
            return Ok(low);
        }
    }
    anyhow::bail!("no {span} consecutive free ports")
}

/// Waits until something accepts connections on the loopback port.
pub fn wait_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < end {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("nothing listening on {port}")
}

/// The ports of one `unigate demo`.
#[derive(Debug, Clone, Copy)]
pub struct DemoPorts {
    /// unigate's.
    pub port: u16,
    pub idp_port: u16,
    /// The first demo module's; the demo starts one on each of the next
    /// four too.
    pub module_port: u16,
}

impl DemoPorts {
    pub fn free() -> anyhow::Result<DemoPorts> {
        Ok(DemoPorts {
            port: free_port()?,
            idp_port: free_port()?,
            module_port: free_ports(5)?,
        })
    }

    /// `unigate demo`'s arguments for these ports.
    pub fn args(&self) -> Vec<String> {
        [
            ("--port", self.port),
            ("--idp-port", self.idp_port),
            ("--module-port", self.module_port),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    }

    /// Waits for unigate, the IdP and the first module.
    pub fn wait(&self, timeout: Duration) -> anyhow::Result<()> {
        for p in [self.port, self.idp_port, self.module_port] {
            wait_port(p, timeout)?;
        }
        Ok(())
    }

    /// The embedded IdP's origin.
    pub fn idp(&self) -> Url {
        Url::parse(&format!("http://127.0.0.1:{}", self.idp_port)).expect("a valid URL")
    }

    /// unigate's address.
    pub fn connect(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// `unigate passthrough --listen 127.0.0.1:PORT --upstream 127.0.0.1:UPSTREAM --threads 1`.
pub fn passthrough_args(port: u16, upstream: u16) -> Vec<String> {
    vec![
        "passthrough".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--upstream".into(),
        format!("127.0.0.1:{upstream}"),
        "--threads".into(),
        "1".into(),
    ]
}

/// The demo IdP's user `alice` (its password is the demo's, documented
/// in the README; the config holds only its hash).
pub fn demo_user(idp_config: &Path) -> anyhow::Result<User> {
    let cfg = crate::idp::IdpConfig::load(idp_config)
        .map_err(|e| anyhow::anyhow!("{} has problems:\n{e}", idp_config.display()))?;
    let u = cfg
        .users
        .iter()
        .find(|u| u.username == DEMO_USER)
        .with_context(|| format!("no user {DEMO_USER} in {}", idp_config.display()))?;
    Ok(User {
        username: u.username.clone(),
        company: u.company.clone(),
        password: DEMO_PASSWORD.into(),
        totp: u.totp_secret.clone(),
    })
}

/// Logs `user` in to the demo's portal module through unigate and the
/// IdP's forms; returns the value of unigate's session cookie.
pub async fn demo_session(ports: &DemoPorts, user: &User) -> anyhow::Result<String> {
    let url = Url::parse(&format!("http://portal.localhost:{}/_unigate/login", ports.port))?;
    let cookies = super::log_in(&url, Some(ports.connect()), &ports.idp(), user)
        .await
        .map_err(anyhow::Error::msg)?;
    cookies
        .into_iter()
        .find(|(k, _)| k == "unigate")
        .map(|(_, v)| v)
        .context("the login set no unigate session cookie")
}

/// A command for `bin` with `args`, its output discarded, logging at `log`.
pub fn quiet(bin: &Path, args: &[String], log: &str) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .env("RUST_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Files removed when dropped.
pub struct Generated(pub Vec<PathBuf>);

impl Drop for Generated {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A unigate config (TOML text) with the per-address login-start limit
/// raised out of a load test's way (its `[session]` table must exist).
pub fn raised_login_limit(config: &str) -> String {
    config.replacen("[session]\n", "[session]\nlogin_starts_per_minute = 4294967295\n", 1)
}
