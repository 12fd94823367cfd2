//! A real browser walking the pages: Debian's `chromium` under
//! `chromedriver`, driven by fantoccini. A walk has named steps (a failure
//! names its test, its step and the page it was on); every end-user page
//! is checked by axe-core (`axe`) and screenshotted.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

use super::axe;

/// How long a step waits for an element before it fails.
const WAIT: Duration = Duration::from_secs(10);

/// chromedriver, in a process group of its own: dropping it ends it and
/// the Chromium it started, also when a test fails half-way.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Where screenshots go: `docs/screenshots/` with `UNIGATE_SCREENSHOTS=1`
/// (to refresh the docs' pictures), `target/screenshots/` otherwise (so a
/// test run leaves the git tree clean).
pub fn screenshot_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UNIGATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        root.join("docs/screenshots")
    } else {
        root.join("target/screenshots")
    }
}

pub struct Walk {
    pub c: Client,
    test: &'static str,
    step: String,
    axe: String,
    /// axe violations found so far, one line each.
    violations: Vec<String>,
    // Last: ended after the client's connection.
    _driver: Driver,
}

impl Walk {
    /// Chromium under chromedriver, and axe-core's source; `None` (the test
    /// is skipped) when `UNIGATE_SKIP_BROWSER` is set.
    pub async fn start(test: &'static str) -> Option<Walk> {
        if std::env::var_os("UNIGATE_SKIP_BROWSER").is_some() {
            eprintln!("UNIGATE_SKIP_BROWSER is set: browser test {test} skipped");
            return None;
        }
        let axe = axe::source();
        // fantoccini's TLS stack brings ring beside aws-lc-rs: pick one.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        // A port picked free can be taken by another test's server before
        // chromedriver binds it (chromedriver then exits, and the check
        // below may reach that server): try again on another.
        let mut attempt = 0;
        let (c, driver) = loop {
            attempt += 1;
            let port = unigate::gateway::server::free_port().unwrap();
            let child = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver is not installed: apt-get install chromium chromium-driver (scripts/test does)");
            let mut driver = Driver(child);
            crate::common::wait_until("chromedriver listens", Duration::from_secs(10), async || {
                tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            })
            .await;
            let profile = tempfile::tempdir().unwrap().keep();
            let caps = serde_json::json!({
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                        "--lang=en-US",
                        format!("--user-data-dir={}", profile.display()),
                    ]
                }
            });
            let caps = caps.as_object().unwrap().clone().into_iter().collect();
            let connected = ClientBuilder::rustls()
                .expect("rustls client")
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            let exited = driver.0.try_wait().ok().flatten().is_some();
            match connected {
                Ok(c) if !exited => break (c, driver),
                other if attempt >= 3 => panic!(
                    "chromium starts under chromedriver: {:?} (chromedriver exited: {exited})",
                    other.err()
                ),
                _ => eprintln!("[{test}] chromedriver on port {port} did not start (attempt {attempt}); again"),
            }
        };
        Some(Walk {
            c,
            test,
            step: "start".into(),
            axe,
            violations: Vec::new(),
            _driver: driver,
        })
    }

    /// The next named step; a failure from here on names it.
    pub fn step(&mut self, name: &str) {
        eprintln!("[{}] step: {name}", self.test);
        self.step = name.to_string();
    }

    /// Panics naming the test, the step and the page the browser is on.
    pub async fn fail(&self, what: impl std::fmt::Display) -> ! {
        let url = self.c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        let title = self.c.title().await.unwrap_or_default();
        panic!(
            "[{}] step \"{}\" failed: {what}\n  on {url} (title {title:?})",
            self.test, self.step
        );
    }

    pub async fn ok<T, E: std::fmt::Debug>(&self, r: Result<T, E>, what: &str) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(format!("{what}: {e:?}")).await,
        }
    }

    /// Asserts `cond`, failing with `what` (and the step and page).
    pub async fn check(&self, cond: bool, what: impl std::fmt::Display) {
        if !cond {
            self.fail(what).await;
        }
    }

    pub async fn url(&self) -> String {
        self.ok(self.c.current_url().await, "current URL").await.to_string()
    }

    pub async fn goto(&self, url: &str) {
        self.ok(self.c.goto(url).await, &format!("open {url}")).await;
    }

    /// The first element matching `css`, waited for.
    pub async fn find(&self, css: &str) -> Element {
        let r = self.c.wait().at_most(WAIT).for_element(Locator::Css(css)).await;
        self.ok(r, &format!("no element `{css}`")).await
    }

    /// The first element matching the XPath `xpath`, waited for.
    pub async fn find_x(&self, xpath: &str) -> Element {
        let r = self.c.wait().at_most(WAIT).for_element(Locator::XPath(xpath)).await;
        self.ok(r, &format!("no element `{xpath}`")).await
    }

    /// A link whose visible text contains `text`, waited for.
    pub async fn link(&self, text: &str) -> Element {
        self.find_x(&format!("//a[contains(normalize-space(.), {})]", xpath_str(text)))
            .await
    }

    /// The element matching `css` now, if any (no waiting).
    pub async fn present(&self, css: &str) -> Option<Element> {
        self.c.find(Locator::Css(css)).await.ok()
    }

    pub async fn attr(&self, el: &Element, name: &str) -> String {
        self.ok(el.attr(name).await, &format!("attribute {name}"))
            .await
            .unwrap_or_default()
    }

    pub async fn text(&self, el: &Element) -> String {
        self.ok(el.text().await, "element text").await
    }

    /// The page's visible text.
    pub async fn body_text(&self) -> String {
        let body = self.find("body").await;
        self.text(&body).await
    }

    /// Clicks `el` and waits until the page it was on is gone (when
    /// `navigates`), so the next `find` reads the new page.
    pub async fn click(&self, el: &Element, navigates: bool) {
        let before = self.ok(self.c.find(Locator::Css("html")).await, "the page").await;
        self.ok(el.click().await, "click").await;
        if navigates {
            self.gone(&before).await;
        }
    }

    /// Waits until `el`'s document has been replaced by another.
    async fn gone(&self, el: &Element) {
        for _ in 0..(WAIT.as_millis() / 50) {
            if el.is_displayed().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.fail("the page did not change").await;
    }

    /// Types into the inputs named in `fields` (replacing what is there)
    /// and submits their form.
    pub async fn fill_and_submit(&self, fields: &[(&str, &str)]) {
        let mut last = None;
        for (name, value) in fields {
            let el = self.find(&format!("input[name={name}]")).await;
            self.ok(el.clear().await, &format!("clear {name}")).await;
            self.ok(el.send_keys(value).await, &format!("type into {name}")).await;
            last = Some(el);
        }
        let form = self
            .ok(
                last.expect("a field").find(Locator::XPath("ancestor::form")).await,
                "the field's form",
            )
            .await;
        let submit = self
            .ok(
                form.find(Locator::Css(
                    "button[type=submit], input[type=submit], button:not([type])",
                ))
                .await,
                "the form's submit button",
            )
            .await;
        self.click(&submit, true).await;
    }

    /// An end-user page: checked by axe-core and screenshotted as `name`.
    pub async fn page(&mut self, name: &str) {
        self.axe_check().await;
        let png = self.ok(self.c.screenshot().await, "screenshot").await;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        // Written whole, then renamed: walks running at once may write the
        // same page (the same kind of page) at the same time.
        let tmp = dir.join(format!(".{name}.{}.png", self.test));
        std::fs::write(&tmp, png).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{name}.png"))).unwrap();
    }

    /// An end-user page already screenshotted elsewhere (another of the
    /// same kind): checked by axe-core only.
    pub async fn axe_check(&mut self) {
        let url = self.url().await;
        let found = axe::run(&self.c, &self.axe).await;
        let found = self.ok(found, "axe-core runs on the page").await;
        for v in found {
            let line = format!("{url} [{}] {}", self.step, v);
            eprintln!("axe: {line}");
            self.violations.push(line);
        }
    }

    /// The violations found so far, forgotten (for a test of the check).
    pub fn take_violations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.violations)
    }

    /// Ends the walk: the browser closes; fails listing every serious or
    /// critical axe-core violation found on the way.
    pub async fn finish(self) {
        let _ = self.c.clone().close().await;
        assert!(
            self.violations.is_empty(),
            "[{}] axe-core found {} serious or critical violation(s) (page [step] rule (impact): nodes):\n{}",
            self.test,
            self.violations.len(),
            self.violations.join("\n")
        );
    }
}

/// `s` as an XPath string literal.
pub fn xpath_str(s: &str) -> String {
    if !s.contains('\'') {
        format!("'{s}'")
    } else {
        format!("concat('{}')", s.replace('\'', "', \"'\", '"))
    }
}
