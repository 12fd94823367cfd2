//! `unigate demo`: the whole demo on loopback — the embedded identity
//! provider, a demo module at each upstream of unigate's config, and
//! unigate in front of them — until Ctrl-C or SIGTERM.

pub mod describe;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::cli::{load_gateway, load_idp, wait_for_stop};
use crate::demo_module::{DemoModuleConfig, DemoModuleServer};
use crate::gateway::server::GatewayServer;
use crate::idp::IdpServer;

/// `unigate demo`'s options (its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The identity provider's config file.
    #[arg(long, default_value = "config/idp.demo.toml")]
    pub idp_config: PathBuf,
    /// unigate's config file.
    #[arg(long, default_value = "config/unigate.demo.toml")]
    pub config: PathBuf,
    /// Port of the identity provider.
    #[arg(long, default_value_t = 9000)]
    pub idp_port: u16,
    /// Port of unigate.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Port of the demo module.
    #[arg(long, default_value_t = 8081)]
    pub module_port: u16,
    /// unigate worker threads (default: the config's, else the number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Keep sessions in this Redis (`redis://127.0.0.1:6379/0`) instead
    /// of in memory, with a random encryption key for this run.
    #[arg(long)]
    pub redis_url: Option<String>,
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let Options {
        idp_config,
        config,
        idp_port,
        port,
        module_port,
        threads,
        redis_url,
    } = opts;
    let mut idp = load_idp(&idp_config)?;
    let mut gw = load_gateway(&config)?;
    if let Some(url) = redis_url {
        gw.session.redis = Some(crate::gateway::config::RedisSettings {
            url: Some(crate::secret::Secret::new(url)),
            sentinels: Vec::new(),
            sentinel_master: None,
            cluster: Vec::new(),
            wait_replicas: None,
            tls_ca: None,
            encryption_key: crate::secret::Secret::new(crate::idp::store::random_token()),
            prefix: format!("unigate-demo-{port}"),
            local_cache: std::time::Duration::from_secs(30),
        });
    }
    if let Some(t) = threads {
        gw.threads = t;
    }
    idp.listen.set_port(idp_port);
    idp.issuer = None;
    gw.listen.set_port(port);
    gw.public_port = Some(port);
    // One description of the modules: the IdP's tiles, instance links and
    // its registration of unigate follow unigate's config and port.
    idp.modules = describe::idp_modules(&gw)?;
    let Some(client) = idp.clients.iter_mut().find(|c| c.client_id == gw.idp.client_id) else {
        anyhow::bail!("{} registers no client `{}`", idp_config.display(), gw.idp.client_id);
    };
    describe::register(client, &gw)?;
    gw.idp.issuer = format!("http://127.0.0.1:{idp_port}");
    gw.idp.post_logout_redirect_uri = gw
        .idp
        .post_logout_redirect_uri
        .map(|u| u.replace(":8080/", &format!(":{port}/")));
    // Each upstream of the demo config gets a demo module; `--module-port`
    // moves them all (the file's first is 8081).
    let shift = i32::from(module_port) - 8081;
    let mut to_start: Vec<(SocketAddr, String, String)> = Vec::new();
    for m in &mut gw.modules {
        let title = match &m.instance {
            Some(i) => format!("{} · {}", m.display_name, i.display_name),
            None => m.display_name.clone(),
        };
        let label = m.label().to_string();
        for u in &mut m.upstreams {
            let p = i32::from(u.port()) + shift;
            let p = u16::try_from(p)
                .map_err(|_| anyhow::anyhow!("--module-port {module_port} moves a module port out of range"))?;
            u.set_port(p);
            to_start.push((*u, label.clone(), title.clone()));
        }
    }
    let hosts: Vec<(String, String)> = gw
        .modules
        .iter()
        .filter_map(|m| m.hosts.first().map(|h| (m.label().to_string(), h.clone())))
        .collect();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let idp_server = IdpServer::start(idp).await?;
        let mut modules: Vec<(String, DemoModuleServer)> = Vec::new();
        for (addr, label, title) in to_start {
            // Several upstreams of one instance: replicas sharing one state.
            let server = match modules.iter().find(|(l, _)| *l == label) {
                Some((_, first)) => first.replica(addr).await,
                None => {
                    DemoModuleServer::start(DemoModuleConfig {
                        listen: addr,
                        accounts: crate::demo_module::demo_accounts(&label),
                        name: label.clone(),
                        title,
                        jwks_url: format!("http://127.0.0.1:{port}/_unigate/jwks.json"),
                        scim_token: None,
                    })
                    .await
                }
            }
            .map_err(|e| anyhow::anyhow!("demo module on {addr}: {e}"))?;
            modules.push((label, server));
        }
        let gateway = GatewayServer::start(gw).await?;
        println!("unigate demo: everything on loopback, Ctrl-C stops it");
        for (label, host) in &hosts {
            println!("  {label:<10}  http://{host}:{port}/");
        }
        println!(
            "  KaseyaOne   {}/   (the embedded identity provider: My Modules)",
            idp_server.issuer()
        );
        println!("  log in as   alice / Acme MSP / alice-demo-pass   (bob, carol, dave: see README)");
        println!("  code        unigate idp totp --user alice --company \"Acme MSP\"");
        println!("  module credentials: localuser / local-demo-pass on every module");
        wait_for_stop().await;
        tracing::info!("stopping");
        gateway.shutdown().await;
        for (_, m) in modules {
            m.stop();
        }
        idp_server.shutdown().await;
        anyhow::Ok(())
    })
}
