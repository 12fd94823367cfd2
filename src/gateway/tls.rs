//! TLS with rustls: the listener's certificate, loaded from PEM files,
//! checked at `unigate check` time and reloaded while running when the
//! files change (cert-manager rotates them); and the certificate
//! authorities a module's TLS upstream is verified against.

use std::sync::Arc;
use std::time::Duration;

use pingora::tls::sign::CertifiedKey;

pub use crate::config::tls::{CertFiles, UpstreamCa, UpstreamTls, load_certified_key};

/// The listener's certificate, swapped in place when its files change:
/// new connections get the new one, open ones keep theirs.
pub struct ReloadingCert {
    files: CertFiles,
    current: arc_swap::ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert").field("files", &self.files).finish()
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ReloadingCert {
    pub fn load(files: CertFiles) -> Result<Arc<ReloadingCert>, String> {
        let ck = load_certified_key(&files)?;
        Ok(Arc::new(ReloadingCert {
            files,
            current: arc_swap::ArcSwap::from_pointee(ck),
        }))
    }

    /// Watches the files (every second: Kubernetes swaps secret volumes by
    /// symlink, which file events miss) for as long as the certificate is
    /// in use. A pair that does not load (half-written, mismatched) is
    /// logged and the running certificate stays.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let read = |f: &CertFiles| (std::fs::read(&f.cert).ok(), std::fs::read(&f.key).ok());
        let mut last = read(&self.files);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(me) = weak.upgrade() else { return };
                let now = read(&me.files);
                if now == last {
                    continue;
                }
                match load_certified_key(&me.files) {
                    Ok(ck) => {
                        me.current.store(Arc::new(ck));
                        last = now;
                        tracing::info!(cert = %me.files.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; the running one stays"),
                }
            }
        });
    }
}

pub use crate::config::tls::install_crypto_provider;
