//! The routes a configuration describes, with what each needs at run time:
//! hosts to route by, upstreams (round robin, health-checked), clients for
//! calls to the module, account lookups and request counters. Built anew
//! by every reload; the state that outlives a reload is in `state`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pingora::lb::LoadBalancer;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;

use super::config::{GatewayConfig, Route, RouteId};
use super::module_calls::{self, ModuleCall, RouteClients};
use crate::metrics::Metrics;

/// One route's run-time parts.
pub struct RouteParts {
    /// Its upstreams, round robin, health-checked (none: a Choose an
    /// Instance host).
    lb: Option<Arc<LoadBalancer<RoundRobin>>>,
    /// With a single upstream: its health as of the last check, read
    /// without touching the balancer (no allocation per request).
    healthy: Arc<AtomicBool>,
    /// Module account lookups, when configured.
    pub accounts: Option<crate::accounts::Accounts>,
    /// Clients for calls to its upstreams (logout, link check, exception
    /// login, SCIM), over TLS when its upstream is.
    calls: RouteClients,
    /// Request counters by `Outcome`.
    pub counters: [prometheus::IntCounter; 8],
}

/// Every route of a configuration.
pub struct Routes {
    pub cfg: Arc<GatewayConfig>,
    /// Route by host, and the `X-Forwarded-Host` for that host.
    hosts: HashMap<String, (RouteId, http::HeaderValue)>,
    parts: Vec<RouteParts>,
    /// Request counters for requests no route serves.
    pub unrouted: [prometheus::IntCounter; 8],
    /// For calls to plain-HTTP modules (and SCIM at a configured URL).
    pub http: reqwest::Client,
}

impl Routes {
    pub fn build(cfg: GatewayConfig, metrics: &Metrics) -> Result<Routes, String> {
        let mut hosts = HashMap::new();
        for (i, m) in cfg.modules.iter().enumerate() {
            for h in &m.hosts {
                // `X-Forwarded-Host` for requests routed by this host: the
                // host with the port browsers use, built once.
                let origin = cfg.origin_for(h);
                let forwarded = origin.split_once("://").map_or(origin.as_str(), |(_, h)| h);
                let value = http::HeaderValue::from_str(forwarded)
                    .map_err(|_| format!("module {}: `{h}` is not a valid host", m.label()))?;
                hosts.insert(h.clone(), (RouteId(i), value));
            }
        }
        let http = module_calls::plain_client()?;
        let mut parts = Vec::with_capacity(cfg.modules.len());
        for m in &cfg.modules {
            let lb = if m.upstreams.is_empty() {
                None
            } else {
                let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(m.upstreams.iter().copied())
                    .map_err(|e| format!("module {}: {e}", m.label()))?;
                lb.set_health_check(TcpHealthCheck::new());
                lb.health_check_frequency = Some(m.health_check_interval);
                Some(Arc::new(lb))
            };
            parts.push(RouteParts {
                lb,
                healthy: Arc::new(AtomicBool::new(true)),
                accounts: m
                    .accounts
                    .clone()
                    .filter(|_| m.chooser.is_empty())
                    .map(|a| crate::accounts::Accounts::new(a, http.clone())),
                calls: RouteClients::build(m, &http)?,
                counters: metrics.request_counters(m.label()),
            });
        }
        Ok(Routes {
            hosts,
            parts,
            unrouted: metrics.request_counters("-"),
            http,
            cfg: Arc::new(cfg),
        })
    }

    pub fn get(&self, id: RouteId) -> &Route {
        &self.cfg.modules[id.index()]
    }

    pub fn parts(&self, id: RouteId) -> &RouteParts {
        &self.parts[id.index()]
    }

    /// The route for a request's host (lowercase, without port), and the
    /// `X-Forwarded-Host` the module gets for it.
    pub fn by_host(&self, host: &str) -> Option<&(RouteId, http::HeaderValue)> {
        self.hosts.get(host)
    }

    /// Runs every route's health checks in the background, each at its
    /// `health_check_interval`, for as long as the routes live.
    pub fn spawn_health_checks(&self) {
        for (p, m) in self.parts.iter().zip(&self.cfg.modules) {
            let Some(lb) = &p.lb else { continue };
            let weak = Arc::downgrade(lb);
            let flag = p.healthy.clone();
            let every = m.health_check_interval;
            let label = m.label().to_string();
            tokio::spawn(async move {
                let mut down = 0;
                while let Some(lb) = weak.upgrade() {
                    lb.backends().run_health_check(true).await;
                    let backends = lb.backends().get_backend();
                    let now_down = backends.iter().filter(|b| !lb.backends().ready(b)).count();
                    flag.store(now_down < backends.len(), Ordering::Release);
                    if now_down != down {
                        tracing::warn!(module.name = %label, unhealthy = now_down, "upstream health changed");
                        down = now_down;
                    }
                    drop(lb);
                    tokio::time::sleep(every).await;
                }
            });
        }
    }

    /// Whether the route has upstreams at all (a Choose an Instance host
    /// has none).
    pub fn has_upstreams(&self, id: RouteId) -> bool {
        self.parts(id).lb.is_some()
    }

    /// A healthy upstream of route `id`, round robin, skipping `tried`.
    pub fn pick(&self, id: RouteId, tried: &[std::net::SocketAddr]) -> Option<std::net::SocketAddr> {
        let p = self.parts.get(id.index())?;
        let lb = p.lb.as_ref()?;
        if let [only] = self.get(id).upstreams.as_slice() {
            return (p.healthy.load(Ordering::Acquire) && !tried.contains(only)).then_some(*only);
        }
        let b = lb.select_with(b"", 256, |b, healthy| {
            healthy && b.addr.as_inet().is_none_or(|a| !tried.contains(a))
        })?;
        b.addr.as_inet().copied()
    }

    /// A call to a healthy upstream of route `id`.
    pub fn module_call(&self, id: RouteId) -> Option<ModuleCall<'_>> {
        let addr = self.pick(id, &[])?;
        self.parts(id).calls.to(addr)
    }

    /// The counters of route `id` (`None`: of requests no route serves).
    pub fn counters(&self, id: Option<RouteId>) -> &[prometheus::IntCounter; 8] {
        match id {
            Some(id) => &self.parts(id).counters,
            None => &self.unrouted,
        }
    }
}
