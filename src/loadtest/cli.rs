//! `unigate loadtest`'s command line: a run against a deployment (the
//! options below), or one of the loopback measurements that start their
//! own stack (the subcommands).

use std::path::PathBuf;

use super::{Scenario, auth_path, instructions, login_storm};

// No doc comment: the `loadtest` command's help is the variant's in main.rs.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    pub measurement: Option<Measurement>,
    /// A module page behind unigate, e.g. http://portal.localhost:8080/page.html.
    #[arg(long, required = true)]
    pub url: Option<url::Url>,
    /// Connect here for the URL's host instead of resolving it.
    #[arg(long)]
    pub connect: Option<std::net::SocketAddr>,
    /// The identity provider's URL; logins are followed there and nowhere else.
    #[arg(long)]
    pub idp: Option<url::Url>,
    #[arg(long, value_enum, default_value_t = Scenario::Browse)]
    pub scenario: Scenario,
    /// Virtual users at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Iterations per second in all (open model); default: as fast as they go.
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: std::time::Duration,
    /// Logged-in sessions in the pool `browse` and `mixed` use.
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
    /// `mixed`: page requests per SSO login.
    #[arg(long, default_value_t = 9)]
    pub mix: u32,
    /// Test users, a CSV file: username,company,password,totp_secret.
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// A test user, the same four fields joined by commas (repeatable).
    #[arg(long)]
    pub user: Vec<String>,
    /// The path that logs out (`logout` scenario).
    #[arg(long, default_value = "/_unigate/logout")]
    pub logout_path: String,
    /// Follow each logout to the IdP's end-session endpoint (its
    /// back-channel logouts then reach the other modules).
    #[arg(long)]
    pub follow_idp_logout: bool,
    /// Write the JSON summary to this file (`-`: standard output).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// The loopback measurements: each starts `unigate demo` (and what it
/// compares against) on free loopback ports, from the repository's root.
#[derive(clap::Subcommand)]
pub enum Measurement {
    /// wrk against /ping and a 64 KiB page: direct to the demo module,
    /// through a plain Pingora pass-through, through unigate with a session
    /// logged in through the IdP; and memory against Redis sessions.
    AuthPath(auth_path::Options),
    /// Full interactive logins (password, verification code) with
    /// generated test users, taken in turn.
    LoginStorm(login_storm::Options),
    /// Instructions per request (valgrind's callgrind): direct, through the
    /// pass-through, through unigate with a session.
    InstructionsPerRequest(instructions::Options),
}

/// Runs `unigate loadtest`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(m) = args.measurement {
        // The processes measured are this binary.
        let bin = std::env::current_exe()?;
        return match m {
            Measurement::AuthPath(o) => auth_path::run(&bin, &o),
            Measurement::LoginStorm(o) => login_storm::run(&bin, &o).map(drop),
            Measurement::InstructionsPerRequest(o) => instructions::run(&bin, &o),
        };
    }
    let url = args
        .url
        .ok_or_else(|| anyhow::anyhow!("give the module page to load (--url)"))?;
    let mut text = args.user.join("\n");
    if let Some(f) = &args.users {
        text.push('\n');
        text.push_str(&std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?);
    }
    let users = if text.trim().is_empty() && args.scenario == Scenario::Plain {
        Vec::new()
    } else {
        super::parse_users(&text).map_err(|e| anyhow::anyhow!("test users: {e}"))?
    };
    let json = args.json;
    let opts = super::Options {
        url,
        users,
        connect: args.connect,
        idp: args.idp,
        scenario: args.scenario,
        concurrency: args.concurrency,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        sessions: args.sessions,
        mix: args.mix,
        logout_path: args.logout_path,
        follow_idp_logout: args.follow_idp_logout,
        progress: !args.quiet,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(super::run(opts)).map_err(|e| anyhow::anyhow!(e))?;
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
