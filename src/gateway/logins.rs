//! Login starts (interim: the server-side transaction store).

use std::net::IpAddr;

use super::Gateway;
use crate::idp::store::{random_token, token_key};
use crate::session::LoginTxn;

/// Entry counts of the server-side state login starts create.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct LoginStateSizes {
    pub rate_counter: u64,
    pub pending: u64,
    pub used: u64,
}

impl Gateway {
    /// A login start from `client` without HTTP, as `start_login` does it.
    #[doc(hidden)]
    pub async fn login_start_from(&self, client: IpAddr, mi: usize, host: &str, return_path: &str) -> Result<(), String> {
        if let Some(w) = self
            .login_starts
            .hit(crate::idp::store::client_key(client), std::time::Instant::now())
        {
            return Err(format!("limited for {w:?}"));
        }
        let t = LoginTxn {
            binding: token_key(&random_token()),
            nonce: random_token(),
            verifier: random_token(),
            return_path: return_path.to_string(),
            module: mi,
            host: host.to_string(),
        };
        self.put_txn(random_token(), t).await.map_err(|e| e.to_string())
    }

    #[doc(hidden)]
    pub fn login_state_sizes(&self) -> LoginStateSizes {
        LoginStateSizes {
            rate_counter: self.login_starts.entry_count(),
            pending: self.txns.entry_count(),
            used: 0,
        }
    }
}
