//! Telling clients that an IdP session ended: OIDC Back-Channel Logout 1.0
//! tokens POSTed to each client that got a code under the session (retried a
//! few times, every failure logged), and the Front-Channel Logout 1.0 iframe
//! URLs for clients that registered one. Also what ends when a user leaves
//! the directory (taken out of the users file).

use std::time::SystemTime;

use super::Provider;
use super::directory::UserId;
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
    pub fn logout(&self, session_key: &str, now: SystemTime) -> Option<LogoutOutcome> {
        let session = self.stores.end_session(session_key)?;
        tracing::info!(user.sub = %self.dir.sub(session.user), "IdP session ended");
        Some(self.notify_clients(&session, now))
    }

    /// Ends every IdP session of `user` (password reset) and voids the
    /// user's other reset links. Returns how many sessions ended.
    pub fn end_user_sessions(&self, user: UserId, now: SystemTime) -> usize {
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

    /// Ends what users taken out of the directory since the last look still
    /// hold: every IdP session (their clients are told, as at logout) and
    /// every grant, so their refresh and access tokens stop working too,
    /// even if the same user is added again. Runs on every use of a session
    /// or token, and every few seconds while the provider runs.
    pub fn sync_directory(&self, now: SystemTime) {
        for user in self.dir.take_removed() {
            let ended = self.end_user_sessions(user, now);
            let grants: Vec<_> = self
                .stores
                .grants
                .iter()
                .filter(|(_, g)| g.user == user && !g.is_revoked())
                .map(|(_, g)| g)
                .collect();
            for g in &grants {
                g.revoke();
            }
            tracing::info!(
                user.sub = %self.dir.sub(user),
                sessions.ended = ended,
                grants.revoked = grants.len(),
                "user no longer in the directory; what they held has ended"
            );
        }
    }

    /// Whether `user` is still in the directory, after ending what removed
    /// users held (`sync_directory`).
    pub fn user_active(&self, user: UserId, now: SystemTime) -> bool {
        self.sync_directory(now);
        self.dir.is_active(user)
    }

    fn notify_clients(&self, session: &IdpSession, now: SystemTime) -> LogoutOutcome {
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
