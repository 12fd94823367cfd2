//! The calls unigate makes to a module on the user's behalf (telling it of
//! a logout, checking module credentials for a link, a local exception's
//! login, SCIM account lookups): over the same transport as the proxied
//! traffic. A module whose upstream is TLS gets TLS here too, with the same
//! SNI name, the same CA and the same verification switch; never a plain
//! `http://` request carrying passwords, cookies or the SCIM token.

use std::net::SocketAddr;
use std::time::Duration;

use super::config::{Route, RouteId};
use super::reject::Reject;
use super::tls::UpstreamTls;
use crate::accounts::Outcome;
use crate::session::Identity;

/// How long any call to a module may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The HTTP clients of one route: one per upstream (each TLS client
/// connects to its own upstream address while verifying the SNI name).
#[derive(Clone, Default)]
pub struct RouteClients {
    upstreams: Vec<(SocketAddr, Endpoint)>,
}

#[derive(Clone)]
struct Endpoint {
    /// `scheme://authority`, without a trailing slash.
    base: String,
    client: reqwest::Client,
}

/// One call target: an upstream's base URL and the client that reaches it.
pub struct ModuleCall<'a> {
    base: &'a str,
    pub client: &'a reqwest::Client,
}

impl ModuleCall<'_> {
    /// The URL of `path_and_query` (starting with `/`) at this upstream.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }
}

/// A builder with the settings every call to a module shares.
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        // As the proxied traffic: HTTP/1.1, so that the `Host` unigate
        // sets is the one the module reads.
        .http1_only()
        // Straight to the upstream, as the proxied traffic goes: never
        // through an `HTTP(S)_PROXY` from the environment, which would see
        // passwords and cookies (and bypass the upstream's address).
        .no_proxy()
}

/// The base URL for `addr` under `tls`, and the names to resolve to it.
/// With a DNS name for SNI the URL carries that name (sent as SNI and
/// verified) and the client resolves it to the upstream's address. An IP
/// address as SNI is used as it is when it is the upstream's own; else the
/// upstream's address is what the certificate must name (browsers and
/// rustls send no SNI for an address anyway).
pub fn base_url(addr: SocketAddr, tls: Option<&UpstreamTls>) -> (String, Option<String>) {
    let Some(t) = tls else {
        return (format!("http://{addr}"), None);
    };
    match t.sni.parse::<std::net::IpAddr>() {
        Ok(ip) if ip == addr.ip() => (format!("https://{}", SocketAddr::new(ip, addr.port())), None),
        Ok(_) => (format!("https://{addr}"), None),
        Err(_) => (format!("https://{}:{}", t.sni, addr.port()), Some(t.sni.clone())),
    }
}

impl RouteClients {
    /// Built once per gateway (and reload): `plain` is the shared client
    /// used for routes whose upstream speaks plain HTTP.
    pub fn build(m: &Route, plain: &reqwest::Client) -> Result<RouteClients, String> {
        let mut upstreams = Vec::with_capacity(m.upstreams.len());
        for &addr in &m.upstreams {
            let (base, resolve) = base_url(addr, m.upstream_tls.as_ref());
            let client = match &m.upstream_tls {
                None => plain.clone(),
                Some(t) => {
                    let mut b = builder();
                    if let Some(name) = &resolve {
                        b = b.resolve(name, addr);
                    }
                    if let Some(ca) = &t.ca {
                        let mut roots = Vec::with_capacity(ca.certs.len());
                        for c in ca.certs.iter() {
                            let der: &[u8] = c.borrow_raw_cert();
                            roots.push(
                                reqwest::Certificate::from_der(der)
                                    .map_err(|e| format!("module {}: upstream_ca: {e}", m.label()))?,
                            );
                        }
                        // Only the module's CA, as for the proxied traffic.
                        b = b.tls_certs_only(roots);
                    }
                    if !t.verify {
                        b = b.tls_danger_accept_invalid_certs(true);
                    }
                    b.build().map_err(|e| format!("module {}: {e}", m.label()))?
                }
            };
            upstreams.push((addr, Endpoint { base, client }));
        }
        Ok(RouteClients { upstreams })
    }

    /// The call target for upstream `addr` of this route.
    pub fn to(&self, addr: SocketAddr) -> Option<ModuleCall<'_>> {
        self.upstreams
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, e)| ModuleCall {
                base: &e.base,
                client: &e.client,
            })
    }
}

/// The clients of plain-HTTP routes: timeouts, no redirects followed.
pub fn plain_client() -> Result<reqwest::Client, String> {
    builder().build().map_err(|e| e.to_string())
}

/// Where a user stands with a route's module account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// Nothing to wait for: the account is found (or none is needed).
    Ready,
    /// The route requires a linked account, and none is linked yet.
    LinkPending,
}

impl super::Gateway {
    /// A healthy upstream of route `id` to call, with its base URL and client.
    pub fn module_call(&self, id: RouteId) -> Option<ModuleCall<'_>> {
        self.routes.module_call(id)
    }

    /// The user's module account on route `id`: the linked one (with
    /// `link_required`), or the one account matching finds — looked up
    /// (and, with provisioning, created) by SCIM at the module's own
    /// upstream unless a `scim_url` is configured. Sets
    /// `identity.module_user` when found.
    pub async fn module_account(&self, id: RouteId, identity: &mut Identity) -> Result<Account, Reject> {
        let route = self.route(id);
        if route.link_required {
            return match self.link_of(&identity.sub, route.label()).await.map_err(super::down)? {
                Some(u) => {
                    identity.module_user = Some(u.into());
                    Ok(Account::Ready)
                }
                None => Ok(Account::LinkPending),
            };
        }
        let Some(accounts) = &self.routes.parts(id).accounts else {
            return Ok(Account::Ready);
        };
        let call = self.module_call(id);
        let base = call.as_ref().map(|c| c.url("/scim/v2")).unwrap_or_default();
        let client = call.as_ref().map_or(&self.routes.http, |c| c.client);
        match accounts.check(identity, &base, client).await {
            Ok(Outcome::Ok(a)) => identity.module_user = Some(a.username.into()),
            Ok(Outcome::Provisioned(a)) => {
                tracing::info!(module.name = %route.label(), user.sub = %identity.sub, module.user = %a.username, "module account provisioned");
                identity.module_user = Some(a.username.into());
            }
            Ok(Outcome::Refused(refusal)) => {
                tracing::info!(module.name = %route.label(), user.sub = %identity.sub, refusal = ?refusal, decision = "deny", "module account check");
                return Err(Reject::AccountRefused {
                    identity: Box::new(identity.clone()),
                    refusal,
                });
            }
            Err(e) => {
                tracing::warn!(module.name = %route.label(), error = %e, "module account lookup failed");
                return Err(Reject::AccountsUnavailable);
            }
        }
        Ok(Account::Ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(sni: &str) -> UpstreamTls {
        UpstreamTls {
            sni: sni.into(),
            ca: None,
            verify: true,
        }
    }

    #[test]
    fn base_urls_follow_the_upstream_transport() {
        let v4: SocketAddr = "10.0.0.5:8443".parse().unwrap();
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        for (addr, t, base, resolve) in [
            (v4, None, "http://10.0.0.5:8443", None),
            (
                v4,
                Some(tls("module.internal")),
                "https://module.internal:8443",
                Some("module.internal"),
            ),
            (v4, Some(tls("10.0.0.5")), "https://10.0.0.5:8443", None),
            (v4, Some(tls("10.0.0.9")), "https://10.0.0.5:8443", None),
            (v6, Some(tls("::1")), "https://[::1]:9000", None),
            (v6, None, "http://[::1]:9000", None),
        ] {
            let (b, r) = base_url(addr, t.as_ref());
            assert_eq!(b, base, "{addr} {:?}", t.as_ref().map(|t| &t.sni));
            assert_eq!(r.as_deref(), resolve);
        }
    }
}
