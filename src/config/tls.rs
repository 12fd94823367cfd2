//! TLS material the configuration names: the listener's certificate and
//! key (loaded and checked at `unigate check` time), and the certificate
//! authorities a module's TLS upstream is verified against.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::tls::sign::CertifiedKey;
use pingora::utils::tls::{WrappedX509, parse_x509};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate chain and key files of the TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls needs one process-wide crypto provider: ring, as Pingora's.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A PEM file's certificates, each checked to parse (x509) and to be in
/// its validity period now.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", path.display()));
    }
    for (i, c) in certs.iter().enumerate() {
        let (_, x) = x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|e| format!("certificate {} in `{}` does not parse: {e}", i + 1, path.display()))?;
        if !x.validity().is_valid() {
            return Err(format!(
                "certificate {} in `{}` ({}) is not valid now: valid from {} to {}",
                i + 1,
                path.display(),
                x.subject(),
                x.validity().not_before,
                x.validity().not_after
            ));
        }
    }
    Ok(certs)
}

/// Loads and checks a certificate chain and its key: both parse, the
/// certificates are valid now, and the key belongs to the first one.
pub fn load_certified_key(files: &CertFiles) -> Result<CertifiedKey, String> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("`{}` holds no usable PEM private key: {e}", files.key.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        format!(
            "the key `{}` does not belong to the certificate `{}` ({e})",
            files.key.display(),
            files.cert.display()
        )
    })
}

/// The certificate authorities a module's TLS upstream must chain to.
#[derive(Clone)]
pub struct UpstreamCa {
    pub certs: Arc<[WrappedX509]>,
    /// Connections verified against different CAs are never pooled together.
    pub group_key: u64,
}

impl std::fmt::Debug for UpstreamCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamCa({} certificates)", self.certs.len())
    }
}

impl UpstreamCa {
    pub fn load(path: &Path) -> Result<UpstreamCa, String> {
        let ders = certificates(path)?;
        let mut roots = rustls::RootCertStore::empty();
        for d in &ders {
            roots
                .add(d.clone())
                .map_err(|e| format!("`{}` holds a certificate that cannot be a root: {e}", path.display()))?;
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for d in &ders {
            d.as_ref().hash(&mut h);
        }
        let certs: Vec<WrappedX509> = ders
            .iter()
            .map(|d| WrappedX509::new(d.as_ref().to_vec(), parse_x509))
            .collect();
        Ok(UpstreamCa {
            certs: certs.into(),
            group_key: h.finish(),
        })
    }
}

/// How unigate connects to a module's upstreams over TLS.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The name sent (SNI) and verified.
    pub sni: String,
    /// `None`: the system's trusted roots.
    pub ca: Option<UpstreamCa>,
    /// Off only when the configuration says so, loudly.
    pub verify: bool,
}
