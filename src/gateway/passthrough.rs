//! A plain Pingora pass-through with no authentication: the baseline the
//! load comparison measures unigate against (same runtime settings, same
//! upstream). Not for production.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::{RunArgs, Server};

pub struct PassThrough {
    pub upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// Runs until SIGINT/SIGTERM, in this thread.
pub fn run(listen: SocketAddr, upstream: SocketAddr, threads: usize, work_stealing: bool) {
    let mut server = Server::new_with_opt_and_conf(None, super::server::server_conf(threads, work_stealing));
    server.bootstrap();
    let mut svc = pingora::proxy::http_proxy_service(&server.configuration, PassThrough { upstream });
    svc.add_tcp(&listen.to_string());
    server.add_service(svc);
    server.run(RunArgs::default());
}
