//! Shared cryptographic helpers: random tokens, the PKCE transform, and
//! signing keys. Nothing here knows about the gateway or the IdP.

pub mod keys;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 256 random bits, base64url.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    B64.encode(b)
}

/// The RFC 7636 S256 transform.
pub fn pkce_s256(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}
