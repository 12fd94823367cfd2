//! `unigate loadtest`: drives a running deployment's authentication path —
//! unigate with the embedded IdP, or a staging KaseyaOne with test users —
//! and reports requests/s, latency percentiles (HDR histogram), errors by
//! kind and a JSON summary. It talks only to the origins it is given (the
//! module URL and the IdP): a redirect anywhere else is an error, never
//! followed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use url::Url;

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

/// Why an iteration failed.
type Kind = String;

/// One virtual user's cookies, by host.
#[derive(Clone, Default)]
struct Jar(HashMap<String, Vec<(String, String)>>);

impl Jar {
    fn header(&self, url: &Url) -> Option<String> {
        let host = url.host_str()?;
        let c = self.0.get(host)?;
        (!c.is_empty()).then(|| c.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }

    fn store(&mut self, url: &Url, headers: &reqwest::header::HeaderMap) {
        let Some(host) = url.host_str() else { return };
        for v in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(c) = cookie::Cookie::parse(String::from_utf8_lossy(v.as_bytes()).into_owned()) else {
                continue;
            };
            let list = self.0.entry(host.to_string()).or_default();
            list.retain(|(k, _)| k != c.name());
            let gone = c.max_age().is_some_and(|a| a.is_zero() || a.is_negative()) || c.value().is_empty();
            if !gone {
                list.push((c.name().to_string(), c.value().to_string()));
            }
        }
    }

    /// Only the IdP's cookies (its session), for a fresh SSO arrival.
    fn idp_only(&self, idp: &Url) -> Jar {
        let mut j = Jar::default();
        if let Some(h) = idp.host_str()
            && let Some(c) = self.0.get(h)
        {
            j.0.insert(h.to_string(), c.clone());
        }
        j
    }
}

struct Driver {
    http: reqwest::Client,
    opts: Options,
    origins: Vec<url::Origin>,
}

struct Answer {
    status: u16,
    location: Option<Url>,
}

impl Driver {
    fn new(opts: Options) -> Result<Driver, String> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(opts.concurrency.max(1));
        if let (Some(addr), Some(host)) = (opts.connect, opts.url.host_str()) {
            b = b.resolve(host, addr);
        }
        let http = b.build().map_err(|e| e.to_string())?;
        let mut origins = vec![opts.url.origin()];
        if let Some(idp) = &opts.idp {
            origins.push(idp.origin());
        }
        Ok(Driver { http, opts, origins })
    }

    fn allowed(&self, u: &Url) -> bool {
        self.origins.contains(&u.origin())
    }

    async fn send(
        &self,
        jar: &mut Jar,
        method: reqwest::Method,
        url: &Url,
        form: Option<&[(&str, &str)]>,
    ) -> Result<Answer, Kind> {
        if !self.allowed(url) {
            return Err("foreign_redirect".into());
        }
        let mut rb = self.http.request(method, url.clone()).header("accept", "text/html");
        if let Some(c) = jar.header(url) {
            rb = rb.header("cookie", c);
        }
        if let Some(f) = form {
            rb = rb.form(f);
        }
        let r = rb.send().await.map_err(|e| {
            if e.is_timeout() {
                "timeout".to_string()
            } else if e.is_connect() {
                "connect".to_string()
            } else {
                "transport".to_string()
            }
        })?;
        jar.store(url, r.headers());
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url.join(l).ok());
        // Read the body so the connection goes back to the pool.
        let _ = r.bytes().await;
        Ok(Answer { status, location })
    }

    async fn get(&self, jar: &mut Jar, url: &Url) -> Result<Answer, Kind> {
        self.send(jar, reqwest::Method::GET, url, None).await
    }

    /// One authenticated page request; 200 is success.
    async fn browse(&self, jar: &mut Jar) -> Result<(), Kind> {
        let a = self.get(jar, &self.opts.url).await?;
        match a.status {
            200 => Ok(()),
            302 | 303 => Err("session_lost".into()),
            s => Err(format!("status_{s}")),
        }
    }

    /// A login from the module URL to its page: silent when the jar holds
    /// an IdP session, through the IdP's forms with `user` otherwise.
    async fn login(&self, jar: &mut Jar, user: Option<&User>) -> Result<(), Kind> {
        let mut url = self.opts.url.clone();
        let mut called_back = false;
        for _ in 0..12 {
            let a = self.get(jar, &url).await?;
            called_back |= url.path() == "/_unigate/callback" && url.origin() == self.opts.url.origin();
            match (a.status, a.location) {
                (200, _) if url.origin() == self.opts.url.origin() && !url.path().starts_with("/_unigate/") => {
                    // A page without a pass through the callback is no login
                    // (a public path, or a module that allows its own login).
                    return if called_back { Ok(()) } else { Err("no_login".into()) };
                }
                (301..=303 | 307 | 308, Some(next)) => {
                    if next.path() == "/login" && next.query().is_some_and(|q| q.contains("flow=")) {
                        let Some(user) = user else {
                            return Err("idp_prompted".into());
                        };
                        url = self.idp_forms(jar, &next, user).await?;
                    } else {
                        url = next;
                    }
                }
                (s, _) => return Err(format!("status_{s}")),
            }
        }
        Err("too_many_redirects".into())
    }

    /// The embedded IdP's login steps: identify, password, code. Returns
    /// where the IdP sends the browser next (the callback).
    async fn idp_forms(&self, jar: &mut Jar, login: &Url, user: &User) -> Result<Url, Kind> {
        let flow = login
            .query_pairs()
            .find(|(k, _)| k == "flow")
            .map(|(_, v)| v.into_owned())
            .ok_or("idp_flow")?;
        let post_url = login.join("/login").map_err(|_| "idp_flow")?;
        let page = self.get(jar, login).await?;
        if page.status != 200 {
            return Err(format!("idp_status_{}", page.status));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let code = crate::idp::directory::totp_code(&user.totp, now);
        let steps: [(&str, Vec<(&str, &str)>); 3] = [
            (
                "identify",
                vec![("username", &user.username), ("company", &user.company)],
            ),
            ("password", vec![("password", &user.password)]),
            ("code", vec![("code", &code)]),
        ];
        let mut next = None;
        for (step, fields) in steps {
            let mut form = vec![("flow", flow.as_str()), ("step", step)];
            form.extend(fields);
            let a = self.send(jar, reqwest::Method::POST, &post_url, Some(&form)).await?;
            if !(300..400).contains(&a.status) {
                return Err(format!("idp_refused_{step}"));
            }
            next = a.location;
        }
        let next = next.ok_or("idp_flow")?;
        if next.path() == "/login" {
            return Err("idp_refused_code".into());
        }
        Ok(next)
    }

    /// An RP-initiated logout; with `follow_idp_logout`, through the IdP's
    /// end-session endpoint (which sends the back-channel logouts).
    async fn logout(&self, jar: &mut Jar) -> Result<(), Kind> {
        let url = self
            .opts
            .url
            .join(&self.opts.logout_path)
            .map_err(|_| "bad_logout_path")?;
        let a = self.get(jar, &url).await?;
        let Some(next) = a.location.filter(|_| (300..400).contains(&a.status)) else {
            return Err(format!("status_{}", a.status));
        };
        if self.opts.follow_idp_logout {
            let a = self.get(jar, &next).await?;
            if a.status >= 400 {
                return Err(format!("idp_logout_status_{}", a.status));
            }
        }
        Ok(())
    }
}

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

    #[test]
    fn the_jar_keeps_cookies_per_host_and_forgets_expired_ones() {
        let mut j = Jar::default();
        let u = Url::parse("http://portal.localhost:8080/x").unwrap();
        let mut h = reqwest::header::HeaderMap::new();
        h.append("set-cookie", "unigate=abc; Path=/; HttpOnly".parse().unwrap());
        h.append("set-cookie", "other=1".parse().unwrap());
        j.store(&u, &h);
        assert_eq!(j.header(&u).as_deref(), Some("unigate=abc; other=1"));
        let mut gone = reqwest::header::HeaderMap::new();
        gone.append("set-cookie", "unigate=; Max-Age=0".parse().unwrap());
        j.store(&u, &gone);
        assert_eq!(j.header(&u).as_deref(), Some("other=1"));
        let idp = Url::parse("http://127.0.0.1:9000/").unwrap();
        assert!(j.idp_only(&idp).header(&u).is_none());
    }
}
