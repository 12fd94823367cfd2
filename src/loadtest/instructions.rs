//! `unigate loadtest instructions-per-request`: instructions per request on
//! the authenticated path, counted by valgrind's callgrind — a figure that
//! does not move with the load on a shared machine (requests/s do, by
//! several percent).
//!
//! Starts, on free loopback ports, `unigate demo --threads 1` and
//! `unigate passthrough --threads 1` (in front of the same demo module),
//! each under callgrind. Logs alice in, warms up, then for each path zeroes
//! the counters, sends `--requests` keep-alive GETs of `--path` one after
//! another, and reads the process's instruction count:
//!
//! - direct: to the module, in the demo process (the module's own cost);
//! - passthrough: through the plain Pingora pass-through (its process only);
//! - unigate: through unigate with the session (the demo process: unigate
//!   plus the module, so the module's cost is subtracted).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::stack::{self, Children, DemoPorts};

/// `unigate loadtest instructions-per-request`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Requests measured on each path.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// The module path asked for (/ping; /ping/chunked is the same answer
    /// streamed without Content-Length, which unigate watches as a
    /// long-lived response).
    #[arg(long, default_value = "/ping")]
    pub path: String,
    /// The identity provider's config file (the demo's: alice logs in).
    #[arg(long, default_value = "config/idp.demo.toml")]
    pub idp_config: PathBuf,
    /// Where callgrind writes its profiles.
    #[arg(long, default_value = "target/callgrind")]
    pub out_dir: PathBuf,
}

/// A request header, name and value.
type Header<'a> = (&'a str, &'a str);

/// `bin args` under callgrind, writing its profile to `out`.
fn under_callgrind(bin: &Path, args: &[String], out: &Path) -> Command {
    let mut c = Command::new("valgrind");
    c.args([
        "--tool=callgrind",
        "--collect-atstart=yes",
        "--compress-strings=no",
        "--compress-pos=no",
    ])
    .arg(format!("--callgrind-out-file={}", out.display()))
    .arg(bin)
    .args(args)
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

fn callgrind_control(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("callgrind_control")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running callgrind_control")?;
    anyhow::ensure!(
        out.status.success(),
        "callgrind_control {}: {}",
        args.join(" "),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The instructions of every thread in `callgrind_control -e Ir`'s answer
/// (lines `Th N  1,234,567`).
pub fn thread_instructions(out: &str) -> u64 {
    out.lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            ["Th", n, count] if n.bytes().all(|b| b.is_ascii_digit()) => count.replace(',', "").parse::<u64>().ok(),
            _ => None,
        })
        .sum()
}

/// Instructions executed by the process since its counters were zeroed.
fn instructions(pid: u32) -> anyhow::Result<u64> {
    let out = callgrind_control(&["-e", "Ir", &pid.to_string()])?;
    let total = thread_instructions(&out);
    anyhow::ensure!(total > 0, "no counts in callgrind_control's answer:\n{out}");
    Ok(total)
}

/// Sends `n` GETs of `path` one after another on one keep-alive
/// connection, the request bytes always the same; each must answer 200.
pub fn sequential_gets(port: u16, host: &str, headers: &[Header], n: usize, path: &str) -> anyhow::Result<()> {
    sequential_gets_expecting(port, host, headers, n, path, "200")
}

/// [`sequential_gets`], each answering `status`.
pub fn sequential_gets_expecting(
    port: u16,
    host: &str,
    headers: &[Header],
    n: usize,
    path: &str,
    status: &str,
) -> anyhow::Result<()> {
    let expected = status;
    let stream = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("connecting to {port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_nodelay(true)?;
    let mut request = format!("GET {path} HTTP/1.1\r\nAccept-Encoding: identity\r\nHost: {host}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    for _ in 0..n {
        w.write_all(request.as_bytes())?;
        line.clear();
        r.read_line(&mut line)?;
        let status = line.split_whitespace().nth(1).unwrap_or("none").to_string();
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            anyhow::ensure!(r.read_line(&mut line)? > 0, "{host}: the connection closed");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<u64>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
        if chunked {
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .with_context(|| format!("{host}: a bad chunk size {line:?}"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        line.clear();
                        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                std::io::copy(&mut (&mut r).take(size + 2), &mut std::io::sink())?;
            }
        } else if let Some(n) = length {
            std::io::copy(&mut (&mut r).take(n), &mut std::io::sink())?;
        }
        anyhow::ensure!(status == expected, "{host}: status {status}, not {expected}");
    }
    Ok(())
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if x.round() < 0.0 { format!("-{out}") } else { out }
}

/// The most login starts measured: under the demo's 600 a minute from one
/// address, warm-up included.
const LOGIN_STARTS: usize = 500;

/// Starts both processes under callgrind, measures the three paths and
/// prints the table. `bin`: the unigate binary to start.
pub fn run(bin: &Path, opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(opts.requests > 0, "--requests must be at least 1");
    let out_dir = &opts.out_dir;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let d = DemoPorts::free()?;
    let pt_port = stack::free_port()?;
    let mut procs = Children::new(Duration::from_secs(60));
    let mut demo = vec!["demo".to_string()];
    demo.extend(d.args());
    demo.extend(["--threads".into(), "1".into()]);
    let demo_pid = procs.spawn(
        "unigate demo (callgrind)",
        &mut under_callgrind(bin, &demo, &out_dir.join("demo.out")),
    )?;
    let pt_pid = procs.spawn(
        "unigate passthrough (callgrind)",
        &mut under_callgrind(
            bin,
            &stack::passthrough_args(pt_port, d.module_port),
            &out_dir.join("passthrough.out"),
        ),
    )?;
    d.wait(Duration::from_secs(300))?;
    stack::wait_port(pt_port, Duration::from_secs(300))?;
    let alice = stack::demo_user(&opts.idp_config)?;
    let sid = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(stack::demo_session(&d, &alice))?;
    let cookie = format!("unigate={sid}");
    let module_host = format!("127.0.0.1:{}", d.module_port);
    let pt_host = format!("127.0.0.1:{pt_port}");
    let host = format!("portal.localhost:{}", d.port);
    let unigate_headers = [("Cookie", cookie.as_str())];
    // Name, process measured, port, Host, headers.
    let paths: [(&str, u32, u16, &str, &[Header]); 3] = [
        ("direct", demo_pid, d.module_port, &module_host, &[]),
        ("passthrough", pt_pid, pt_port, &pt_host, &[]),
        ("unigate", demo_pid, d.port, &host, &unigate_headers),
    ];
    let mut counts = std::collections::HashMap::new();
    for (name, pid, port, h, hs) in &paths {
        // Warm-up: connection pools, caches, the assertion.
        sequential_gets(*port, h, hs, 200, &opts.path)?;
        let pid = pid.to_string();
        callgrind_control(&["-z", &pid])?;
        std::thread::sleep(Duration::from_millis(500));
        callgrind_control(&["-z", &pid])?;
        sequential_gets(*port, h, hs, opts.requests, &opts.path)?;
        counts.insert(*name, instructions(pid.parse()?)? as f64 / opts.requests as f64);
        // A profile of just these requests, for callgrind_annotate.
        let suffix = opts.path.replace('/', "-");
        let dump = format!("{name}{}", suffix.strip_prefix("-ping").unwrap_or(&suffix));
        callgrind_control(&[&format!("--dump={dump}"), &pid])?;
    }
    // An unauthenticated navigation: the 302 to KaseyaOne with a new login
    // transaction (state, nonce, PKCE, its sealed cookie). The module is
    // not asked. Fewer requests: the demo lets one address start 600
    // logins a minute.
    let login_starts = opts.requests.min(LOGIN_STARTS);
    let east = format!("bms-east.localhost:{}", d.port);
    let navigation: [Header; 1] = [("Accept", "text/html")];
    sequential_gets_expecting(d.port, &east, &navigation, 20, &opts.path, "302")?;
    let pid = demo_pid.to_string();
    callgrind_control(&["-z", &pid])?;
    std::thread::sleep(Duration::from_millis(500));
    callgrind_control(&["-z", &pid])?;
    sequential_gets_expecting(d.port, &east, &navigation, login_starts, &opts.path, "302")?;
    let login_start = instructions(demo_pid)? as f64 / login_starts as f64;
    callgrind_control(&["--dump=login-start", &pid])?;
    let own = counts["unigate"] - counts["direct"];
    println!(
        "\ninstructions per {} request, {} sequential keep-alive requests (callgrind)\n",
        opts.path, opts.requests
    );
    println!("| path | instructions per request |\n|---|---|");
    println!("| the module itself (direct) | {} |", thousands(counts["direct"]));
    println!(
        "| plain Pingora pass-through (its process) | {} |",
        thousands(counts["passthrough"])
    );
    println!(
        "| unigate, authenticated (its process, less the module) | {} |",
        thousands(own)
    );
    println!(
        "| unigate, unauthenticated navigation: the 302 to KaseyaOne ({login_starts} requests, no module) | {} |",
        thousands(login_start)
    );
    println!("\nunigate / pass-through: {:.2}", own / counts["passthrough"]);
    println!("unauthenticated 302 / authenticated: {:.2}", login_start / own);
    println!(
        "\nprofiles of each measurement: {}/*.out.* (callgrind_annotate --inclusive=yes FILE)",
        out_dir.display()
    );
    procs.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callgrind_counts_are_summed_over_threads() {
        let out = "PID 42: unigate demo\n[requested 'Ir']\n\nEvents: Ir\n\n  Th 1   1,234,000\n  Th 2   5,000\n\n";
        assert_eq!(thread_instructions(out), 1_239_000);
        assert_eq!(thread_instructions("PID 42\n"), 0);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(127_603.4), "127,603");
        assert_eq!(thousands(999.5), "1,000");
        assert_eq!(thousands(83.0), "83");
        assert_eq!(thousands(-4_900.0), "-4,900");
    }
}
