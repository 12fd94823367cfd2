//! The HTTP side of the load tool: one virtual user's cookie jar and the
//! driver that requests pages, follows logins through the IdP's forms and
//! logs out. It follows redirects itself, and only to the origins it was
//! given.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use super::{Options, Scenario, User};

/// Why an iteration failed.
pub(super) type Kind = String;

/// One virtual user's cookies, by host.
#[derive(Clone, Default)]
pub(super) struct Jar(HashMap<String, Vec<(String, String)>>);

impl Jar {
    pub(super) fn header(&self, url: &Url) -> Option<String> {
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
    pub(super) fn idp_only(&self, idp: &Url) -> Jar {
        let mut j = Jar::default();
        if let Some(h) = idp.host_str()
            && let Some(c) = self.0.get(h)
        {
            j.0.insert(h.to_string(), c.clone());
        }
        j
    }
}

pub(super) struct Driver {
    http: reqwest::Client,
    opts: Options,
    origins: Vec<url::Origin>,
}

struct Answer {
    status: u16,
    location: Option<Url>,
}

impl Driver {
    pub(super) fn new(opts: Options) -> Result<Driver, String> {
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
    pub(super) async fn browse(&self, jar: &mut Jar) -> Result<(), Kind> {
        let a = self.get(jar, &self.opts.url).await?;
        match a.status {
            200 => Ok(()),
            302 | 303 => Err("session_lost".into()),
            s => Err(format!("status_{s}")),
        }
    }

    /// A login from the module URL to its page: silent when the jar holds
    /// an IdP session, through the IdP's forms with `user` otherwise.
    pub(super) async fn login(&self, jar: &mut Jar, user: Option<&User>) -> Result<(), Kind> {
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
    pub(super) async fn logout(&self, jar: &mut Jar) -> Result<(), Kind> {
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

/// Logs `user` in through unigate and the IdP's forms (verification code
/// included), starting at `url` — a module page, or its `/_unigate/login` —
/// and following redirects only between `url`'s origin and `idp`'s.
/// Returns the cookies `url`'s host then holds (unigate's session among
/// them), as name and value.
pub async fn log_in(
    url: &Url,
    connect: Option<SocketAddr>,
    idp: &Url,
    user: &User,
) -> Result<Vec<(String, String)>, String> {
    let driver = Driver::new(Options {
        url: url.clone(),
        connect,
        idp: Some(idp.clone()),
        scenario: Scenario::Login,
        concurrency: 1,
        rate: None,
        duration: Duration::ZERO,
        warmup: Duration::ZERO,
        sessions: 0,
        mix: 1,
        users: vec![user.clone()],
        logout_path: "/_unigate/logout".into(),
        follow_idp_logout: false,
        progress: false,
    })?;
    let mut jar = Jar::default();
    driver
        .login(&mut jar, Some(user))
        .await
        .map_err(|k| format!("logging {} in failed: {k}", user.username))?;
    Ok(url.host_str().and_then(|h| jar.0.get(h)).cloned().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

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
