//! The I/O half of loading: reads what a validated file names (secrets
//! from the environment or files, the assertion key, the TLS listener's
//! certificate and key, upstream CAs, account files), checks each as a
//! start would use it, and reports every problem at once. The CPU count
//! (the default of `[listen] threads`) is asked here too.

use std::path::Path;
use std::sync::Arc;

use super::validate::{AccountsReads, ClusterNode, Reads, SourceReads, Validated, check_threads, cluster_node_problem};
use super::{AccountSource, AccountsConfig, GatewayConfig};
use crate::config::ConfigErrors;
use crate::config::tls::{CertFiles, UpstreamCa, load_certified_key};
use crate::secret::{Secret, SecretRef};

/// Whether two Redis URLs (both valid) log in alike: the same user,
/// password and TLS setting.
fn same_access(a: &Secret, b: &Secret) -> bool {
    use ::redis::IntoConnectionInfo;
    let access = |s: &Secret| {
        s.expose().into_connection_info().ok().map(|i| {
            let r = i.redis_settings();
            (
                r.username().map(str::to_string),
                r.password().map(str::to_string),
                matches!(i.addr(), ::redis::ConnectionAddr::TcpTls { .. }),
            )
        })
    };
    access(a) == access(b)
}

/// Reads everything `validated` names, relative paths from `base` (the
/// config file's folder): the configuration the proxy runs on, or every
/// problem found.
pub fn resolve(validated: Validated, base: &Path) -> Result<GatewayConfig, ConfigErrors> {
    let Validated { mut config, reads } = validated;
    let mut errs = ConfigErrors::default();
    let Reads {
        client_secret,
        redis,
        assertion_key,
        admin_token,
        tls,
        count_cpus,
        modules,
    } = reads;

    if let Some(s) = read(&client_secret, "identity_provider.client_secret", base, &mut errs) {
        config.idp.client_secret = s;
    }
    if let Some(r) = redis {
        let url = r
            .url
            .as_ref()
            .and_then(|u| read(u, "session.redis_url", base, &mut errs));
        if let Some(u) = &url
            && let Err(e) = ::redis::Client::open(u.expose())
        {
            errs.push("session.redis_url", format!("not a Redis URL ({e})"));
        }
        let key = r
            .encryption_key
            .as_ref()
            .and_then(|k| read(k, "session.encryption_key", base, &mut errs));
        if let Some(k) = &key
            && k.expose().len() < 32
        {
            errs.push("session.encryption_key", "use at least 32 random characters");
        }
        let mut cluster = Vec::new();
        for (n, node) in &r.cluster {
            let url = match node {
                ClusterNode::Url(u) => Some(Secret::new(u.clone())),
                ClusterNode::Secret(s) => read(s, "session.redis_cluster", base, &mut errs),
            };
            let Some(url) = url else { continue };
            if let Some(problem) = cluster_node_problem(url.expose()) {
                errs.push("session.redis_cluster", format!("entry {n}: {problem}"));
                continue;
            }
            if let Some(first) = cluster.first()
                && !same_access(first, &url)
            {
                errs.push(
                    "session.redis_cluster",
                    format!(
                        "entry {n}: every node is reached with the first usable entry's user, password and TLS setting"
                    ),
                );
            }
            cluster.push(url);
        }
        let tls_ca = r.tls_ca.as_ref().and_then(|p| {
            let path = base.join(p);
            let read = crate::config::tls::certificates(&path)
                .and_then(|_| std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display())));
            read.map_err(|e| errs.push("session.redis_tls_ca", e)).ok()
        });
        let plain = url
            .iter()
            .chain(&cluster)
            .any(|u| !u.expose().trim_start().starts_with("rediss://"));
        if r.tls_ca.is_some() && plain {
            errs.push(
                "session.redis_tls_ca",
                "a CA for Redis's certificates needs TLS: write the Redis URLs as `rediss://`",
            );
        }
        match (config.session.redis.as_mut(), key) {
            (Some(settings), Some(key)) => {
                settings.url = url;
                settings.cluster = cluster;
                settings.encryption_key = key;
                settings.tls_ca = tls_ca;
            }
            _ => config.session.redis = None,
        }
    }
    config.identity.assertion_key = assertion_key.and_then(|r| {
        let pem = read(&r, "identity.assertion_key", base, &mut errs)?;
        // The key must be usable, as a start would find.
        match crate::crypto::keys::SigningKey::from_pem(&pem, jsonwebtoken::Algorithm::ES256) {
            Ok(_) => Some(pem),
            Err(e) => {
                errs.push(
                    "identity.assertion_key",
                    format!("not a PKCS#8 PEM P-256 private key ({e})"),
                );
                None
            }
        }
    });
    for m in modules {
        let routes = &mut config.modules[m.routes.clone()];
        if let Some(a) = m.accounts
            && let Some(accounts) = accounts(a, &format!("{}.accounts", m.key), base, &mut errs)
        {
            let accounts = Arc::new(accounts);
            for r in routes.iter_mut() {
                r.accounts = Some(accounts.clone());
            }
        }
        if let Some(p) = &m.upstream_ca {
            match UpstreamCa::load(&base.join(p)) {
                Ok(ca) => {
                    for t in routes.iter_mut().filter_map(|r| r.upstream_tls.as_mut()) {
                        t.ca = Some(ca.clone());
                    }
                }
                Err(e) => errs.push(format!("{}.upstream_ca", m.key), e),
            }
        }
        if let Some(r) = routes.first()
            && r.upstream_tls.as_ref().is_some_and(|t| !t.verify)
        {
            tracing::warn!(module.name = %r.name, "upstream_verify = false: the module's certificate is not checked");
        }
    }
    if count_cpus {
        config.threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        check_threads(config.threads, &mut errs);
    }
    let admin_token = admin_token.and_then(|r| read(&r, "admin.token", base, &mut errs));
    if let Some(t) = &admin_token
        && t.expose().len() < 16
    {
        errs.push("admin.token", "use at least 16 characters");
    }
    match (config.admin.as_mut(), admin_token) {
        (Some(admin), Some(token)) => admin.token = token,
        _ => config.admin = None,
    }
    if let Some((cert, key)) = tls {
        let files = CertFiles {
            cert: base.join(cert),
            key: base.join(key),
        };
        match load_certified_key(&files) {
            Ok(_) => config.tls_files = Some(files),
            Err(e) => errs.push("listen.tls_cert", e),
        }
    }
    errs.into_result(config)
}

/// `[module.accounts]` with its token or account file read.
fn accounts(a: AccountsReads, key: &str, base: &Path, errs: &mut ConfigErrors) -> Option<AccountsConfig> {
    let source = match a.source {
        SourceReads::Scim { url, token } => AccountSource::Scim {
            url,
            token: token.and_then(|t| read(&t, &format!("{key}.token"), base, errs)),
        },
        SourceReads::File(f) => match crate::accounts::load_file(&base.join(f)) {
            Ok(list) => AccountSource::File(Arc::new(list)),
            Err(e) => {
                errs.push(format!("{key}.file"), e);
                return None;
            }
        },
    };
    Some(AccountsConfig {
        source,
        match_on: a.match_on,
        cache_ttl: a.cache_ttl,
        provisioning: a.provisioning,
        default_role: a.default_role,
    })
}

/// A secret, read; a problem is reported at `key`.
fn read(r: &SecretRef, key: &str, base: &Path, errs: &mut ConfigErrors) -> Option<Secret> {
    r.load(base).map_err(|e| errs.push(key, e)).ok()
}
