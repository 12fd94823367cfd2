//! Values unigate derives with a per-deployment key (HMAC-SHA256): the
//! opaque session handle a module gets instead of the KaseyaOne session id
//! (`sid`), and the token of the logout confirmation form. The key comes
//! from the assertion signing key (`[identity] assertion_key`), which every
//! replica of a deployment shares; without one it is random per process,
//! like the generated assertion key.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// A key known only to unigate's replicas.
pub struct DeploymentKey(hmac::Key);

impl DeploymentKey {
    /// A key for this process alone.
    pub fn random() -> DeploymentKey {
        use rand::RngCore;
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        DeploymentKey(hmac::Key::new(hmac::HMAC_SHA256, &k))
    }

    /// A key derived from a secret every replica holds (the assertion
    /// key's PEM text): HMAC with a fixed label, so that the secret itself
    /// is never used for anything else.
    pub fn derived_from(secret: &[u8]) -> DeploymentKey {
        let outer = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let k = hmac::sign(&outer, b"unigate deployment key v1");
        DeploymentKey(hmac::Key::new(hmac::HMAC_SHA256, k.as_ref()))
    }

    /// HMAC over a purpose and parts, each length-prefixed (no ambiguity
    /// between `("ab", "c")` and `("a", "bc")`).
    fn mac(&self, purpose: &str, parts: &[&[u8]]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        for p in std::iter::once(purpose.as_bytes()).chain(parts.iter().copied()) {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        ctx.sign()
    }

    /// The session handle module `label` gets for KaseyaOne session `sid`:
    /// stable for one login, different for each module, and useless at
    /// unigate's and the IdP's logout endpoints (which take the real `sid`).
    pub fn session_handle(&self, label: &str, sid: &str) -> String {
        B64.encode(self.mac("session-handle", &[label.as_bytes(), sid.as_bytes()]))
    }

    /// The logout confirmation token for the browser holding `nonce`.
    pub fn logout_token(&self, nonce: &str) -> String {
        B64.encode(self.mac("logout-confirm", &[nonce.as_bytes()]))
    }

    /// Whether `token` is the logout token of `nonce` (constant time).
    pub fn logout_token_ok(&self, nonce: &str, token: &str) -> bool {
        let want = self.logout_token(nonce);
        subtle::ConstantTimeEq::ct_eq(want.as_bytes(), token.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_per_module_per_login_and_per_deployment() {
        let k = DeploymentKey::derived_from(b"pem text");
        let same = DeploymentKey::derived_from(b"pem text");
        let other = DeploymentKey::derived_from(b"other pem");
        let h = k.session_handle("portal", "sid-1");
        assert_eq!(h, same.session_handle("portal", "sid-1"), "every replica agrees");
        assert_ne!(h, other.session_handle("portal", "sid-1"));
        assert_ne!(h, k.session_handle("bms/east", "sid-1"));
        assert_ne!(h, k.session_handle("portal", "sid-2"));
        assert_ne!(h, "sid-1");
        assert!(!h.contains("sid-1"));
        assert_eq!(h.len(), 43);
        // Length-prefixed: moving a byte between the parts changes the handle.
        assert_ne!(k.session_handle("ab", "c"), k.session_handle("a", "bc"));
        assert_ne!(
            DeploymentKey::random().session_handle("portal", "s"),
            DeploymentKey::random().session_handle("portal", "s")
        );
    }

    #[test]
    fn logout_tokens_belong_to_their_nonce() {
        let k = DeploymentKey::derived_from(b"x");
        let t = k.logout_token("n1");
        assert!(k.logout_token_ok("n1", &t));
        assert!(!k.logout_token_ok("n2", &t));
        assert!(!k.logout_token_ok("n1", ""));
        assert!(!DeploymentKey::derived_from(b"y").logout_token_ok("n1", &t));
    }
}
