//! The `unigate` command: parses the command line and calls the library
//! ([`unigate::cli`] for the servers and checks, [`unigate::demo`],
//! [`unigate::loadtest::cli`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use unigate::cli;

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
    Loadtest(Box<unigate::loadtest::cli::Args>),
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
    Demo(unigate::demo::Options),
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
    /// Manage the users added at run time (kept in the users file).
    #[command(subcommand)]
    User(UserAction),
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user without a password and write their Welcome to KaseyaOne
    /// mail (with the link where they create it) to the outbox. A running
    /// identity provider picks the user up at once.
    Add {
        #[arg(long)]
        company: String,
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        /// Comma-separated access groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Default: the username.
        #[arg(long)]
        display_name: Option<String>,
        /// Where the identity provider is reached, for the link in the mail
        /// (default: the config's server.issuer, else http:// + server.listen).
        /// Under `unigate demo --idp-port 9100`: http://127.0.0.1:9100.
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
    },
    /// List the config's users and the added ones, with their state.
    List,
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

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Idp {
            config,
            listen,
            action: None,
        } => {
            let mut cfg = cli::load_idp(&config)?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            cli::serve_idp(cfg)
        }
        Command::Idp {
            config,
            action: Some(IdpAction::Check),
            ..
        } => {
            cli::load_idp(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Idp {
            config,
            action: Some(IdpAction::Totp { user, company }),
            ..
        } => cli::idp_totp(&config, &user, &company),
        Command::Idp {
            action: Some(IdpAction::HashPassword),
            ..
        } => cli::hash_password(),
        Command::Idp {
            config,
            action:
                Some(IdpAction::User(UserAction::Add {
                    company,
                    username,
                    email,
                    groups,
                    display_name,
                    base_url,
                })),
            ..
        } => cli::idp_user_add(
            &config,
            unigate::idp::welcome::NewUser {
                company,
                username,
                email,
                display_name,
                groups,
            },
            base_url.as_deref(),
        ),
        Command::Idp {
            config,
            action: Some(IdpAction::User(UserAction::List)),
            ..
        } => cli::idp_user_list(&config),
        Command::Run { config } => cli::run_gateway(config),
        Command::DemoModule { listen, jwks_url, name } => cli::demo_module(listen, jwks_url, name),
        Command::Passthrough {
            listen,
            upstream,
            threads,
            work_stealing,
        } => {
            unigate::gateway::passthrough::run(listen, upstream, threads, work_stealing);
            Ok(())
        }
        Command::Loadtest(args) => unigate::loadtest::cli::run(*args),
        Command::Healthcheck { url, insecure } => cli::healthcheck(&url, insecure),
        Command::Check { config } => cli::check(&config),
        Command::Demo(opts) => unigate::demo::run(opts),
    }
}
