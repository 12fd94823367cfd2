//! Prometheus metrics, served on the admin listener at `GET /metrics`.
//!
//! One registry per unigate (tests run several in one process). Counters
//! on the request path are resolved to their label values once per
//! configuration, so counting a request is one atomic add.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// How a request ended, for `unigate_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded to the module (with a session, a bearer token, a local
    /// exception, a public path, or Unified Login off).
    Proxied,
    /// Forwarded, but the module could not be reached or failed.
    UpstreamError,
    /// Sent to log in (a redirect to the IdP or to a unigate page).
    Login,
    /// An API client without a session: 401.
    Unauthenticated,
    /// Not in the module's access groups, or refused by a rule: 403.
    Forbidden,
    /// The session store is down: 503.
    Unavailable,
    /// Answered by unigate itself (`/_unigate/…`: callback, logout, health).
    Internal,
    /// Anything else unigate refused (unknown host, bad request).
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Proxied,
        Outcome::UpstreamError,
        Outcome::Login,
        Outcome::Unauthenticated,
        Outcome::Forbidden,
        Outcome::Unavailable,
        Outcome::Internal,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Proxied => "proxied",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Login => "login",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::Unavailable => "unavailable",
            Outcome::Internal => "internal",
            Outcome::Rejected => "rejected",
        }
    }
}

/// Every metric unigate keeps.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub logins_started: IntCounterVec,
    pub logins: IntCounterVec,
    pub logouts: IntCounterVec,
    pub sessions: IntGauge,
    pub refreshes: IntCounterVec,
    pub idp_latency: HistogramVec,
    pub jwks_refreshes: IntCounterVec,
    pub reloads: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("unigate".into()), None).expect("a valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let requests = counter(
            "requests_total",
            "Requests by module (route label) and outcome.",
            &["module", "outcome"],
        );
        let logins_started = counter(
            "logins_started_total",
            "Logins sent to the identity provider.",
            &["module"],
        );
        let logins = counter(
            "logins_total",
            "Logins completed at the callback, by result (succeeded, failed) and reason of failure.",
            &["module", "result", "reason"],
        );
        let logouts = counter(
            "logouts_total",
            "Sessions ended, by kind (rp, backchannel, frontchannel, admin).",
            &["kind"],
        );
        let refreshes = counter(
            "token_refreshes_total",
            "Refresh-token grants, by result (succeeded, failed).",
            &["result"],
        );
        let jwks_refreshes = counter(
            "jwks_refreshes_total",
            "JWKS fetches after discovery (key rotation), by result.",
            &["result"],
        );
        let reloads = counter("config_reloads_total", "Configuration reloads, by result.", &["result"]);
        let sessions = IntGauge::new(
            "sessions",
            "Live sessions in this process (memory store) or cached here (Redis store).",
        )
        .expect("valid metric");
        registry.register(Box::new(sessions.clone())).expect("registered once");
        let idp_latency = HistogramVec::new(
            HistogramOpts::new(
                "idp_request_duration_seconds",
                "Calls to the identity provider (discovery, jwks, token), by call and result.",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["call", "result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(idp_latency.clone()))
            .expect("registered once");
        Metrics {
            registry,
            requests,
            logins_started,
            logins,
            logouts,
            sessions,
            refreshes,
            idp_latency,
            jwks_refreshes,
            reloads,
        }
    }

    /// The request counters of one route, by `Outcome` (index `as usize`).
    pub fn request_counters(&self, module: &str) -> [IntCounter; 8] {
        Outcome::ALL.map(|o| self.requests.with_label_values(&[module, o.as_str()]))
    }

    pub fn idp_call(&self, call: &str, ok: bool, took: Duration) {
        self.idp_latency
            .with_label_values(&[call, if ok { "ok" } else { "error" }])
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_in_the_text_format() {
        let m = Metrics::new();
        let c = m.request_counters("portal");
        c[Outcome::Forbidden as usize].inc();
        m.logouts.with_label_values(&["backchannel"]).inc();
        m.idp_call("token", true, Duration::from_millis(30));
        let text = m.render();
        assert!(
            text.contains(r#"unigate_requests_total{module="portal",outcome="forbidden"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"unigate_logouts_total{kind="backchannel"} 1"#));
        assert!(text.contains(r#"unigate_idp_request_duration_seconds_bucket{call="token",result="ok",le="0.05"} 1"#));
    }
}
