//! A bare Pingora pass-through built with Pingora's defaults (the system
//! allocator, work stealing on, one worker thread; only its shutdown made
//! immediate): the baseline a proxy
//! built on Pingora is measured against (`unigate loadtest auth-path
//! --bare-pingora`). No authentication; not for production.
//!
//! `bare_pingora LISTEN UPSTREAM`, e.g. `bare_pingora 127.0.0.1:6190 127.0.0.1:8081`.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_pingora LISTEN UPSTREAM (e.g. 127.0.0.1:6190 127.0.0.1:8081)");
        std::process::exit(2);
    };
    let upstream: SocketAddr = match upstream.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("UPSTREAM `{upstream}`: {e}");
            std::process::exit(2);
        }
    };
    // Pingora's default configuration, but for stopping at once on
    // SIGTERM (no grace period): nothing measured depends on it.
    let mut conf = ServerConf::new().expect("Pingora's default configuration");
    conf.grace_period_seconds = Some(0);
    conf.graceful_shutdown_timeout_seconds = Some(0);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    svc.add_tcp(&listen);
    server.add_service(svc);
    server.run_forever();
}
