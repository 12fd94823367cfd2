//! What the `unigate` command's subcommands do, for the binary (whose
//! `main.rs` only parses the command line): load and check configs, serve
//! until stopped, answer a health check. The demo is [`crate::demo`], the
//! load tool [`crate::loadtest::cli`].

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::demo_module::{DemoModuleConfig, DemoModuleServer};
use crate::gateway::config::GatewayConfig;
use crate::gateway::server::GatewayServer;
use crate::idp::{IdpConfig, IdpServer, directory};

/// The identity provider's config, every problem listed.
pub fn load_idp(path: &Path) -> anyhow::Result<IdpConfig> {
    IdpConfig::load(path).map_err(|e| anyhow::anyhow!("{} has problems:\n{e}", path.display()))
}

/// unigate's config, every problem listed.
pub fn load_gateway(path: &Path) -> anyhow::Result<GatewayConfig> {
    GatewayConfig::load(path).map_err(|e| anyhow::anyhow!("{} has problems:\n{e}", path.display()))
}

/// `unigate run`: serves until SIGTERM (draining first) or Ctrl-C;
/// SIGHUP reloads the config, as does a change to the file.
pub fn run_gateway(config: PathBuf) -> anyhow::Result<()> {
    let cfg = load_gateway(&config)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut server = GatewayServer::start(cfg).await?;
        println!("unigate: listening on {}", server.addr);
        server.watch_config(config.clone());
        let drain = run_until_stopped(&server, &config).await;
        server.stop(drain).await;
        anyhow::Ok(())
    })
}

/// `unigate check`: the config's problems, then what the identity
/// provider's discovery says about it.
pub fn check(config: &Path) -> anyhow::Result<()> {
    let cfg = load_gateway(config)?;
    println!("{}: ok", config.display());
    if cfg.idp.api_audience.is_none() {
        println!(
            "note: identity_provider.api_audience is not set: `Authorization: Bearer` JWT access tokens are refused"
        );
    }
    let discovery = match fetch_discovery(&cfg.idp.issuer) {
        Ok(d) => Some(d),
        Err(e) => {
            println!(
                "note: the identity provider's discovery could not be read ({e}); claims and scopes not checked against it"
            );
            None
        }
    };
    let mut problems = 0;
    for n in crate::gateway::check::notes(&cfg, discovery.as_ref()) {
        match n {
            crate::gateway::check::Note::Info(t) => println!("note: {t}"),
            crate::gateway::check::Note::Warning(t) => println!("warning: {t}"),
            crate::gateway::check::Note::Problem(t) => {
                problems += 1;
                println!("problem: {t}");
            }
        }
    }
    if problems > 0 {
        anyhow::bail!("{problems} problem(s) with the identity provider");
    }
    Ok(())
}

/// The provider's discovery document, for `check` (3 s at most).
pub fn fetch_discovery(issuer: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut r = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .redirect(reqwest::redirect::Policy::none())
                .build()?
                .get(&url)
                .send()
                .await?
                .error_for_status()?;
            let mut body = Vec::new();
            while let Some(chunk) = r.chunk().await? {
                body.extend_from_slice(&chunk);
                anyhow::ensure!(body.len() <= 1024 * 1024, "the document is larger than 1 MiB");
            }
            Ok(serde_json::from_slice::<serde_json::Value>(&body)?)
        })
}

/// `unigate healthcheck`: Ok on a 200 within two seconds.
pub fn healthcheck(url: &str, insecure: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .danger_accept_invalid_certs(insecure)
            .build()?;
        let status = client.get(url).send().await?.status();
        anyhow::ensure!(status == reqwest::StatusCode::OK, "{url} answered {status}");
        println!("{url}: ok");
        Ok(())
    })
}

/// `unigate idp`: serves the identity provider until Ctrl-C or SIGTERM.
pub fn serve_idp(cfg: IdpConfig) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let server = IdpServer::start(cfg).await?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // One machine-readable line first: scripts read the issuer from it.
            writeln!(out, "unigate idp: issuer {}", server.issuer())?;
            out.flush()?;
        }
        wait_for_stop().await;
        tracing::info!("stopping");
        server.shutdown().await;
        anyhow::Ok(())
    })
}

/// `unigate idp totp`: a user's current verification code.
pub fn idp_totp(config: &Path, user: &str, company: &str) -> anyhow::Result<()> {
    let cfg = load_idp(config)?;
    let u = cfg
        .users
        .iter()
        .find(|u| {
            directory::norm(&u.username) == directory::norm(user)
                && directory::norm(&u.company) == directory::norm(company)
        })
        .ok_or_else(|| anyhow::anyhow!("no user `{user}` in company `{company}` in {}", config.display()))?;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs();
    println!("{}", directory::totp_code(&u.totp_secret, now));
    Ok(())
}

/// `unigate idp user add`: adds the user to the users file and writes
/// their welcome mail to the outbox; its link starts with `base_url`
/// (default: the config's issuer, else `http://` + its listen address).
pub fn idp_user_add(config: &Path, new: crate::idp::welcome::NewUser, base_url: Option<&str>) -> anyhow::Result<()> {
    use crate::idp::welcome;
    let cfg = load_idp(config)?;
    let base = welcome::link_base(&cfg, base_url)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let added = rt.block_on(welcome::add_user(&cfg, &base, new, SystemTime::now()))?;
    println!(
        "added {} ({}) to {}; welcome mail for {} written to {}",
        added.username,
        added.company,
        added.users_file.display(),
        added.email,
        added.mail.display()
    );
    Ok(())
}

/// `unigate idp user list`: the config's users and the added ones.
pub fn idp_user_list(config: &Path) -> anyhow::Result<()> {
    let cfg = load_idp(config)?;
    for line in crate::idp::welcome::list_users(&cfg, SystemTime::now())? {
        println!("{line}");
    }
    Ok(())
}

/// `unigate idp hash-password`: a password from standard input, hashed.
pub fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    println!("{}", directory::hash_password(password));
    Ok(())
}

/// `unigate demo-module`: one demo module until Ctrl-C or SIGTERM.
pub fn demo_module(listen: SocketAddr, jwks_url: String, name: String) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let m = DemoModuleServer::start(DemoModuleConfig {
            listen,
            accounts: crate::demo_module::demo_accounts(&name),
            title: name.clone(),
            name,
            jwks_url,
            scim_token: None,
        })
        .await?;
        println!("demo module: listening on {}", m.addr);
        wait_for_stop().await;
        m.stop();
        anyhow::Ok(())
    })
}

/// Serves until SIGTERM (true: drain first) or Ctrl-C (false); SIGHUP
/// reloads the configuration.
#[cfg(unix)]
pub async fn run_until_stopped(server: &GatewayServer, config: &Path) -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return false;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return false,
            _ = term.recv() => return true,
            _ = hup.recv() => {
                server.reload_from(config);
            }
        }
    }
}

#[cfg(not(unix))]
pub async fn run_until_stopped(_server: &GatewayServer, _config: &Path) -> bool {
    let _ = tokio::signal::ctrl_c().await;
    false
}

/// Returns on Ctrl-C or SIGTERM.
pub async fn wait_for_stop() {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate() => {}
    }
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending().await
}
