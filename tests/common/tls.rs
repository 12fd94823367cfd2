//! TLS for tests, made in the test (rcgen): a CA and leaf certificates it
//! signs, and the configuration the TLS tests' unigate starts from.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use toml::Table;

use super::{TomlEdit, gateway_table};

pub fn test_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "unigate test CA");
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

pub fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    edit(&mut p);
    let key = KeyPair::generate().unwrap();
    let c = p.signed_by(&key, ca).unwrap();
    Leaf {
        cert_pem: c.pem(),
        key_pem: key.serialize_pem(),
        der: c.der().to_vec(),
    }
}

/// An issuer where nothing listens, for a unigate that is only checked or
/// sees no login.
pub const NOWHERE: &str = "http://127.0.0.1:9";

/// `gateway_table` for the TLS tests: `public_url` with `scheme`, the IdP
/// at `issuer`, no API audience.
pub fn tls_test_config(port: u16, scheme: &str, issuer: &str) -> Table {
    let mut t = gateway_table(port, issuer);
    t.table("listen")
        .set("public_url", format!("{scheme}://localhost:{port}"));
    t.table("identity_provider").remove("api_audience");
    t
}
