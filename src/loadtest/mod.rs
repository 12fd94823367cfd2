//! `unigate loadtest`: drives a running deployment's authentication path —
//! unigate with the embedded IdP, or a staging KaseyaOne with test users —
//! and reports requests/s, latency percentiles (HDR histogram), errors by
//! kind and a JSON summary. It talks only to the origins it is given (the
//! module URL and the IdP): a redirect anywhere else is an error, never
//! followed.
//!
//! The orchestrations that start a loopback stack themselves and measure
//! it live beside it: [`auth_path`] (wrk against the authenticated path and
//! a plain pass-through), [`login_storm`] (interactive logins with
//! generated users) and [`instructions`] (callgrind counts per request);
//! [`stack`] starts the processes they measure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use url::Url;

pub mod auth_path;
pub mod cli;
mod client;
pub mod instructions;
pub mod login_storm;
mod run;
pub mod stack;

pub use client::log_in;
pub use run::run;

/// What each virtual user does, again and again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// A pool of logged-in sessions requesting a module page.
    Browse,
    /// Users holding an IdP session arrive with no unigate session:
    /// redirect, silent authorize, callback, code exchange, ID token, session.
    SsoLogin,
    /// Full logins through the IdP's forms, verification code included.
    Login,
    /// RP-initiated logouts of fresh sessions (each logged in by SSO first,
    /// untimed), followed to the IdP's end-session endpoint when
    /// `follow_idp_logout` (which then sends its back-channel logouts, and
    /// ends the user's IdP session: each login is then a full one, bounded
    /// by one verification code per user every 30 s).
    Logout,
    /// Browse and SSO logins, by `mix`.
    Mixed,
    /// Plain requests with no login: the baseline, run directly against a
    /// module or through a proxy with no auth.
    Plain,
}

/// A test user of the IdP.
#[derive(Clone)]
pub struct User {
    pub username: String,
    pub company: String,
    pub password: String,
    pub totp: Vec<u8>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "User({})", self.username)
    }
}

/// Users as CSV lines `username,company,password,totp_secret_base32`;
/// `#` starts a comment.
pub fn parse_users(text: &str) -> Result<Vec<User>, String> {
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [username, company, password, secret] = f[..] else {
            return Err(format!("line {}: want username,company,password,totp_secret", n + 1));
        };
        let totp = totp_rs::Secret::Encoded(secret.to_string())
            .to_bytes()
            .map_err(|e| format!("line {}: the TOTP secret is not base32 ({e:?})", n + 1))?;
        users.push(User {
            username: username.into(),
            company: company.into(),
            password: password.into(),
            totp,
        });
    }
    if users.is_empty() {
        return Err("no users".into());
    }
    Ok(users)
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// A module page behind unigate, e.g. `http://portal.localhost:8080/page.html`.
    pub url: Url,
    /// Connect here for the module URL's host (instead of DNS).
    pub connect: Option<SocketAddr>,
    /// The IdP's origin; needed by every scenario that logs in.
    pub idp: Option<Url>,
    pub scenario: Scenario,
    /// Virtual users running at once.
    pub concurrency: usize,
    /// Iterations per second in all (an open model: latency counts from
    /// when an iteration was due); `None`: as fast as they go.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub warmup: Duration,
    /// Sessions in the pool of `browse` (and `mixed`).
    pub sessions: usize,
    /// `mixed`: browse requests per SSO login.
    pub mix: u32,
    pub users: Vec<User>,
    /// The module path that logs out; default unigate's own.
    pub logout_path: String,
    pub follow_idp_logout: bool,
    /// A progress line on stderr every second.
    pub progress: bool,
}

/// The machine-readable summary of a run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub url: String,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Iterations that succeeded after the warm-up (a request, or a login,
    /// or a logout), and their rate.
    pub ok: u64,
    pub per_second: f64,
    pub errors: BTreeMap<String, u64>,
    /// Latency of the successful iterations, in milliseconds.
    pub latency_ms: Latency,
    /// `mixed`: successful iterations of each kind.
    pub by_kind: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

impl Report {
    /// The report for people.
    pub fn text(&self) -> String {
        let l = &self.latency_ms;
        let mut s = format!(
            "scenario {:?} against {}\n{} ok in {:.1}s: {:.1}/s (concurrency {}{})\nlatency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}\n",
            self.scenario,
            self.url,
            self.ok,
            self.duration_s,
            self.per_second,
            self.concurrency,
            self.rate.map(|r| format!(", rate {r}/s")).unwrap_or_default(),
            l.p50,
            l.p90,
            l.p99,
            l.p99_9,
            l.max,
            l.mean
        );
        if self.errors.is_empty() {
            s.push_str("errors: none\n");
        } else {
            s.push_str("errors:\n");
            for (k, v) in &self.errors {
                s.push_str(&format!("  {k}: {v}\n"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_and_bad_lines_are_named() {
        let u = parse_users("# demo\nalice,Acme MSP,pw,NBUJVNXAXKZEYDONQERB3FE5HWGFZFMX\n").unwrap();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].company, "Acme MSP");
        assert_eq!(u[0].totp.len(), 20);
        assert!(parse_users("alice,Acme,pw").unwrap_err().contains("line 1"));
        assert!(parse_users("alice,Acme,pw,not base32!").unwrap_err().contains("base32"));
        assert!(parse_users("# nothing\n").is_err());
    }
}
