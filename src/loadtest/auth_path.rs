//! `unigate loadtest auth-path`: the load comparison of the authenticated
//! request path, on loopback only.
//!
//! Starts, on free loopback ports, `unigate demo --threads 1` (the embedded
//! IdP, the demo modules, unigate) and a plain Pingora pass-through with no
//! auth (`unigate passthrough --threads 1`) in front of the same module.
//! Logs alice in through unigate (the real forms, TOTP included) for a
//! session cookie, then runs wrk against `/ping` three ways: direct to the
//! module, through the pass-through, and through unigate with the session.
//! Then the HTML injection comparison: a 64 KiB page through unigate as
//! `text/html` (the App Launcher streamed in) and the same bytes as
//! `text/plain` (no injection), beside the page direct and through the
//! pass-through; and the session stores: memory against Redis (a second
//! demo with its sessions in a `redis-server` of its own). Prints Markdown
//! tables and writes a JSON summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::stack::{self, Children, DemoPorts};

/// `unigate loadtest auth-path`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds each wrk measurement runs.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// wrk's connections.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// Which comparisons: ping (auth path vs pass-through), page (HTML
    /// injection), store (memory vs Redis sessions), login (the
    /// unauthenticated navigation's 302 vs the authenticated path), bare
    /// (auth path vs a bare Pingora with its defaults; needs
    /// --bare-pingora).
    #[arg(long, default_value = "ping,page,store,login,bare")]
    pub suites: String,
    /// The paths are measured in turn this many times; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The identity provider's config file (the demo's: alice logs in).
    #[arg(long, default_value = "config/idp.demo.toml")]
    pub idp_config: PathBuf,
    /// unigate's config file (the demo's); the run uses a copy beside it
    /// with the per-address login-start limit raised.
    #[arg(long, default_value = "config/unigate.demo.toml")]
    pub config: PathBuf,
    /// A bare Pingora pass-through built with Pingora's defaults
    /// (`examples/bare_pingora.rs`, built by `scripts/loadtest-auth-path`):
    /// with it, the `bare` suite compares unigate's authenticated path with
    /// it.
    #[arg(long)]
    pub bare_pingora: Option<PathBuf>,
    /// Where the JSON summary goes.
    #[arg(long, default_value = "target/loadtest-auth-path.json")]
    pub json: PathBuf,
}

/// One wrk run's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Wrk {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
}

/// The figures of wrk's `--latency` output.
pub fn parse_wrk(out: &str) -> anyhow::Result<Wrk> {
    let ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let scale = match unit {
            "us" => 0.001,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            _ => return None,
        };
        Some(num.parse::<f64>().ok()? * scale)
    };
    let (mut rps, mut p50, mut p99, mut non_2xx) = (None, None, None, 0);
    for line in out.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t[..] {
            ["Requests/sec:", v] => rps = v.parse::<f64>().ok(),
            ["50%", v] if p50.is_none() => p50 = ms(v),
            ["99%", v] if p99.is_none() => p99 = ms(v),
            ["Non-2xx", "or", "3xx", "responses:", n] => non_2xx = n.parse().unwrap_or(u64::MAX),
            _ => {}
        }
    }
    match (rps, p50, p99) {
        (Some(rps), Some(p50_ms), Some(p99_ms)) => Ok(Wrk {
            rps,
            p50_ms,
            p99_ms,
            non_2xx,
        }),
        _ => anyhow::bail!("wrk's output has no rate or latency distribution:\n{out}"),
    }
}

/// Runs wrk (one thread) against `url`.
fn wrk(url: &str, duration: u64, connections: u32, headers: &[String]) -> anyhow::Result<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{duration}s"),
        "--latency",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("running wrk (scripts/loadtest-auth-path installs it)")?;
    anyhow::ensure!(
        out.status.success(),
        "wrk {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// `sorted(xs)[len(xs) // 2]`: the median, the upper one of an even count.
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct Target {
    name: &'static str,
    url: String,
    headers: Vec<String>,
}

fn target(name: &'static str, url: String, headers: &[String]) -> Target {
    Target {
        name,
        url,
        headers: headers.to_vec(),
    }
}

/// The status line and headers unigate on `port` answers a browser's
/// navigation to `path` at `host` with (as wrk sends it: no cookie).
fn answer_head(port: u16, host: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\nSec-Fetch-Mode: navigate\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = String::new();
    for line in std::io::BufReader::new(s).lines() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        head.push_str(&line);
        head.push('\n');
    }
    Ok(head)
}

/// Starts the stacks, measures the chosen suites, prints the tables and
/// writes the JSON summary. `bin`: the unigate binary to start.
pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(opts.rounds > 0, "--rounds must be at least 1");
    let chosen: Vec<&str> = opts.suites.split(',').map(str::trim).collect();
    let mut procs = Children::new(Duration::from_secs(10));
    let d = DemoPorts::free()?;
    let pt_port = stack::free_port()?;
    // The demo's config with the login-start limit raised (beside it: its
    // relative secret paths hold), so that wrk's login starts are not 429s.
    let config = opts
        .config
        .with_file_name(format!(".loadtest-auth-path-{}.toml", std::process::id()));
    let _generated = stack::Generated(vec![config.clone()]);
    let text = std::fs::read_to_string(&opts.config).with_context(|| format!("reading {}", opts.config.display()))?;
    std::fs::write(&config, stack::raised_login_limit(&text))?;
    // As private as the original: it may hold secrets.
    std::fs::set_permissions(&config, std::fs::metadata(&opts.config)?.permissions())?;
    let mut demo = vec!["demo".to_string(), "--config".into(), config.display().to_string()];
    demo.extend(d.args());
    demo.extend(["--threads".into(), "1".into()]);
    procs.spawn("unigate demo", &mut stack::quiet(bin, &demo, "warn"))?;
    procs.spawn(
        "unigate passthrough",
        &mut stack::quiet(bin, &stack::passthrough_args(pt_port, d.module_port), "warn"),
    )?;
    let bare_port = match &opts.bare_pingora {
        Some(bare) if chosen.contains(&"bare") => {
            let port = stack::free_port()?;
            procs.spawn(
                "bare Pingora",
                Command::new(bare)
                    .args([format!("127.0.0.1:{port}"), format!("127.0.0.1:{}", d.module_port)])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            Some(port)
        }
        None if chosen.contains(&"bare") => {
            eprintln!(
                "the `bare` suite is skipped: it needs --bare-pingora (scripts/loadtest-auth-path builds and passes it)"
            );
            None
        }
        _ => None,
    };
    d.wait(Duration::from_secs(30))?;
    stack::wait_port(pt_port, Duration::from_secs(30))?;
    if let Some(p) = bare_port {
        stack::wait_port(p, Duration::from_secs(30))?;
    }
    let alice = stack::demo_user(&opts.idp_config)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let sid = rt.block_on(stack::demo_session(&d, &alice))?;
    let host = format!("portal.localhost:{}", d.port);
    let unigate_h = [format!("Host: {host}"), format!("Cookie: unigate={sid}")];
    let (port, module_port) = (d.port, d.module_port);

    let mut suites: Vec<(&str, Vec<Target>)> = vec![
        (
            "ping",
            vec![
                target("direct", format!("http://127.0.0.1:{module_port}/ping"), &[]),
                target("pingora_passthrough", format!("http://127.0.0.1:{pt_port}/ping"), &[]),
                target("unigate", format!("http://127.0.0.1:{port}/ping"), &unigate_h),
            ],
        ),
        (
            "page",
            vec![
                target("direct_html", format!("http://127.0.0.1:{module_port}/page.html"), &[]),
                target(
                    "pingora_passthrough_html",
                    format!("http://127.0.0.1:{pt_port}/page.html"),
                    &[],
                ),
                target(
                    "unigate_text_no_injection",
                    format!("http://127.0.0.1:{port}/page.txt"),
                    &unigate_h,
                ),
                target(
                    "unigate_html_with_launcher",
                    format!("http://127.0.0.1:{port}/page.html"),
                    &[unigate_h[0].clone(), unigate_h[1].clone(), "Accept: text/html".into()],
                ),
            ],
        ),
    ];
    if let Some(bare) = bare_port {
        suites.push((
            "bare",
            vec![
                target("pingora_bare_defaults", format!("http://127.0.0.1:{bare}/ping"), &[]),
                target("unigate", format!("http://127.0.0.1:{port}/ping"), &unigate_h),
            ],
        ));
    }
    // The unauthenticated navigation to a module that requires a login
    // (bms-east): the 302 to the IdP with a new transaction, the module
    // never asked.
    suites.push((
        "login",
        vec![
            target("unigate", format!("http://127.0.0.1:{port}/ping"), &unigate_h),
            target(
                "unigate_login_start",
                format!("http://127.0.0.1:{port}/ping"),
                &[
                    format!("Host: bms-east.localhost:{port}"),
                    "Accept: text/html".into(),
                    "Sec-Fetch-Mode: navigate".into(),
                ],
            ),
        ],
    ));
    if chosen.contains(&"store") {
        // A second stack with its sessions in a redis-server of its own.
        let redis_port = stack::free_port()?;
        procs.spawn(
            "redis-server",
            Command::new("redis-server")
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        stack::wait_port(redis_port, Duration::from_secs(30))?;
        let r = DemoPorts::free()?;
        let mut demo = vec!["demo".to_string()];
        demo.extend(r.args());
        demo.extend(["--threads".into(), "1".into()]);
        demo.extend(["--redis-url".into(), format!("redis://127.0.0.1:{redis_port}/0")]);
        procs.spawn("unigate demo (Redis)", &mut stack::quiet(bin, &demo, "warn"))?;
        r.wait(Duration::from_secs(30))?;
        let rsid = rt.block_on(stack::demo_session(&r, &alice))?;
        suites.push((
            "store",
            vec![
                target(
                    "unigate_memory_store",
                    format!("http://127.0.0.1:{port}/ping"),
                    &unigate_h,
                ),
                target(
                    "unigate_redis_store",
                    format!("http://127.0.0.1:{}/ping", r.port),
                    &[
                        format!("Host: portal.localhost:{}", r.port),
                        format!("Cookie: unigate={rsid}"),
                    ],
                ),
            ],
        ));
    }

    let mut summary = serde_json::json!({
        "duration_s": opts.duration,
        "connections": opts.connections,
        "threads": 1,
        "rounds": opts.rounds,
    });
    if chosen.contains(&"login") {
        // What wrk will count as a success must be the 302 to the IdP (wrk
        // counts only statuses of 400 and above as failures).
        let head = answer_head(port, &format!("bms-east.localhost:{port}"), "/ping")?;
        let to_idp = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("location: ")
                .is_some_and(|v| v.starts_with(d.idp().as_str().trim_end_matches('/')))
        });
        let sealed = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("set-cookie: unigate_login_"));
        anyhow::ensure!(
            head.starts_with("HTTP/1.1 302 ") && to_idp && sealed,
            "an unauthenticated navigation to bms-east was not answered with a 302 to the IdP and a login cookie:\n{head}"
        );
    }
    for (suite, targets) in &suites {
        if !chosen.contains(suite) {
            continue;
        }
        for t in targets {
            wrk(&t.url, 2, opts.connections, &t.headers)?; // warm-up
        }
        let mut rounds: BTreeMap<&str, Vec<Wrk>> = BTreeMap::new();
        let mut ratios = Vec::new();
        // Interleaved, so drift on a shared machine hits every path alike.
        for _ in 0..opts.rounds {
            for t in targets {
                let r = wrk(&t.url, opts.duration, opts.connections, &t.headers)?;
                anyhow::ensure!(r.non_2xx == 0, "{}: {} non-2xx responses", t.name, r.non_2xx);
                rounds.entry(t.name).or_default().push(r);
            }
            let last = |n: &str| rounds[n].last().expect("a round").rps;
            ratios.push(match *suite {
                "ping" => last("unigate") / last("pingora_passthrough"),
                "page" => last("unigate_html_with_launcher") / last("unigate_text_no_injection"),
                "login" => last("unigate_login_start") / last("unigate"),
                "bare" => last("unigate") / last("pingora_bare_defaults"),
                _ => last("unigate_redis_store") / last("unigate_memory_store"),
            });
        }
        let medians: Vec<(&str, [f64; 3])> = targets
            .iter()
            .map(|t| {
                let rs = &rounds[t.name];
                let m = |f: fn(&Wrk) -> f64| median(&rs.iter().map(f).collect::<Vec<_>>());
                (t.name, [m(|r| r.rps), m(|r| r.p50_ms), m(|r| r.p99_ms)])
            })
            .collect();
        let ratio = median(&ratios);
        summary[*suite] = serde_json::json!({
            "median": medians.iter().map(|(n, [rps, p50, p99])| {
                (n.to_string(), serde_json::json!({"rps": rps, "p50_ms": p50, "p99_ms": p99}))
            }).collect::<serde_json::Map<_, _>>(),
            "all": rounds,
            "ratios": ratios.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
            "ratio": round3(ratio),
        });
        let (title, what) = match *suite {
            "ping" => ("/ping (auth path)", "unigate / pass-through"),
            "page" => (
                "64 KiB HTML page (App Launcher injection)",
                "with injection / same page without",
            ),
            "bare" => (
                "/ping: unigate vs a bare Pingora built with its defaults",
                "unigate / bare Pingora",
            ),
            "login" => (
                "/ping unauthenticated (302 to the IdP) vs authenticated",
                "login start / authenticated",
            ),
            _ => ("/ping, memory store vs Redis store", "Redis store / memory store"),
        };
        println!("\n{title}\n");
        println!("| path | requests/s | p50 | p99 |\n|---|---|---|---|");
        for (name, [rps, p50, p99]) in &medians {
            println!("| {name} | {rps:.0} | {p50:.2} ms | {p99:.2} ms |");
        }
        let all: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "\n{what} throughput, median of {}: {ratio:.2} (rounds: {})",
            opts.rounds,
            all.join(", ")
        );
    }
    if let Some(dir) = opts.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&opts.json, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", opts.json.display()))?;
    procs.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let out = "Running 2s test @ http://127.0.0.1:1/ping
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.50ms  300.00us   9.99ms   89.99%
    Req/Sec    20.00k     1.00k   22.00k    75.99%
  Latency Distribution
     50%  456.00us
     75%    1.60ms
     90%    1.80ms
     99%    2.10s
  40000 requests in 2.00s, 3.00MB read
  Non-2xx or 3xx responses: 7
Requests/sec:  19999.50
Transfer/sec:      1.50MB
";
        let w = parse_wrk(out).unwrap();
        assert_eq!(w.rps, 19999.5);
        assert!((w.p50_ms - 0.456).abs() < 1e-9);
        assert_eq!(w.p99_ms, 2100.0);
        assert_eq!(w.non_2xx, 7);
        assert!(parse_wrk("unable to connect").is_err());
        assert_eq!(median(&[3.0, 1.0, 2.0, 4.0]), 3.0);
    }
}
