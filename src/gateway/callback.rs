//! The OpenID Connect callback: the authorization response checked before
//! anything is redeemed (`oidc::callback`), the login transaction of this
//! browser taken once, the code exchanged, the ID token and the user's
//! claims checked, the access groups and the module account checked, and
//! a new session. Every failure is counted by reason. A failed login is
//! shown at a stable address, `/_unigate/error` (its reason in a
//! short-lived cookie of this browser), so that a reload shows the same
//! reason rather than "this login has expired".

use std::sync::Arc;
use std::time::SystemTime;

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::config::RouteId;
use super::cookies::Own;
use super::reject::{LoginFailure, Reject, Reply};
use super::{Gateway, PREFIX, down, unix_now};
use crate::crypto::random_token;
use crate::oidc::callback::{Answer, Refused, read};
use crate::oidc::return_url::safe_return_path;
use crate::session::{IdToken, Identity, Tokens};

/// Answers `/_unigate/callback` on route `id`'s `host`.
pub async fn callback(g: &Gateway, session: &mut PSession, id: RouteId, host: &str) -> Result<bool> {
    match finish(g, session, id, host).await {
        Ok(reply) => reply.write(session).await,
        Err(r) => {
            g.login_failed(id, r.metric_reason());
            let Some(failed) = Failed::of(&r) else {
                return g.reject(session, Some(id), r).await;
            };
            tracing::info!(module.name = %g.route(id).label(), reason = r.metric_reason(), "login failed");
            let Some(sealed) = failed.seal(g) else {
                return g.reject(session, Some(id), r).await;
            };
            let cookie = Own::Error.set_cookie(g.cfg().tls, &sealed, Some(ERROR_SECS));
            let mut reply = Reply::redirect(format!("{PREFIX}error")).with_cookies([cookie]);
            reply.status = 303;
            reply.write(session).await
        }
    }
}

/// How long a failed login's reason is kept for its page.
const ERROR_SECS: u64 = 600;

/// `/_unigate/error`: why this browser's last login failed (the same page,
/// reload after reload), or, without one, a way to log in.
pub async fn error_page(g: &Gateway, session: &mut PSession, id: RouteId) -> Result<bool> {
    let name = Own::Error.name(g.cfg().tls);
    let r = super::request::cookie(session.req_header(), name)
        .and_then(|v| Failed::open(g, v))
        .and_then(Failed::refusal)
        .unwrap_or(Reject::Login(LoginFailure::Expired {
            retry: format!("{PREFIX}login"),
        }));
    g.reject(session, Some(id), r).await
}

/// A failed login as its error cookie keeps it: the reason, the identity
/// provider's error code and description, and where the login was going.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Failed {
    #[serde(rename = "r")]
    reason: String,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    return_to: Option<String>,
}

impl Failed {
    /// The failures shown at the stable address: a login's own, and a
    /// user outside the access groups. (The store or the module's accounts
    /// being down are shown where they happen: a retry is the way out.)
    fn of(r: &Reject) -> Option<Failed> {
        let (reason, error, description, retry) = match r {
            Reject::Forbidden { account } => ("forbidden", None, account.clone(), None),
            Reject::Login(f) => {
                let reason = match f {
                    LoginFailure::Provider { .. } => "idp_error",
                    other => other.code(),
                };
                let (error, description) = match f {
                    LoginFailure::Provider { error, description, .. } => (Some(error.clone()), description.clone()),
                    _ => (None, None),
                };
                (reason, error, description, f.retry())
            }
            _ => return None,
        };
        let return_to = retry
            .and_then(|r| r.split_once('?'))
            .and_then(|(_, q)| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "return_to"))
            .map(|(_, v)| v.into_owned());
        Some(Failed {
            reason: reason.to_string(),
            error: error.map(|e| clean(&e, 64)),
            description: description.map(|d| clean(&d, 300)),
            return_to,
        })
    }

    /// Sealed for this browser's error cookie (see `LoginTxns::seal_note`).
    fn seal(&self, g: &Gateway) -> Option<String> {
        g.state
            .logins
            .seal_note(self.encode().as_bytes(), unix_now() + ERROR_SECS)
    }

    fn open(g: &Gateway, value: &str) -> Option<Failed> {
        let plain = g.state.logins.open_note(value, unix_now(), ERROR_SECS)?;
        Failed::decode(std::str::from_utf8(&plain).ok()?)
    }

    fn encode(&self) -> String {
        use base64::Engine;
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(value: &str) -> Option<Failed> {
        use base64::Engine;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// The refusal again, with a retry that returns where the login was
    /// going (if that stays on this origin).
    fn refusal(self) -> Option<Reject> {
        let retry = match self.return_to.as_deref().and_then(safe_return_path) {
            Some(p) => format!(
                "{PREFIX}login?return_to={}",
                form_urlencoded::byte_serialize(p.as_bytes()).collect::<String>()
            ),
            None => format!("{PREFIX}login"),
        };
        let failure = match self.reason.as_str() {
            // (`description` holds the account for this one.)
            "forbidden" => {
                return Some(Reject::Forbidden {
                    account: self.description.map(|d| clean(&d, 300)),
                });
            }
            "wrong_issuer" => LoginFailure::WrongIssuer,
            "invalid_callback" => LoginFailure::BadCallback,
            "login_expired" => LoginFailure::Expired { retry },
            "idp_error" => LoginFailure::Provider {
                error: clean(self.error.as_deref().unwrap_or("error"), 64),
                description: self.description.map(|d| clean(&d, 300)),
                retry,
            },
            "exchange_failed" => LoginFailure::Exchange { retry },
            "no_id_token" => LoginFailure::NoIdToken { retry },
            "invalid_id_token" => LoginFailure::IdToken { retry },
            "userinfo_failed" => LoginFailure::Userinfo { retry },
            "session_ended" => LoginFailure::Ended { retry },
            _ => return None,
        };
        Some(Reject::Login(failure))
    }
}

/// At most `max` characters, without control characters.
fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

async fn finish(g: &Gateway, session: &PSession, id: RouteId, host: &str) -> std::result::Result<Reply, Reject> {
    let oidc = &g.state.oidc;
    let route = g.route(id);
    let req = session.req_header();
    // Before anything is looked up or redeemed: the response must be one
    // the code flow can give, from the provider this login used.
    let iss_required = oidc
        .loaded()
        .is_some_and(|l| l.discovery.authorization_response_iss_parameter_supported);
    let response = read(req.uri.query().unwrap_or_default(), &oidc.issuer(), iss_required).map_err(|refused| {
        tracing::warn!(module.name = %route.label(), reason = %refused, "callback refused before the token request");
        Reject::Login(match refused {
            Refused::WrongIssuer | Refused::IssuerMissing => LoginFailure::WrongIssuer,
            Refused::Repeated(_) | Refused::Unexpected(_) => LoginFailure::BadCallback,
        })
    })?;
    let expired = |retry: &str| {
        Reject::Login(LoginFailure::Expired {
            retry: retry.to_string(),
        })
    };
    let (txn, spent) = g
        .finish_login(req, &response.state, unix_now())
        .await
        .map_err(down)?
        .ok_or_else(|| expired(&format!("{PREFIX}login")))?;
    let retry = format!(
        "{PREFIX}login?return_to={}",
        form_urlencoded::byte_serialize(txn.return_path.as_bytes()).collect::<String>()
    );
    if txn.route != route.label() || txn.host != host {
        tracing::warn!("callback from a browser or host that did not start this login");
        return Err(expired(&retry));
    }
    let code = match response.answer {
        Answer::Code(code) => code,
        Answer::Error { error, description } => {
            tracing::info!(module.name = %route.name, error = %error, "identity provider returned an error");
            return Err(Reject::Login(LoginFailure::Provider {
                error,
                description,
                retry,
            }));
        }
        Answer::Nothing => return Err(expired(&retry)),
    };
    let redirect_uri = format!("{}{PREFIX}callback", g.cfg().origin_for(host));
    let tokens = oidc.exchange(&code, &txn.verifier, &redirect_uri).await.map_err(|e| {
        tracing::warn!(error = %e, "code exchange failed");
        Reject::Login(LoginFailure::Exchange { retry: retry.clone() })
    })?;
    let Some(id_token) = tokens.id_token.clone() else {
        return Err(Reject::Login(LoginFailure::NoIdToken { retry }));
    };
    let issued_with = crate::oidc::client::IssuedWith {
        nonce: Some(&txn.nonce),
        access_token: Some(&tokens.access_token),
        code: Some(&code),
        // What the login asked for (a step-up's, or the route's own).
        max_age: txn.max_age.or(route.max_age.map(|a| a.as_secs())),
    };
    let claims = oidc
        .validate_id_token(&id_token, &issued_with, SystemTime::now())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "ID token rejected");
            Reject::Login(LoginFailure::IdToken { retry: retry.clone() })
        })?;
    // Logouts and revocations so far: one that comes while the login
    // finishes (UserInfo, the account look-up) ends it.
    let early = super::bearer::session_marks(&claims.sub, claims.sid.as_deref());
    let before = g.revoked_at(&early).await.map_err(down)?;
    let profile = oidc.profile(&claims, &tokens.access_token).await.map_err(|e| {
        tracing::warn!(module.name = %route.label(), user.sub = %claims.sub, error = %e, "the user's claims could not be read");
        Reject::Login(LoginFailure::Userinfo { retry: retry.clone() })
    })?;
    let mut identity = Identity::from_profile(&claims.sub, claims.sid.as_deref(), profile);
    // Members of a rule's groups that replace the module's log in too;
    // each request then meets its rule (or the module's groups).
    if !route.admits_somewhere(&identity.groups) {
        tracing::info!(module.name = %route.label(), user.sub = %claims.sub, decision = "deny", "access group check at login");
        return Err(Reject::Forbidden {
            account: identity.account(),
        });
    }
    // The seed's account conditions: a linked account, or a module account
    // whose email and/or username match (created when provisioning is on).
    let link_pending = g.module_account(id, &mut identity).await? == super::Account::LinkPending;
    let access_exp = unix_now() + tokens.expires_in.unwrap_or(300);
    // A new id at every login; an old session in this browser ends.
    if let Some(old) = g.session_id(session.req_header()) {
        g.end_session(old).await.map_err(down)?;
    }
    let sid = random_token();
    let tokens = Tokens {
        generation: 0,
        id_token: Some(IdToken::new(&id_token)),
        refresh_token: tokens.refresh_token.map(Into::into),
        access_exp,
    };
    let marks = super::bearer::marks_of(&identity);
    let new = g.new_session(id, identity, tokens).with_link_pending(link_pending);
    g.put_session(&sid, Arc::new(new)).await.map_err(down)?;
    // A logout that ran while this login was finishing (the code exchange,
    // UserInfo, the account look-up) found no session to end; the marker
    // it left, read after the session is stored, ends it here. (A logout
    // after the store finds the session itself.)
    if g.ended_during_login(&early, before, &marks, claims.iat)
        .await
        .map_err(down)?
    {
        g.end_session(&sid).await.map_err(down)?;
        tracing::info!(module.name = %route.label(), user.sub = %claims.sub, "login ended by a logout while it finished");
        return Err(Reject::Login(LoginFailure::Ended { retry }));
    }
    tracing::info!(module.name = %route.label(), user.sub = %claims.sub, "login succeeded");
    g.state
        .metrics
        .logins
        .with_label_values(&[route.label(), "succeeded", ""])
        .inc();
    let cookie = g.session_cookie_header(&sid, None);
    // An earlier failure's page is not this user's business any more.
    let no_error = Own::Error.set_cookie(g.cfg().tls, "", Some(0));
    Ok(Reply::redirect(txn.return_path).with_cookies([cookie, spent, no_error]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_login_comes_back_the_same_from_its_cookie() {
        let retry = |to: &str| {
            format!(
                "{PREFIX}login?return_to={}",
                form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
            )
        };
        for r in [
            Reject::Forbidden {
                account: Some("carol@acme.example".into()),
            },
            Reject::Login(LoginFailure::WrongIssuer),
            Reject::Login(LoginFailure::BadCallback),
            Reject::Login(LoginFailure::Expired {
                retry: retry("/reports?page=2"),
            }),
            Reject::Login(LoginFailure::Expired {
                retry: format!("{PREFIX}login"),
            }),
            Reject::Login(LoginFailure::Provider {
                error: "access_denied".into(),
                description: Some("<b>not for you</b>".into()),
                retry: retry("/"),
            }),
            Reject::Login(LoginFailure::Exchange { retry: retry("/a") }),
            Reject::Login(LoginFailure::NoIdToken { retry: retry("/a") }),
            Reject::Login(LoginFailure::IdToken { retry: retry("/a") }),
            Reject::Login(LoginFailure::Userinfo { retry: retry("/a") }),
            Reject::Login(LoginFailure::Ended {
                retry: retry("/billing/"),
            }),
        ] {
            let failed = Failed::of(&r).unwrap();
            let again = Failed::decode(&failed.encode()).and_then(Failed::refusal);
            assert_eq!(again.as_ref(), Some(&r), "{failed:?}");
            assert_eq!(again.unwrap().status(), r.status());
        }
        // Passing failures are shown where they happen.
        assert!(Failed::of(&Reject::StoreDown).is_none());
        assert!(Failed::of(&Reject::AccountsUnavailable).is_none());
    }

    #[test]
    fn a_forged_error_cookie_cannot_send_anyone_elsewhere_or_say_anything_long() {
        for value in ["", "!!!", "e30", "eyJyIjoibm9wZSJ9"] {
            assert!(Failed::decode(value).and_then(Failed::refusal).is_none(), "{value}");
        }
        let forged = Failed {
            reason: "login_expired".into(),
            error: None,
            description: None,
            return_to: Some("//evil.example/".into()),
        };
        match forged.refusal() {
            Some(Reject::Login(LoginFailure::Expired { retry })) => assert_eq!(retry, format!("{PREFIX}login")),
            other => panic!("{other:?}"),
        }
        let long = Failed {
            reason: "idp_error".into(),
            error: Some("x\u{7}".repeat(100)),
            description: Some("d".repeat(10_000)),
            return_to: None,
        };
        match long.refusal() {
            Some(Reject::Login(LoginFailure::Provider { error, description, .. })) => {
                assert_eq!(error.len(), 64);
                assert!(!error.contains('\u{7}'));
                assert_eq!(description.unwrap().len(), 300);
            }
            other => panic!("{other:?}"),
        }
    }
}
