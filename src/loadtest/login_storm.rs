//! `unigate loadtest login-storm`: interactive logins at scale, on loopback
//! only.
//!
//! The embedded IdP (like KaseyaOne) accepts each verification code once
//! per user and 30 s, so a storm of full logins needs many users. This
//! generates `--users` test users (one shared password, a random TOTP
//! secret each) into a copy of the demo IdP's config, starts `unigate demo`
//! with it (and with the per-address login limits raised: every virtual
//! user comes from 127.0.0.1), gives each user an account in the bms-east
//! module (by SCIM, as its account matching expects), and runs the `login`
//! scenario with the users taken in turn.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use rand::RngCore;
use url::Url;

use super::stack::{Children, DemoPorts};
use super::{Options as RunOptions, Report, Scenario, User};

const PASSWORD: &str = "storm-test-pass";

/// `unigate loadtest login-storm`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Test users to generate.
    #[arg(long, default_value_t = 3000)]
    pub users: usize,
    /// Virtual users at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seconds of warm-up, not counted.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// unigate worker threads (default: the CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The identity provider's config file the generated one copies.
    #[arg(long, default_value = "config/idp.demo.toml")]
    pub idp_config: PathBuf,
    /// unigate's config file the generated one copies.
    #[arg(long, default_value = "config/unigate.demo.toml")]
    pub config: PathBuf,
    /// Where the JSON summary goes.
    #[arg(long, default_value = "target/loadtest-login-storm.json")]
    pub json: PathBuf,
    /// Where the demo's log and the IdP's outbox go.
    #[arg(long, default_value = "target/loadtest-login-storm")]
    pub out_dir: PathBuf,
}

/// The IdP config `demo` (TOML text) with its own users left out, its
/// outbox in `outbox`, its per-address login limits raised, and `users`
/// appended.
fn idp_config_text(demo: &str, outbox: &Path, users: &str) -> String {
    // Everything but the demo's own users (clients, companies, settings).
    let mut head = String::new();
    let mut skipping = false;
    for line in demo.split_inclusive('\n') {
        if line.starts_with('[') {
            skipping = line.trim() == "[[user]]";
        }
        if !skipping {
            head.push_str(line);
        }
    }
    let head = head.replace("dir = \"outbox\"", &format!("dir = {:?}", outbox.display().to_string()));
    let head = head.replacen(
        "[login]\n",
        "[login]\nmax_starts_per_minute_per_ip = 1000000\nmax_password_checks_per_minute_per_ip = 1000000\n",
        1,
    );
    format!("{head}\n{users}")
}

/// Generates the users and configs, starts the demo, runs the storm.
/// Prints the report and writes its JSON; `bin`: the unigate binary to
/// start.
pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.users > 0, "--users must be at least 1");
    let work = std::env::current_dir()?.join(&opts.out_dir);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let hashed = crate::idp::directory::hash_password(PASSWORD);
    // `$argon2id$v=19$m=…,t=…,p=…$salt$hash`: the parameters.
    let params = hashed.split('$').nth(3).unwrap_or("?").to_string();

    let mut users = Vec::with_capacity(opts.users);
    let mut entries = String::new();
    for i in 0..opts.users {
        let mut raw = vec![0u8; 20];
        rand::thread_rng().fill_bytes(&mut raw);
        let secret = totp_rs::Secret::Raw(raw.clone()).to_encoded().to_string();
        let name = format!("storm{i:05}");
        entries.push_str(&format!(
            "[[user]]\nusername = \"{name}\"\ncompany = \"Acme MSP\"\nemail = \"{name}@acme-msp.example\"\n\
             display_name = \"Storm User {i}\"\npassword_hash = \"{hashed}\"\ntotp_secret = \"{secret}\"\n\
             groups = [\"portal-users\", \"bms-users\"]\n\n"
        ));
        users.push(User {
            username: name,
            company: "Acme MSP".into(),
            password: PASSWORD.into(),
            totp: raw,
        });
    }
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    // Both beside the demo configs, whose relative secret paths they keep.
    let dir = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
    let pid = std::process::id();
    let idp_cfg = dir(&opts.idp_config).join(format!(".loadtest-login-storm-{pid}-idp.toml"));
    let gw_cfg = dir(&opts.config).join(format!(".loadtest-login-storm-{pid}.toml"));
    let _generated = super::stack::Generated(vec![idp_cfg.clone(), gw_cfg.clone()]);
    std::fs::write(
        &idp_cfg,
        idp_config_text(&read(&opts.idp_config)?, &work.join("outbox"), &entries),
    )?;
    // unigate: the per-address login-start limit raised.
    let gw = super::stack::raised_login_limit(&read(&opts.config)?);
    std::fs::write(&gw_cfg, gw)?;

    let d = DemoPorts::free()?;
    let mut args = vec!["demo".to_string(), "--config".into(), gw_cfg.display().to_string()];
    args.extend(["--idp-config".into(), idp_cfg.display().to_string()]);
    args.extend(d.args());
    if let Some(t) = opts.threads {
        args.extend(["--threads".into(), t.to_string()]);
    }
    let log = std::fs::File::create(work.join("demo.log"))?;
    let mut procs = Children::new(Duration::from_secs(30));
    procs.spawn(
        "unigate demo",
        Command::new(bin)
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    d.wait(Duration::from_secs(30))?;
    // bms-east's first server.
    let east = d.module_port + 1;
    super::stack::wait_port(east, Duration::from_secs(30))?;

    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async {
        // bms-east matches module accounts by SCIM: give each user one, the
        // way an administrator (or provisioning) would.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        for u in &users {
            let body = serde_json::json!({
                "userName": u.username,
                "emails": [{"value": format!("{}@acme-msp.example", u.username)}],
            });
            let s = http
                .post(format!("http://127.0.0.1:{east}/scim/v2/Users"))
                .header("content-type", "application/scim+json")
                .body(body.to_string())
                .send()
                .await?
                .status();
            anyhow::ensure!(
                s.as_u16() == 201 || s.as_u16() == 409,
                "creating the module account of {}: status {}",
                u.username,
                s.as_u16()
            );
        }
        // bms-east: Unified Login without the module's own login.
        super::run(RunOptions {
            url: Url::parse(&format!("http://bms-east.localhost:{}/page.html", d.port))?,
            connect: Some(d.connect()),
            idp: Some(d.idp()),
            scenario: Scenario::Login,
            concurrency: opts.concurrency,
            rate: None,
            duration: Duration::from_secs(opts.duration),
            warmup: Duration::from_secs(opts.warmup),
            sessions: 64,
            mix: 9,
            users,
            logout_path: "/_unigate/logout".into(),
            follow_idp_logout: false,
            progress: false,
        })
        .await
        .map_err(anyhow::Error::msg)
    });
    let done = result.and_then(|report| {
        print!("{}", report.text());
        if let Some(dir) = opts.json.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&opts.json, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", opts.json.display()))?;
        Ok(report)
    });
    println!(
        "\n{} generated users, Argon2id {params} (the embedded IdP's password hashing)",
        opts.users
    );
    procs.stop();
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_idp_config_keeps_all_but_the_demo_users() {
        let demo = "[login]\nx = 1\n\n[outbox]\ndir = \"outbox\"\n\n[[user]]\nusername = \"alice\"\n\n[[client]]\nid = \"c\"\n";
        let t = idp_config_text(demo, Path::new("/w/outbox"), "[[user]]\nusername = \"storm00000\"\n");
        assert!(!t.contains("alice"), "{t}");
        assert!(t.contains("[[client]]\nid = \"c\"") && t.contains("username = \"storm00000\""));
        assert!(t.contains("dir = \"/w/outbox\""));
        assert!(t.contains("[login]\nmax_starts_per_minute_per_ip = 1000000\n"));
    }
}
