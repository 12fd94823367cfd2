//! A run: the untimed set-up logins, the virtual users (closed or open
//! model), the HDR histograms merged into the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::client::{Driver, Jar};
use super::{Latency, Options, Report, Scenario};

/// Counters shared by the virtual users and the progress line.
#[derive(Default)]
struct Live {
    ok: AtomicU64,
    errors: AtomicU64,
    /// The next test user for a full login: taken in turn, so that each
    /// user's verification code is used once per round of the list.
    next_user: AtomicU64,
}

struct Outcome {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    by_kind: BTreeMap<String, u64>,
}

/// Runs the scenario and returns its report.
pub async fn run(opts: Options) -> Result<Report, String> {
    if opts.concurrency == 0 {
        return Err("concurrency must be at least 1".into());
    }
    let plain = opts.scenario == Scenario::Plain;
    if !plain && opts.idp.is_none() {
        return Err("this scenario logs in: give the IdP's URL (--idp)".into());
    }
    if !plain && opts.users.is_empty() {
        return Err("give at least one test user (--users or --user)".into());
    }
    let driver = Arc::new(Driver::new(opts.clone())?);
    // Set-up, untimed: each user logs in once (an IdP session to reuse),
    // and the browse pool is filled by SSO logins. Not for full logins:
    // those use each user's verification code in turn, which a set-up
    // login would already have spent.
    let full_logins = opts.scenario == Scenario::Login || (opts.scenario == Scenario::Logout && opts.follow_idp_logout);
    let mut idp_jars = Vec::new();
    for u in opts.users.iter().filter(|_| !plain && !full_logins) {
        let mut jar = Jar::default();
        driver
            .login(&mut jar, Some(u))
            .await
            .map_err(|k| format!("set-up login of {} failed: {k}", u.username))?;
        idp_jars.push(jar);
    }
    let idp = opts.idp.clone().unwrap_or_else(|| opts.url.clone());
    let mut pool = Vec::new();
    if matches!(opts.scenario, Scenario::Browse | Scenario::Mixed) {
        for i in 0..opts.sessions.max(1) {
            let mut jar = idp_jars[i % idp_jars.len()].idp_only(&idp);
            driver
                .login(&mut jar, None)
                .await
                .map_err(|k| format!("filling the session pool failed: {k}"))?;
            pool.push(jar);
        }
    }
    let pool = Arc::new(pool);
    let idp_jars = Arc::new(idp_jars);
    let live = Arc::new(Live::default());
    let started = Instant::now();
    let measure_from = started + opts.warmup;
    let end = measure_from + opts.duration;
    let progress = opts.progress.then(|| {
        let live = live.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let ok = live.ok.load(Ordering::Relaxed);
                let phase = if Instant::now() < measure_from {
                    "warm-up"
                } else {
                    "measuring"
                };
                eprint!(
                    "\r{phase:>9} {:>5.0}s  {ok} ok  {} errors  {}/s   ",
                    started.elapsed().as_secs_f64(),
                    live.errors.load(Ordering::Relaxed),
                    ok - last
                );
                last = ok;
            }
        })
    });
    let per_vu_interval = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(opts.concurrency as f64 / r));
    let mut tasks = Vec::new();
    for vu in 0..opts.concurrency {
        let (driver, pool, idp_jars, live, idp) = (
            driver.clone(),
            pool.clone(),
            idp_jars.clone(),
            live.clone(),
            idp.clone(),
        );
        let users = opts.users.clone();
        let (scenario, mix, follow_idp_logout) = (opts.scenario, opts.mix.max(1), opts.follow_idp_logout);
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome {
                hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
                errors: BTreeMap::new(),
                by_kind: BTreeMap::new(),
            };
            let mut n: u64 = 0;
            // Spread the virtual users' first slots over one interval.
            let mut due = Instant::now()
                + per_vu_interval.map_or(Duration::ZERO, |i| i.mul_f64(vu as f64 / opts.concurrency as f64));
            while Instant::now() < end {
                if per_vu_interval.is_some() {
                    let now = Instant::now();
                    if due > now {
                        tokio::time::sleep(due - now).await;
                    }
                }
                let start = if per_vu_interval.is_some() { due } else { Instant::now() };
                let pick = vu + n as usize * 7919;
                let (kind, result, timed_from) = match scenario {
                    Scenario::Browse => {
                        let mut jar = pool[pick % pool.len()].clone();
                        ("browse", driver.browse(&mut jar).await, start)
                    }
                    Scenario::Plain => ("plain", driver.browse(&mut Jar::default()).await, start),
                    Scenario::Mixed if !n.is_multiple_of(u64::from(mix) + 1) => {
                        let mut jar = pool[pick % pool.len()].clone();
                        ("browse", driver.browse(&mut jar).await, start)
                    }
                    Scenario::SsoLogin | Scenario::Mixed => {
                        let mut jar = idp_jars[pick % idp_jars.len()].idp_only(&idp);
                        ("sso-login", driver.login(&mut jar, None).await, start)
                    }
                    Scenario::Login => {
                        let mut jar = Jar::default();
                        let u = &users[live.next_user.fetch_add(1, Ordering::Relaxed) as usize % users.len()];
                        ("login", driver.login(&mut jar, Some(u)).await, start)
                    }
                    Scenario::Logout => {
                        // Following the logout to the IdP ends the user's IdP
                        // session: the next login is then a full one.
                        let (mut jar, user) = if follow_idp_logout {
                            (
                                Jar::default(),
                                Some(&users[live.next_user.fetch_add(1, Ordering::Relaxed) as usize % users.len()]),
                            )
                        } else {
                            (idp_jars[pick % idp_jars.len()].idp_only(&idp), None)
                        };
                        match driver.login(&mut jar, user).await {
                            Err(e) => ("logout", Err(format!("setup_{e}")), start),
                            Ok(()) => {
                                let t = Instant::now();
                                ("logout", driver.logout(&mut jar).await, t)
                            }
                        }
                    }
                };
                n += 1;
                if let Some(i) = per_vu_interval {
                    due += i;
                }
                let done = Instant::now();
                if timed_from < measure_from || done > end {
                    continue;
                }
                match result {
                    Ok(()) => {
                        live.ok.fetch_add(1, Ordering::Relaxed);
                        let us = done.duration_since(timed_from).as_micros().max(1) as u64;
                        let _ = out.hist.record(us.min(60_000_000));
                        *out.by_kind.entry(kind.to_string()).or_default() += 1;
                    }
                    Err(k) => {
                        live.errors.fetch_add(1, Ordering::Relaxed);
                        *out.errors.entry(k).or_default() += 1;
                    }
                }
            }
            out
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors = BTreeMap::new();
    let mut by_kind = BTreeMap::new();
    for t in tasks {
        let out = t.await.map_err(|e| e.to_string())?;
        hist.add(&out.hist).map_err(|e| e.to_string())?;
        for (k, v) in out.errors {
            *errors.entry(k).or_default() += v;
        }
        for (k, v) in out.by_kind {
            *by_kind.entry(k).or_default() += v;
        }
    }
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let ok = hist.len();
    Ok(Report {
        scenario: opts.scenario,
        url: opts.url.to_string(),
        concurrency: opts.concurrency,
        rate: opts.rate,
        warmup_s: opts.warmup.as_secs_f64(),
        duration_s: opts.duration.as_secs_f64(),
        ok,
        per_second: ok as f64 / opts.duration.as_secs_f64(),
        errors,
        latency_ms: Latency {
            p50: ms(0.50),
            p90: ms(0.90),
            p99: ms(0.99),
            p99_9: ms(0.999),
            max: hist.max() as f64 / 1000.0,
            mean: hist.mean() / 1000.0,
        },
        by_kind,
    })
}
