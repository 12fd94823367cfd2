//! The `unigate` command: parse the command line, load config, build, run.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand, ValueEnum};
use unigate::demo_module::{DemoModuleConfig, DemoModuleServer};
use unigate::gateway::config::GatewayConfig;
use unigate::gateway::server::GatewayServer;
use unigate::idp::{IdpConfig, IdpServer, directory};

// glibc malloc showed up as a large share of a Pingora pass-through's time
// on this machine; mimalloc is built for many small, short-lived allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "unigate",
    version,
    about = "Log In with KaseyaOne for unmodified module portals"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run unigate in front of the configured modules.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a unigate config file and list every problem.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Load-test a running deployment's authentication path (README, "Load
    /// testing"). Talks only to `--url`'s origin and `--idp`.
    Loadtest(Box<LoadtestArgs>),
    /// Ask a running unigate whether it is healthy (container HEALTHCHECK:
    /// the image has no curl). Exit 0 on a 200 within two seconds, else 1.
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/_unigate/healthz")]
        url: String,
        /// Accept any certificate (a TLS listener checked on loopback, whose
        /// certificate names the public host).
        #[arg(long)]
        insecure: bool,
    },
    /// Run the embedded KaseyaOne-compatible development identity provider.
    Idp {
        /// The identity provider's config file.
        #[arg(long, global = true, default_value = "config/idp.demo.toml")]
        config: PathBuf,
        /// Listen here instead of the config's `server.listen` (port 0: any free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        #[command(subcommand)]
        action: Option<IdpAction>,
    },
    /// Run only the demo module (a legacy-style portal) on loopback.
    DemoModule {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// Where unigate publishes its assertion keys.
        #[arg(long, default_value = "http://127.0.0.1:8080/_unigate/jwks.json")]
        jwks_url: String,
        #[arg(long, default_value = "portal")]
        name: String,
    },
    /// A plain Pingora pass-through with no auth: the baseline of the load comparison.
    #[command(hide = true)]
    Passthrough {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        upstream: std::net::SocketAddr,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        work_stealing: bool,
    },
    /// Run the demo on loopback: the embedded identity provider, the demo
    /// module and unigate in front of it.
    Demo {
        /// The identity provider's config file.
        #[arg(long, default_value = "config/idp.demo.toml")]
        idp_config: PathBuf,
        /// unigate's config file.
        #[arg(long, default_value = "config/unigate.demo.toml")]
        config: PathBuf,
        /// Port of the identity provider.
        #[arg(long, default_value_t = 9000)]
        idp_port: u16,
        /// Port of unigate.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the demo module.
        #[arg(long, default_value_t = 8081)]
        module_port: u16,
        /// unigate worker threads (default: the config's, else the number of CPUs).
        #[arg(long)]
        threads: Option<usize>,
        /// Keep sessions in this Redis (`redis://127.0.0.1:6379/0`) instead
        /// of in memory, with a random encryption key for this run.
        #[arg(long)]
        redis_url: Option<String>,
    },
}

/// `unigate loadtest`'s options.
#[derive(clap::Args)]
struct LoadtestArgs {
    /// A module page behind unigate, e.g. http://portal.localhost:8080/page.html.
    #[arg(long)]
    url: url::Url,
    /// Connect here for the URL's host instead of resolving it.
    #[arg(long)]
    connect: Option<std::net::SocketAddr>,
    /// The identity provider's URL; logins are followed there and nowhere else.
    #[arg(long)]
    idp: Option<url::Url>,
    #[arg(long, value_enum, default_value_t = unigate::loadtest::Scenario::Browse)]
    scenario: unigate::loadtest::Scenario,
    /// Virtual users at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Iterations per second in all (open model); default: as fast as they go.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: std::time::Duration,
    /// Logged-in sessions in the pool `browse` and `mixed` use.
    #[arg(long, default_value_t = 64)]
    sessions: usize,
    /// `mixed`: page requests per SSO login.
    #[arg(long, default_value_t = 9)]
    mix: u32,
    /// Test users, a CSV file: username,company,password,totp_secret.
    #[arg(long)]
    users: Option<PathBuf>,
    /// A test user, the same four fields joined by commas (repeatable).
    #[arg(long)]
    user: Vec<String>,
    /// The path that logs out (`logout` scenario).
    #[arg(long, default_value = "/_unigate/logout")]
    logout_path: String,
    /// Follow each logout to the IdP's end-session endpoint (its
    /// back-channel logouts then reach the other modules).
    #[arg(long)]
    follow_idp_logout: bool,
    /// Write the JSON summary to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum IdpAction {
    /// Check the config file and list every problem.
    Check,
    /// Print a user's current verification code (TOTP).
    Totp {
        #[arg(long)]
        user: String,
        #[arg(long)]
        company: String,
    },
    /// Read a password from standard input and print its Argon2id hash.
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unigate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<IdpConfig> {
    IdpConfig::load(path).map_err(|e| anyhow::anyhow!("{} has problems:\n{e}", path.display()))
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Idp {
            config,
            listen,
            action: None,
        } => {
            let mut cfg = load(&config)?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            serve_idp(cfg, false)
        }
        Command::Idp {
            config,
            action: Some(IdpAction::Check),
            ..
        } => {
            load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Idp {
            config,
            action: Some(IdpAction::Totp { user, company }),
            ..
        } => {
            let cfg = load(&config)?;
            let u = cfg
                .users
                .iter()
                .find(|u| {
                    directory::norm(&u.username) == directory::norm(&user)
                        && directory::norm(&u.company) == directory::norm(&company)
                })
                .ok_or_else(|| anyhow::anyhow!("no user `{user}` in company `{company}` in {}", config.display()))?;
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs();
            println!("{}", directory::totp_code(&u.totp_secret, now));
            Ok(())
        }
        Command::Idp {
            action: Some(IdpAction::HashPassword),
            ..
        } => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let password = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            println!("{}", directory::hash_password(password));
            Ok(())
        }
        Command::Run { config } => {
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
        Command::DemoModule { listen, jwks_url, name } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let m = DemoModuleServer::start(DemoModuleConfig {
                    listen,
                    accounts: unigate::demo_module::demo_accounts(&name),
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
        Command::Passthrough {
            listen,
            upstream,
            threads,
            work_stealing,
        } => {
            unigate::gateway::passthrough::run(listen, upstream, threads, work_stealing);
            Ok(())
        }
        Command::Loadtest(args) => {
            let LoadtestArgs {
                url,
                connect,
                idp,
                scenario,
                concurrency,
                rate,
                duration,
                warmup,
                sessions,
                mix,
                users,
                user,
                logout_path,
                follow_idp_logout,
                json,
                quiet,
            } = *args;
            let mut text = user.join("\n");
            if let Some(f) = users {
                text.push('\n');
                text.push_str(&std::fs::read_to_string(&f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?);
            }
            let users = if text.trim().is_empty() && scenario == unigate::loadtest::Scenario::Plain {
                Vec::new()
            } else {
                unigate::loadtest::parse_users(&text).map_err(|e| anyhow::anyhow!("test users: {e}"))?
            };
            let opts = unigate::loadtest::Options {
                url,
                connect,
                idp,
                scenario,
                concurrency,
                rate,
                duration,
                warmup,
                sessions,
                mix,
                users,
                logout_path,
                follow_idp_logout,
                progress: !quiet,
            };
            let rt = tokio::runtime::Runtime::new()?;
            let report = rt
                .block_on(unigate::loadtest::run(opts))
                .map_err(|e| anyhow::anyhow!(e))?;
            print!("{}", report.text());
            if let Some(path) = json {
                let body = serde_json::to_string_pretty(&report)?;
                if path.as_os_str() == "-" {
                    println!("{body}");
                } else {
                    std::fs::write(&path, body)?;
                }
            }
            Ok(())
        }
        Command::Healthcheck { url, insecure } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(2))
                    .danger_accept_invalid_certs(insecure)
                    .build()?;
                let status = client.get(&url).send().await?.status();
                anyhow::ensure!(status == reqwest::StatusCode::OK, "{url} answered {status}");
                println!("{url}: ok");
                Ok(())
            })
        }
        Command::Check { config } => {
            let cfg = load_gateway(&config)?;
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
            for n in unigate::gateway::check::notes(&cfg, discovery.as_ref()) {
                match n {
                    unigate::gateway::check::Note::Info(t) => println!("note: {t}"),
                    unigate::gateway::check::Note::Problem(t) => {
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
        Command::Demo {
            idp_config,
            config,
            idp_port,
            port,
            module_port,
            threads,
            redis_url,
        } => demo(&idp_config, &config, idp_port, port, module_port, threads, redis_url),
    }
}

/// The provider's discovery document, for `check` (3 s at most).
fn fetch_discovery(issuer: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let r = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .redirect(reqwest::redirect::Policy::none())
                .build()?
                .get(&url)
                .send()
                .await?
                .error_for_status()?;
            let mut r = r;
            let mut body = Vec::new();
            while let Some(chunk) = r.chunk().await? {
                body.extend_from_slice(&chunk);
                anyhow::ensure!(body.len() <= 1024 * 1024, "the document is larger than 1 MiB");
            }
            Ok(serde_json::from_slice::<serde_json::Value>(&body)?)
        })
}

fn load_gateway(path: &std::path::Path) -> anyhow::Result<GatewayConfig> {
    GatewayConfig::load(path).map_err(|e| anyhow::anyhow!("{} has problems:\n{e}", path.display()))
}

/// Serves until SIGTERM (true: drain first) or Ctrl-C (false); SIGHUP
/// reloads the configuration.
#[cfg(unix)]
async fn run_until_stopped(server: &GatewayServer, config: &std::path::Path) -> bool {
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
async fn run_until_stopped(_server: &GatewayServer, _config: &std::path::Path) -> bool {
    let _ = tokio::signal::ctrl_c().await;
    false
}

async fn wait_for_stop() {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate() => {}
    }
}

/// The whole demo on loopback: IdP, demo module, unigate.
fn demo(
    idp_config: &std::path::Path,
    config: &std::path::Path,
    idp_port: u16,
    port: u16,
    module_port: u16,
    threads: Option<usize>,
    redis_url: Option<String>,
) -> anyhow::Result<()> {
    let mut idp = load(idp_config)?;
    let mut gw = load_gateway(config)?;
    if let Some(url) = redis_url {
        gw.session.redis = Some(unigate::gateway::config::RedisSettings {
            url: Some(unigate::secret::Secret::new(url)),
            sentinels: Vec::new(),
            sentinel_master: None,
            encryption_key: unigate::secret::Secret::new(unigate::idp::store::random_token()),
            prefix: format!("unigate-demo-{port}"),
            local_cache: std::time::Duration::from_secs(30),
        });
    }
    if let Some(t) = threads {
        gw.threads = t;
    }
    idp.listen.set_port(idp_port);
    idp.issuer = None;
    // Keep the demo client's registered URLs in step with the chosen port.
    for c in &mut idp.clients {
        for u in c.redirect_uris.iter_mut().chain(c.post_logout_redirect_uris.iter_mut()) {
            *u = u.replace(":8080/", &format!(":{port}/"));
        }
        for u in [&mut c.backchannel_logout_uri, &mut c.frontchannel_logout_uri]
            .into_iter()
            .flatten()
        {
            if let Ok(moved) = url::Url::parse(&u.as_str().replace(":8080/", &format!(":{port}/"))) {
                *u = moved;
            }
        }
    }
    gw.listen.set_port(port);
    gw.public_port = Some(port);
    gw.idp.issuer = format!("http://127.0.0.1:{idp_port}");
    gw.idp.post_logout_redirect_uri = gw
        .idp
        .post_logout_redirect_uri
        .map(|u| u.replace(":8080/", &format!(":{port}/")));
    // Each upstream of the demo config gets a demo module; `--module-port`
    // moves them all (the file's first is 8081).
    let shift = i32::from(module_port) - 8081;
    let mut to_start: Vec<(std::net::SocketAddr, String, String)> = Vec::new();
    for m in &mut gw.modules {
        let title = match &m.instance {
            Some(i) => format!("{} · {}", m.display_name, i.display_name),
            None => m.display_name.clone(),
        };
        let label = m.label().to_string();
        for u in &mut m.upstreams {
            let p = i32::from(u.port()) + shift;
            let p = u16::try_from(p)
                .map_err(|_| anyhow::anyhow!("--module-port {module_port} moves a module port out of range"))?;
            u.set_port(p);
            to_start.push((*u, label.clone(), title.clone()));
        }
    }
    let hosts: Vec<(String, String)> = gw
        .modules
        .iter()
        .filter_map(|m| m.hosts.first().map(|h| (m.label().to_string(), h.clone())))
        .collect();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let idp_server = IdpServer::start(idp).await?;
        let mut modules: Vec<(String, DemoModuleServer)> = Vec::new();
        for (addr, label, title) in to_start {
            // Several upstreams of one instance: replicas sharing one state.
            let server = match modules.iter().find(|(l, _)| *l == label) {
                Some((_, first)) => first.replica(addr).await,
                None => {
                    DemoModuleServer::start(DemoModuleConfig {
                        listen: addr,
                        accounts: unigate::demo_module::demo_accounts(&label),
                        name: label.clone(),
                        title,
                        jwks_url: format!("http://127.0.0.1:{port}/_unigate/jwks.json"),
                        scim_token: None,
                    })
                    .await
                }
            }
            .map_err(|e| anyhow::anyhow!("demo module on {addr}: {e}"))?;
            modules.push((label, server));
        }
        let gateway = GatewayServer::start(gw).await?;
        println!("unigate demo: everything on loopback, Ctrl-C stops it");
        for (label, host) in &hosts {
            println!("  {label:<10}  http://{host}:{port}/");
        }
        println!(
            "  KaseyaOne   {}/   (the embedded identity provider: My Modules)",
            idp_server.issuer()
        );
        println!("  log in as   alice / Acme MSP / alice-demo-pass   (bob, carol, dave: see README)");
        println!("  code        unigate idp totp --user alice --company \"Acme MSP\"");
        println!("  module credentials: localuser / local-demo-pass on every module");
        wait_for_stop().await;
        tracing::info!("stopping");
        gateway.shutdown().await;
        for (_, m) in modules {
            m.stop();
        }
        idp_server.shutdown().await;
        anyhow::Ok(())
    })
}

fn serve_idp(cfg: IdpConfig, demo: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let users: Vec<(String, String)> = cfg
            .users
            .iter()
            .map(|u| (u.username.clone(), u.company.clone()))
            .collect();
        let server = IdpServer::start(cfg).await?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // One machine-readable line first: scripts read the issuer from it.
            writeln!(out, "unigate idp: issuer {}", server.issuer())?;
            out.flush()?;
        }
        if demo {
            println!("unigate demo: embedded KaseyaOne identity provider");
            println!("  log in at   {}/login", server.issuer());
            println!("  discovery   {}/.well-known/openid-configuration", server.issuer());
            println!("  users (password: see README; code: `unigate idp totp --user U --company C`):");
            for (u, c) in &users {
                println!("    {u:<10} company {c}");
            }
            println!("Press Ctrl-C to stop.");
        }
        wait_for_stop().await;
        tracing::info!("stopping");
        server.shutdown().await;
        anyhow::Ok(())
    })
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
