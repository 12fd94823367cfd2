//! Telling clients that an IdP session ended: OIDC Back-Channel Logout 1.0
//! tokens POSTed to each client that got a code under the session (retried a
//! few times, every failure logged), and the Front-Channel Logout 1.0 iframe
//! URLs for clients that registered one.

use std::sync::Arc;
use std::time::SystemTime;

use super::Provider;
use super::oauth::{LOGOUT_RETRY_DELAYS, with_params};
use super::store::IdpSession;

/// What the logout page must do in the browser.
pub struct LogoutOutcome {
    /// Front-channel logout URLs (with `iss` and `sid`) to load in iframes.
    pub frontchannel: Vec<String>,
    /// Back-channel deliveries under way, for callers that wait.
    pub deliveries: Vec<tokio::task::JoinHandle<bool>>,
}

impl Provider {
    /// Ends the session stored under `session_key` and notifies its clients.
    pub fn logout(self: &Arc<Self>, session_key: &str, now: SystemTime) -> Option<LogoutOutcome> {
        let session = self.stores.end_session(session_key)?;
        tracing::info!(user.sub = %self.dir.sub(session.user), "IdP session ended");
        Some(self.notify_clients(&session, now))
    }

    /// Ends every IdP session of `user` (password reset) and voids the
    /// user's other reset links. Returns how many sessions ended.
    pub fn end_user_sessions(self: &Arc<Self>, user: super::directory::UserId, now: SystemTime) -> usize {
        let keys: Vec<String> = self
            .stores
            .sessions
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(k, _)| (*k).clone())
            .collect();
        let ended = keys.iter().filter(|k| self.logout(k, now).is_some()).count();
        let links: Vec<String> = self
            .stores
            .reset_links
            .iter()
            .filter(|(_, u)| *u == user)
            .map(|(k, _)| (*k).clone())
            .collect();
        for k in links {
            self.stores.reset_links.invalidate(&k);
        }
        ended
    }

    fn notify_clients(self: &Arc<Self>, session: &IdpSession, now: SystemTime) -> LogoutOutcome {
        let clients: Vec<String> = session
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut out = LogoutOutcome {
            frontchannel: Vec::new(),
            deliveries: Vec::new(),
        };
        for client_id in clients {
            let Some(client) = self.dir.client(&client_id) else {
                continue;
            };
            if let Some(uri) = &client.frontchannel_logout_uri {
                out.frontchannel.push(with_params(
                    uri.as_str(),
                    &[("iss", &self.issuer), ("sid", &session.sid)],
                ));
            }
            let Some(uri) = client.backchannel_logout_uri.clone() else {
                continue;
            };
            let token = match self.logout_token(client, session.user, &session.sid, now) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(client.id = %client_id, error = %e, "cannot sign logout token");
                    continue;
                }
            };
            let http = self.http.clone();
            out.deliveries.push(tokio::spawn(
                async move { deliver(&http, uri, &client_id, token).await },
            ));
        }
        out
    }
}

/// POSTs a logout token, retrying on failure; true when the client took it.
async fn deliver(http: &reqwest::Client, uri: url::Url, client_id: &str, token: String) -> bool {
    let attempts = LOGOUT_RETRY_DELAYS.len() + 1;
    for attempt in 1..=attempts {
        let result = http
            .post(uri.clone())
            .form(&[("logout_token", token.as_str())])
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => {
                tracing::info!(client.id = %client_id, attempt, "back-channel logout delivered");
                return true;
            }
            Ok(r) => {
                tracing::warn!(client.id = %client_id, attempt, status = r.status().as_u16(), "back-channel logout refused")
            }
            Err(e) => tracing::warn!(client.id = %client_id, attempt, error = %e, "back-channel logout failed"),
        }
        if let Some(delay) = LOGOUT_RETRY_DELAYS.get(attempt - 1) {
            tokio::time::sleep(*delay).await;
        }
    }
    tracing::error!(client.id = %client_id, attempts, "back-channel logout not delivered; giving up");
    false
}
