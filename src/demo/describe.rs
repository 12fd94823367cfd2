//! One description of the demo's modules: unigate's configuration. The
//! embedded identity provider's My Modules tiles, Choose an Instance links
//! and its client registration for unigate (callback, logout and login
//! initiation URLs) are derived from it, so that a port other than 8080
//! moves every link.

use url::Url;

use crate::gateway::config::GatewayConfig;
use crate::idp::config::{Client, Instance, Module};
use crate::policy::request::PREFIX;

/// My Modules' modules for unigate's routes: one per module, its
/// instances as Choose an Instance entries.
pub fn idp_modules(gw: &GatewayConfig) -> anyhow::Result<Vec<Module>> {
    let root =
        |host: &str, path: &str| -> anyhow::Result<Url> { Ok(Url::parse(&format!("{}{path}", gw.origin_for(host)))?) };
    let mut out = Vec::new();
    for m in gw.modules.iter().filter(|m| m.instance.is_none()) {
        let Some(host) = m.hosts.first() else { continue };
        let url = root(host, "/")?;
        let login_url = match (m.unified_login, m.login_paths.first()) {
            (false, Some(login)) => root(host, login)?,
            _ => url.clone(),
        };
        let mut instances = Vec::new();
        for i in gw.modules.iter().filter(|r| r.name == m.name) {
            let (Some(inst), Some(h)) = (&i.instance, i.hosts.first()) else {
                continue;
            };
            instances.push(Instance {
                name: inst.name.clone(),
                display_name: inst.display_name.clone(),
                url: root(h, "/")?,
            });
        }
        out.push(Module {
            name: m.name.clone(),
            display_name: m.display_name.clone(),
            url,
            login_url,
            instances,
            unified_login: m.unified_login,
            access_group: m.access_groups.first().cloned().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// `client`'s URLs for unigate as `gw` serves: a callback and a
/// post-logout root on every host with Unified Login, the back channel on
/// loopback, the front channel and login initiation on the first host.
pub fn register(client: &mut Client, gw: &GatewayConfig) -> anyhow::Result<()> {
    let hosts: Vec<&String> = gw
        .modules
        .iter()
        .filter(|m| m.unified_login)
        .flat_map(|m| m.hosts.iter())
        .collect();
    let Some(first) = hosts.first() else {
        anyhow::bail!("no module with Unified Login in unigate's config");
    };
    client.redirect_uris = hosts
        .iter()
        .map(|h| format!("{}{PREFIX}callback", gw.origin_for(h)))
        .collect();
    client.post_logout_redirect_uris = hosts.iter().map(|h| format!("{}/", gw.origin_for(h))).collect();
    let scheme = if gw.tls { "https" } else { "http" };
    let port = gw.public_port.unwrap_or(gw.listen.port());
    client.backchannel_logout_uri = Some(Url::parse(&format!(
        "{scheme}://127.0.0.1:{port}{PREFIX}backchannel-logout"
    ))?);
    client.frontchannel_logout_uri = Some(Url::parse(&format!(
        "{}{PREFIX}frontchannel-logout",
        gw.origin_for(first)
    ))?);
    client.initiate_login_uri = Some(Url::parse(&format!("{}{PREFIX}login", gw.origin_for(first)))?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::idp::config::IdpConfig;

    fn configs() -> (GatewayConfig, IdpConfig) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let gw = GatewayConfig::load(&root.join("unigate.demo.toml")).expect("unigate's demo config");
        let idp = IdpConfig::load(&root.join("idp.demo.toml")).expect("the IdP's demo config");
        (gw, idp)
    }

    /// Each module as one line: what My Modules shows and links to.
    fn urls(ms: &[Module]) -> Vec<String> {
        ms.iter()
            .map(|m| {
                let instances: Vec<String> = m
                    .instances
                    .iter()
                    .map(|i| format!("{}={}", i.display_name, i.url))
                    .collect();
                format!(
                    "{} {} {} unified={} group={} [{}]",
                    m.name,
                    m.url,
                    m.login_url,
                    m.unified_login,
                    m.access_group,
                    instances.join(", ")
                )
            })
            .collect()
    }

    /// `unigate idp --config config/idp.demo.toml` beside `unigate run`
    /// serves what `unigate demo` derives: the two files agree.
    #[test]
    fn the_idp_demo_file_says_what_unigates_demo_config_says() {
        let (gw, idp) = configs();
        assert_eq!(urls(&idp_modules(&gw).unwrap()), urls(&idp.modules));
        let file = idp.clients.iter().find(|c| c.client_id == gw.idp.client_id).unwrap();
        let mut derived = file.clone();
        register(&mut derived, &gw).unwrap();
        assert_eq!(derived.redirect_uris, file.redirect_uris);
        assert_eq!(derived.post_logout_redirect_uris, file.post_logout_redirect_uris);
        assert_eq!(derived.backchannel_logout_uri, file.backchannel_logout_uri);
        assert_eq!(derived.frontchannel_logout_uri, file.frontchannel_logout_uri);
        assert_eq!(derived.initiate_login_uri, file.initiate_login_uri);
    }

    #[test]
    fn another_port_moves_every_link() {
        let (mut gw, mut idp) = configs();
        gw.public_port = Some(18380);
        let modules = idp_modules(&gw).unwrap();
        let client = idp
            .clients
            .iter_mut()
            .find(|c| c.client_id == gw.idp.client_id)
            .unwrap();
        register(client, &gw).unwrap();
        let mut every: Vec<String> = modules
            .iter()
            .flat_map(|m| {
                [m.url.to_string(), m.login_url.to_string()]
                    .into_iter()
                    .chain(m.instances.iter().map(|i| i.url.to_string()))
            })
            .collect();
        every.extend(client.redirect_uris.iter().cloned());
        every.extend(client.post_logout_redirect_uris.iter().cloned());
        every.extend(
            [
                &client.backchannel_logout_uri,
                &client.frontchannel_logout_uri,
                &client.initiate_login_uri,
            ]
            .into_iter()
            .flatten()
            .map(Url::to_string),
        );
        assert!(every.len() > 15, "{every:?}");
        for u in &every {
            assert!(u.contains(":18380/"), "{u}");
        }
    }
}
