//! Login transactions, kept in the browser rather than on the server: a
//! login start seals its nonce, PKCE verifier, return path, route and host
//! (AES-256-GCM under an hourly key derived from unigate's secret, with a
//! random nonce and the `state` as associated data) into a short-lived
//! cookie named after the `state`. Only that browser can
//! finish the login, and unauthenticated traffic stores nothing on the
//! server: a flood of login starts pushes no one's pending login out. Each
//! tab logging in has its own cookie, and at most `MAX_PENDING` of them are
//! kept (the oldest are expired at the next start), so they cannot pile up
//! into a `Cookie` header too large to send. A `state` works once: the
//! callback claims it in a set (in memory, or `SET NX` in Redis so every
//! replica agrees) that only real callbacks with a valid cookie reach.
//! `start_login` sends the browser to the IdP with such a transaction.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Prk, Salt};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use pingora::http::RequestHeader;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::config::RouteId;
use super::reject::{Reject, Reply};
use super::{Gateway, PREFIX, unix_now};
use crate::crypto::{pkce_s256, random_token};
use crate::oidc::with_params;
use crate::session::redis::StoreError;

/// How long a login may take, from the start to the callback.
pub const TXN_TTL: Duration = Duration::from_secs(600);
/// Transaction cookies a browser keeps at most: logins in that many tabs
/// at once work; a start beyond them expires the oldest.
pub const MAX_PENDING: usize = 4;
/// The longest return path a transaction carries: with its query cut off
/// beyond this, or `/`. Keeps `MAX_PENDING` cookies within a few KiB.
pub const MAX_RETURN_PATH: usize = 512;
/// The most client addresses the login-start limit counts at once (the
/// least recently seen are forgotten first).
pub const LOGIN_COUNTER_CAP: u64 = 100_000;
/// The most `state`s remembered as used (each for `TXN_TTL`).
pub const USED_CAP: u64 = 1_000_000;

const COOKIE: &str = "unigate_login_";
const COOKIE_TLS: &str = "__Host-unigate_login_";
const AAD: &[u8] = b"unigate login transaction v1";
const AAD_V2: &[u8] = b"unigate login transaction v2";
/// How long one transaction key seals: a key per hour (by the cookie's
/// expiry), each sealing at most as many transactions as login starts in
/// an hour, far below the 2^32 random 96-bit nonces AES-GCM allows a key.
const EPOCH: u64 = 3600;
/// The marker of a cookie sealed under an hourly key: `<expiry>.2.<…>`.
const V2: &str = "2.";
const NOTE_AAD: &[u8] = b"unigate browser note v1";

/// A login on its way, as its cookie carries it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingLogin {
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "v")]
    pub verifier: String,
    #[serde(rename = "r")]
    pub return_path: String,
    /// The route's label (`module` or `module/instance`).
    #[serde(rename = "m")]
    pub route: String,
    #[serde(rename = "h")]
    pub host: String,
    /// The `max_age` asked of the identity provider (seconds): the login's
    /// `auth_time` must be at most that old.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

/// A started login: what goes to the IdP, and the cookies to set.
pub struct LoginStart {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub set_cookies: Vec<String>,
}

/// Why a login cannot start now.
#[derive(Debug)]
pub enum Refused {
    /// This client address started too many: wait this long.
    TooMany(Duration),
    /// The shared store is down: the callback could not be checked, so
    /// the user is not sent to the IdP for nothing.
    StoreDown,
}

/// The sealing key and the used `state`s.
pub struct LoginTxns {
    prk: Prk,
    /// The hourly keys derived so far (the last few hours'): deriving one
    /// and its AES key schedule cost more than the rest of a login start.
    hourly: std::sync::RwLock<Vec<(u64, Arc<LessSafeKey>)>>,
    used: moka::sync::Cache<[u8; 32], ()>,
    tls: bool,
}

fn state_hash(state: &str) -> [u8; 32] {
    Sha256::digest(state.as_bytes()).into()
}

/// A return path short enough for a cookie.
fn fitted(return_path: &str) -> &str {
    if return_path.len() <= MAX_RETURN_PATH {
        return return_path;
    }
    match return_path.split_once('?') {
        Some((path, _)) if path.len() <= MAX_RETURN_PATH => path,
        _ => "/",
    }
}

impl LoginTxns {
    /// `secret`: the key material every replica shares (with Redis); a
    /// random one otherwise (one replica: a restart ends pending logins).
    pub fn new(secret: Option<&[u8]>, tls: bool) -> LoginTxns {
        let random;
        let ikm = match secret {
            Some(s) => s,
            None => {
                random = random_token();
                random.as_bytes()
            }
        };
        LoginTxns {
            prk: Salt::new(HKDF_SHA256, b"unigate login transactions").extract(ikm),
            hourly: std::sync::RwLock::new(Vec::new()),
            used: moka::sync::Cache::builder()
                .max_capacity(USED_CAP)
                .time_to_live(TXN_TTL + Duration::from_secs(60))
                .build(),
            tls,
        }
    }

    fn prefix(&self) -> &'static str {
        if self.tls { COOKIE_TLS } else { COOKIE }
    }

    /// The cookie of the login with this `state`.
    pub fn cookie_name(&self, state: &str) -> String {
        let tag = B64.encode(&state_hash(state)[..12]);
        format!("{}{tag}", self.prefix())
    }

    /// A key of its own for one `state` (or one note's salt), used with a
    /// nonce of zeros: for notes, and to open transaction cookies sealed
    /// before the hourly keys.
    fn key(&self, state: &str) -> Option<LessSafeKey> {
        let info: &[&[u8]] = &[b"aes-256-gcm", state.as_bytes()];
        let okm = self.prk.expand(info, &AES_256_GCM).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }

    /// The key of the hour `expires` falls in.
    fn hourly_key(&self, expires: u64) -> Option<Arc<LessSafeKey>> {
        let hour = expires / EPOCH;
        let known = |keys: &[(u64, Arc<LessSafeKey>)]| keys.iter().find(|(h, _)| *h == hour).map(|(_, k)| k.clone());
        if let Some(k) = known(&self.hourly.read().unwrap_or_else(|p| p.into_inner())) {
            return Some(k);
        }
        // A label no per-`state` key's info ("aes-256-gcm" + state) starts
        // with: the two kinds of key never meet.
        let info: &[&[u8]] = &[b"unigate hourly transaction key\0", &hour.to_be_bytes()];
        let okm = self.prk.expand(info, &AES_256_GCM).ok()?;
        let key = Arc::new(LessSafeKey::new(UnboundKey::from(okm)));
        let mut keys = self.hourly.write().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = known(&keys) {
            return Some(k);
        }
        // Only the hours a cookie alive now can name: those around this one
        // (hours left from a clock set wrong go).
        keys.retain(|(h, _)| h.abs_diff(hour) <= 2);
        keys.push((hour, key.clone()));
        Some(key)
    }

    /// What a transaction's seal authenticates besides its content: its
    /// expiry and its `state` (a cookie opens only with its own).
    fn aad_v2(state: &str, expires: &str) -> Vec<u8> {
        [AAD_V2, expires.as_bytes(), b"\0", state.as_bytes()].concat()
    }

    /// The cookie value: `<expiry>.2.<nonce and sealed>`, the expiry (unix
    /// seconds) in the clear, for the oldest-first cap, and authenticated.
    pub fn seal(&self, state: &str, p: &PendingLogin, expires: u64) -> Option<String> {
        let key = self.hourly_key(expires)?;
        let mut nonce = [0u8; 12];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut buf = serde_json::to_vec(p).ok()?;
        let exp = expires.to_string();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&Self::aad_v2(state, &exp)),
            &mut buf,
        )
        .ok()?;
        let mut out = String::with_capacity(exp.len() + 3 + (12 + buf.len()) * 4 / 3 + 4);
        out.push_str(&exp);
        out.push('.');
        out.push_str(V2);
        B64.encode_string([&nonce[..], &buf].concat(), &mut out);
        Some(out)
    }

    /// Seals a short note for this browser (a failed login's reason):
    /// `<expiry>.<salt>.<sealed>`, each note under a key of its own (a
    /// random salt), so it can be neither read nor forged without
    /// unigate's key, and it stops opening at its expiry.
    pub fn seal_note(&self, plain: &[u8], expires: u64) -> Option<String> {
        let salt = random_token();
        let key = self.key(&format!("note\0{salt}"))?;
        let mut buf = plain.to_vec();
        let aad = [NOTE_AAD, expires.to_string().as_bytes()].concat();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(&aad), &mut buf)
            .ok()?;
        Some(format!("{expires}.{salt}.{}", B64.encode(buf)))
    }

    /// A note's content, if unigate sealed it and it has not expired (nor
    /// claims to last longer than `max_secs`).
    pub fn open_note(&self, value: &str, now: u64, max_secs: u64) -> Option<Vec<u8>> {
        let mut parts = value.splitn(3, '.');
        let (exp, salt, sealed) = (parts.next()?, parts.next()?, parts.next()?);
        let expires: u64 = exp.parse().ok()?;
        if expires <= now || expires > now + max_secs + 60 || salt.len() > 64 {
            return None;
        }
        let mut buf = B64.decode(sealed).ok()?;
        let key = self.key(&format!("note\0{salt}"))?;
        let aad = [NOTE_AAD, exp.as_bytes()].concat();
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::from(&aad), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }

    /// The transaction a cookie value holds, if it is this `state`'s and
    /// has not expired.
    pub fn open(&self, state: &str, value: &str, now: u64) -> Option<PendingLogin> {
        let (exp, sealed) = value.split_once('.')?;
        let expires: u64 = exp.parse().ok()?;
        if expires <= now || expires > now + TXN_TTL.as_secs() + 60 {
            return None;
        }
        if let Some(sealed) = sealed.strip_prefix(V2) {
            let mut buf = B64.decode(sealed).ok()?;
            if buf.len() < 12 {
                return None;
            }
            let nonce = Nonce::try_assume_unique_for_key(&buf[..12]).ok()?;
            let key = self.hourly_key(expires)?;
            let plain = key
                .open_within(nonce, Aad::from(&Self::aad_v2(state, exp)), &mut buf, 12..)
                .ok()?;
            return serde_json::from_slice(plain).ok();
        }
        // Sealed under the transaction's own key (an earlier version's
        // cookie, for the ten minutes a login lasts).
        let mut buf = B64.decode(sealed).ok()?;
        let key = self.key(state)?;
        let aad = [AAD, exp.as_bytes()].concat();
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::from(&aad), &mut buf)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }

    /// The `Set-Cookie` values that make room for one more transaction:
    /// every one of the request's transaction cookies but the newest
    /// `MAX_PENDING - 1` is expired (so are unreadable ones).
    pub fn make_room<'a>(&self, cookies: impl Iterator<Item = (&'a str, &'a str)>, now: u64) -> Vec<String> {
        let mut pending: Vec<(u64, &str)> = Vec::new();
        let mut expire: Vec<&str> = Vec::new();
        for (name, value) in cookies.take(64) {
            if !name.starts_with(self.prefix()) || name.len() > 64 {
                continue;
            }
            match value.split_once('.').and_then(|(e, _)| e.parse::<u64>().ok()) {
                Some(exp) if exp > now => pending.push((exp, name)),
                _ => expire.push(name),
            }
        }
        pending.sort_unstable_by(|a, b| b.cmp(a));
        pending.dedup_by(|a, b| a.1 == b.1);
        expire.extend(pending.iter().skip(MAX_PENDING - 1).map(|(_, n)| *n));
        expire.sort_unstable();
        expire.dedup();
        expire.into_iter().map(|n| self.set_cookie(n, "", 0)).collect()
    }

    /// A transaction cookie's `Set-Cookie` value (SameSite=Lax: the IdP's
    /// redirect back is a top-level navigation from another site).
    pub fn set_cookie(&self, name: &str, value: &str, max_age: u64) -> String {
        super::cookies::set_cookie(name, value, self.tls, "Lax", Some(max_age))
    }

    /// Marks a `state` used in this process: false if it already was.
    fn claim_here(&self, h: [u8; 32]) -> bool {
        self.used.entry(h).or_insert(()).is_fresh()
    }
}

/// `name=value` pairs of the request's `Cookie` headers.
fn cookie_pairs(req: &RequestHeader) -> impl Iterator<Item = (&str, &str)> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .map(|(n, v)| (n.trim(), v.trim()))
}

/// Entry counts of the server-side state login starts and callbacks
/// create, for tests.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct LoginStateSizes {
    /// Client addresses the login-start limit counts.
    pub rate_counter: u64,
    /// Login transactions kept on the server (none: they are in cookies).
    pub pending: u64,
    /// `state`s remembered as used (in this process).
    pub used: u64,
}

impl Gateway {
    /// Starts a login from `client`: the per-address limit, then a new
    /// transaction sealed into a cookie, with the expiries that keep the
    /// browser's transaction cookies within `MAX_PENDING`.
    #[allow(clippy::too_many_arguments)]
    pub fn begin_login(
        &self,
        req: &RequestHeader,
        client: Option<IpAddr>,
        id: RouteId,
        host: &str,
        return_path: &str,
        max_age: Option<u64>,
        now: u64,
    ) -> Result<LoginStart, Refused> {
        if !self.state.sessions.healthy() {
            return Err(Refused::StoreDown);
        }
        if let Some(ip) = client
            && let Some(wait) = self.state.login_starts.hit(crate::rate::client_key(ip), Instant::now())
        {
            return Err(Refused::TooMany(wait));
        }
        let (state, nonce, verifier) = (random_token(), random_token(), random_token());
        let pending = PendingLogin {
            nonce: nonce.clone(),
            verifier: verifier.clone(),
            return_path: fitted(return_path).to_string(),
            route: self.route(id).label().to_string(),
            host: host.to_string(),
            max_age,
        };
        let mut set_cookies = self.state.logins.make_room(cookie_pairs(req), now);
        let expires = now + TXN_TTL.as_secs();
        // Sealing fails only without memory: the login then fails at the
        // callback with a page that offers to try again.
        if let Some(value) = self.state.logins.seal(&state, &pending, expires) {
            let name = self.state.logins.cookie_name(&state);
            set_cookies.push(self.state.logins.set_cookie(&name, &value, TXN_TTL.as_secs()));
        }
        Ok(LoginStart {
            state,
            nonce,
            verifier,
            set_cookies,
        })
    }

    /// The login a callback with `state` finishes, taken once: its cookie
    /// must be in this browser, unexpired, and its `state` not used
    /// before. With it, the `Set-Cookie` value that expires its cookie.
    pub async fn finish_login(
        &self,
        req: &RequestHeader,
        state: &str,
        now: u64,
    ) -> Result<Option<(PendingLogin, String)>, StoreError> {
        if state.is_empty() || state.len() > 256 {
            return Ok(None);
        }
        let name = self.state.logins.cookie_name(state);
        let found = cookie_pairs(req)
            .filter(|(n, _)| *n == name)
            .take(4)
            .find_map(|(_, v)| self.state.logins.open(state, v, now));
        let Some(p) = found else { return Ok(None) };
        let h = state_hash(state);
        let first = match self.state.sessions.redis() {
            None => self.state.logins.claim_here(h),
            Some(shared) => shared.claim_login_state(&h, TXN_TTL + Duration::from_secs(60)).await?,
        };
        if !first {
            tracing::warn!("login callback replayed");
            return Ok(None);
        }
        Ok(Some((p, self.state.logins.set_cookie(&name, "", 0))))
    }

    /// A login start from `client` without HTTP (a fresh browser each
    /// time), as `start_login` does it; for tests that start many.
    #[doc(hidden)]
    pub async fn login_start_from(
        &self,
        client: IpAddr,
        mi: usize,
        host: &str,
        return_path: &str,
    ) -> Result<(), String> {
        let req = RequestHeader::build("GET", return_path.as_bytes(), None).map_err(|e| e.to_string())?;
        self.begin_login(
            &req,
            Some(client),
            RouteId(mi),
            host,
            return_path,
            None,
            super::unix_now(),
        )
        .map(|_| ())
        .map_err(|why| format!("refused: {why:?}"))
    }

    #[doc(hidden)]
    pub fn login_state_sizes(&self) -> LoginStateSizes {
        self.state.logins.used.run_pending_tasks();
        LoginStateSizes {
            rate_counter: self.state.login_starts.entry_count(),
            pending: 0,
            used: self.state.logins.used.entry_count(),
        }
    }
}

/// Sends the browser to the IdP to log in for route `id`: state, nonce
/// and PKCE S256, the return path sealed into this browser's login
/// transaction cookie; `login_hint` for the IdP (a username typed on the
/// module's login page); also setting `cookies`.
pub async fn start_login(
    g: &Gateway,
    session: &mut PSession,
    id: RouteId,
    host: &str,
    return_path: &str,
    login_hint: Option<&str>,
    cookies: Vec<String>,
) -> Result<bool> {
    let r = login_redirect(g, session, id, host, return_path, login_hint, Recent::Any, cookies);
    g.answer(session, Some(id), r).await
}

/// How recent a login is asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Recent {
    /// Any (the route's own `max_age` aside).
    Any,
    /// A first login to a part of the module that needs a login at most
    /// this many seconds old: `max_age` is asked, and a provider that
    /// honours it answers with a recent login at once. Not checked on
    /// return: the part's rule checks it, and asks again if need be.
    Ask(u64),
    /// A step-up, for a session whose login is older than this many
    /// seconds: `max_age` and `prompt=login` (the identity provider asks,
    /// even one that ignores `max_age`), and the new login's `auth_time`
    /// is checked on return.
    Require(u64),
}

/// Sends the browser to the IdP for a part of the module that needs a
/// recent login (see `Recent`), then back to `return_path`.
pub async fn start_recent_login(
    g: &Gateway,
    session: &mut PSession,
    id: RouteId,
    host: &str,
    return_path: &str,
    login_hint: Option<&str>,
    recent: Recent,
) -> Result<bool> {
    let r = login_redirect(g, session, id, host, return_path, login_hint, recent, Vec::new());
    g.answer(session, Some(id), r).await
}

/// How recent a login a browser without a session needs for a GET of
/// `return_path` (a path and query on `route`'s host): what a rule there
/// asks for, or any.
pub fn recent_for(route: &crate::config::route::Route, return_path: &str) -> Recent {
    let (path, query) = match return_path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (return_path, None),
    };
    let Ok(path) = crate::policy::path::canonicalize(path) else {
        return Recent::Any;
    };
    let no_headers = http::HeaderMap::new();
    match route
        .rule(&path, &http::Method::GET, query, &no_headers)
        .and_then(|r| r.max_login_age)
    {
        Some(age) => Recent::Ask(age.as_secs()),
        None => Recent::Any,
    }
}

#[allow(clippy::too_many_arguments)]
fn login_redirect(
    g: &Gateway,
    session: &PSession,
    id: RouteId,
    host: &str,
    return_path: &str,
    login_hint: Option<&str>,
    recent: Recent,
    mut cookies: Vec<String>,
) -> std::result::Result<Reply, Reject> {
    let Some(loaded) = g.state.oidc.loaded() else {
        return Err(Reject::IdpDown);
    };
    let route = g.route(id);
    let client = g.client_addr(session);
    let client_ip = client.map(|ip| ip.to_string()).unwrap_or_default();
    // The route's own `max_age`, or a step-up's, whichever is shorter:
    // checked on return. A first login's asks for no check.
    let shorter = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let own = route.max_age.map(|a| a.as_secs());
    let (max_age, asked) = match recent {
        Recent::Any => (own, own),
        Recent::Ask(a) => (own, shorter(own, Some(a))),
        Recent::Require(a) => (shorter(own, Some(a)), shorter(own, Some(a))),
    };
    let start = match g.begin_login(session.req_header(), client, id, host, return_path, max_age, unix_now()) {
        Ok(s) => s,
        Err(Refused::StoreDown) => {
            tracing::error!(module.name = %route.label(), "login start refused: the session store cannot be reached");
            return Err(Reject::StoreDown);
        }
        Err(Refused::TooMany(wait)) => {
            tracing::info!(module.name = %route.label(), client.ip = %client_ip, "login start refused: too many from this address");
            return Err(Reject::TooManyLogins {
                retry_after: wait.as_secs(),
            });
        }
    };
    let oidc = &g.state.oidc;
    let redirect_uri = format!("{}{PREFIX}callback", g.cfg().origin_for(host));
    let scope = oidc.settings.scopes.join(" ");
    let challenge = pkce_s256(&start.verifier);
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", oidc.settings.client_id.as_str()),
        ("redirect_uri", &redirect_uri),
        ("scope", &scope),
        ("state", &start.state),
        ("nonce", &start.nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    if let Some(h) = login_hint.filter(|h| !h.is_empty()) {
        params.push(("login_hint", h));
    }
    let asked = asked.map(|a| a.to_string());
    if let Some(a) = &asked {
        params.push(("max_age", a));
    }
    if matches!(recent, Recent::Require(_)) {
        params.push(("prompt", "login"));
    }
    let url = match &loaded.authorize {
        Some(endpoint) => endpoint.with(&params),
        None => with_params(&loaded.discovery.authorization_endpoint, &params),
    };
    tracing::info!(module.name = %route.name, client.ip = %client_ip, "login started");
    g.state.metrics.logins_started.with_label_values(&[route.label()]).inc();
    cookies.extend(start.set_cookies);
    Ok(Reply::redirect(url).with_cookies(cookies))
}

/// The key material of login transaction cookies for a gateway: with
/// Redis, derived from its encryption key (every replica opens every
/// replica's cookies).
pub fn login_txns(cfg: &super::config::GatewayConfig) -> Arc<LoginTxns> {
    let secret = cfg.session.redis.as_ref().map(|r| r.encryption_key.expose().as_bytes());
    Arc::new(LoginTxns::new(secret, cfg.tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txns() -> LoginTxns {
        LoginTxns::new(Some(b"a secret of at least thirty-two characters"), false)
    }

    fn pending(path: &str) -> PendingLogin {
        PendingLogin {
            nonce: "n".repeat(43),
            verifier: "v".repeat(43),
            return_path: path.into(),
            route: "portal".into(),
            host: "portal.localhost".into(),
            max_age: None,
        }
    }

    #[test]
    fn a_transaction_opens_only_with_its_state_key_and_time() {
        let t = txns();
        let now = 1_000_000;
        let p = pending("/reports?x=1");
        let v = t.seal("state-1", &p, now + 600).unwrap();
        assert!(!v.contains("reports") && !v.contains("nnnn"), "sealed: {v}");
        assert_eq!(t.open("state-1", &v, now), Some(p.clone()));
        assert_eq!(t.open("state-1", &v, now + 599), Some(p.clone()));
        assert_eq!(t.open("state-1", &v, now + 600), None, "expired");
        assert_eq!(t.open("state-2", &v, now), None, "another state");
        let other = LoginTxns::new(Some(b"another secret of thirty-two characters!"), false);
        assert_eq!(other.open("state-1", &v, now), None, "another key");
        // The expiry is authenticated: pushing it out breaks the seal.
        let (_, sealed) = v.split_once('.').unwrap();
        assert_eq!(t.open("state-1", &format!("{}.{sealed}", now + 601), now), None);
        // Tampering (the nonce, the ciphertext), truncation, garbage.
        let bytes = B64.decode(sealed.strip_prefix(V2).expect("an hourly seal")).unwrap();
        let flipped = |i: usize| {
            let mut b = bytes.clone();
            b[i] ^= 1;
            format!("{}.{V2}{}", now + 600, B64.encode(&b))
        };
        let (nonce, body) = (flipped(0), flipped(20));
        for bad in [
            nonce.as_str(),
            body.as_str(),
            "1.2.",
            "1.2.AAAA",
            "",
            ".",
            "x.y",
            "1.",
            &v[..v.len() - 4],
            "99999999999999999999999.AAAA",
        ] {
            assert_eq!(t.open("state-1", bad, now), None, "{bad}");
        }
        // A far-future expiry is refused even if sealed.
        let v = t.seal("state-1", &p, now + 100_000).unwrap();
        assert_eq!(t.open("state-1", &v, now), None);
        // Two seals of one transaction differ (a fresh nonce each), and
        // both open.
        let (a, b) = (t.seal("s", &p, now + 600).unwrap(), t.seal("s", &p, now + 600).unwrap());
        assert_ne!(a, b);
        assert_eq!(t.open("s", &a, now), t.open("s", &b, now));
        // Across the hour: a cookie sealed in one hour opens in the next,
        // under the key of the hour its expiry names.
        let edge = 3 * EPOCH - 300;
        let v = t.seal("s", &p, edge + 600).unwrap();
        assert_eq!(t.open("s", &v, edge + 400), Some(p.clone()));
    }

    #[test]
    fn a_cookie_sealed_under_its_transactions_own_key_still_opens() {
        // The earlier form: `<expiry>.<sealed>`, a key per `state`, a zero
        // nonce.
        let t = txns();
        let now = 1_000_000;
        let p = pending("/r");
        let key = t.key("state-1").unwrap();
        let mut buf = serde_json::to_vec(&p).unwrap();
        let exp = (now + 600).to_string();
        let aad = [AAD, exp.as_bytes()].concat();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(&aad), &mut buf)
            .unwrap();
        let v = format!("{exp}.{}", B64.encode(buf));
        assert_eq!(t.open("state-1", &v, now), Some(p));
        assert_eq!(t.open("state-2", &v, now), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        #[test]
        fn any_cookie_value_is_refused_without_panic(value in proptest::prelude::any::<String>(), state in "[A-Za-z0-9_-]{0,60}") {
            proptest::prop_assert_eq!(txns().open(&state, &value, 1_000), None);
            let _ = txns().make_room(std::iter::once(("unigate_login_x", value.as_str())), 1_000);
        }
    }

    #[test]
    fn names_differ_per_state_and_tls_uses_host_prefix() {
        let t = txns();
        assert_ne!(t.cookie_name("a"), t.cookie_name("b"));
        assert!(t.cookie_name("a").starts_with("unigate_login_"));
        let tls = LoginTxns::new(None, true);
        assert!(tls.cookie_name("a").starts_with("__Host-unigate_login_"));
        assert!(tls.set_cookie("n", "v", 600).contains("; Secure"));
        // Login cookies are unigate's own: never passed to a module.
        for n in ["unigate_login", "unigate_login_abc", "__Host-unigate_login_abc"] {
            assert!(super::super::cookies::is_unigate_cookie(n), "{n}");
        }
        for n in ["portal_session", "login"] {
            assert!(!super::super::cookies::is_unigate_cookie(n), "{n}");
        }
    }

    #[test]
    fn at_most_max_pending_cookies_the_oldest_go_first() {
        let t = txns();
        let now = 5_000;
        // (cookies in the request, names expired by a new start)
        type Cookies<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Cookies, &[&str])] = &[
            (&[], &[]),
            (&[("unigate_login_a", "5100.x"), ("unigate_login_b", "5200.x")], &[]),
            (
                &[
                    ("unigate_login_a", "5100.x"),
                    ("unigate_login_b", "5500.x"),
                    ("unigate_login_c", "5300.x"),
                    ("unigate_login_d", "5400.x"),
                ],
                &["unigate_login_a"],
            ),
            (
                &[
                    ("unigate_login_a", "5100.x"),
                    ("unigate_login_b", "5500.x"),
                    ("unigate_login_c", "5300.x"),
                    ("unigate_login_d", "5400.x"),
                    ("unigate_login_e", "5450.x"),
                    ("unigate_login_f", "5050.x"),
                ],
                &["unigate_login_a", "unigate_login_c", "unigate_login_f"],
            ),
            // Expired or unreadable ones go too; other cookies are not ours.
            (
                &[
                    ("unigate_login_a", "4000.x"),
                    ("unigate_login_b", "junk"),
                    ("unigate", "5100.x"),
                    ("portal_session", "x"),
                ],
                &["unigate_login_a", "unigate_login_b"],
            ),
        ];
        for (cookies, want) in cases {
            let got = t.make_room(cookies.iter().copied(), now);
            let want: Vec<String> = want.iter().map(|n| t.set_cookie(n, "", 0)).collect();
            assert_eq!(got, want, "{cookies:?}");
        }
    }

    #[test]
    fn a_long_return_path_is_fitted() {
        assert_eq!(fitted("/a?b=c"), "/a?b=c");
        let long_query = format!("/reports?{}", "q".repeat(1000));
        assert_eq!(fitted(&long_query), "/reports");
        let long_path = format!("/{}", "p".repeat(1000));
        assert_eq!(fitted(&long_path), "/");
        // A worst-case cookie stays small.
        let t = txns();
        let p = pending(fitted(&format!("/{}", "p".repeat(MAX_RETURN_PATH - 1))));
        let v = t.seal("s", &p, 100).unwrap();
        assert!(t.cookie_name("s").len() + v.len() < 1024, "{}", v.len());
    }

    #[test]
    fn a_note_opens_only_as_sealed_and_until_it_expires() {
        let t = txns();
        let v = t.seal_note(b"why the login failed", 1_000).unwrap();
        assert_eq!(t.open_note(&v, 900, 600).as_deref(), Some(&b"why the login failed"[..]));
        assert!(t.open_note(&v, 1_000, 600).is_none(), "expired");
        let other = LoginTxns::new(Some(b"another secret of at least thirty-two chars"), false);
        assert!(other.open_note(&v, 900, 600).is_none(), "another key");
        let (head, sealed) = v.rsplit_once('.').unwrap();
        let mut bytes = B64.decode(sealed).unwrap();
        bytes[0] ^= 1;
        let tampered = format!("{head}.{}", B64.encode(bytes));
        assert!(t.open_note(&tampered, 900, 600).is_none(), "tampered");
        let later = v.replacen("1000.", "1200.", 1);
        assert!(t.open_note(&later, 900, 600).is_none(), "its expiry is authenticated");
        let plain = format!("1000.salt.{}", B64.encode(b"{\"r\":\"forbidden\"}"));
        assert!(t.open_note(&plain, 900, 600).is_none(), "forged");
        let far = t.seal_note(b"x", 900 + 10_000).unwrap();
        assert!(t.open_note(&far, 900, 600).is_none(), "claims to last too long");
        assert!(t.open_note("", 900, 600).is_none() && t.open_note("1000..", 900, 600).is_none());
    }

    #[test]
    fn a_state_is_claimed_once() {
        let t = txns();
        let h = state_hash("s");
        assert!(t.claim_here(h));
        assert!(!t.claim_here(h));
        assert!(t.claim_here(state_hash("t")));
    }
}
