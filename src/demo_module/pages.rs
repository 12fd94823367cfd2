//! The portal's pages: its layout, home and reports (for whoever is
//! asking), what it sees of a request (`/api/whoami`), and the large page
//! load runs fetch.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

use super::identity::whoami;
use super::{DemoModule, S};

pub(super) fn layout(m: &DemoModule, title: &str, body: Markup) -> Html<String> {
    let brand = m.cfg.title.as_str();
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { (title) " – " (brand) }
                    style { "body{font:15px system-ui,sans-serif;margin:0;background:#f6f3ee}nav{background:#5a3e1b;color:#fff;padding:10px 20px}nav a{color:#fff;margin-left:16px}main{padding:24px;max-width:720px}table{border-collapse:collapse}td{border:1px solid #ccc;padding:4px 8px}" } }
                body {
                    nav { strong { (brand) } a href="/" { "Home" } a href="/reports" { "Reports" } a href="/logout" { "Log out" } }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

pub(super) async fn home(State(m): S, headers: HeaderMap) -> Response {
    let (who, cookie) = whoami(&m, &headers).await;
    let Some(who) = who else {
        return Redirect::to("/login").into_response();
    };
    let page = layout(
        &m,
        "Home",
        html! {
            h1 { "Welcome, " (who.username) }
            p #who data-user=(who.username) data-via=(if who.via_kaseyaone { "kaseyaone" } else { "local" }) {
                @if who.via_kaseyaone { "Logged in with KaseyaOne as " (who.email) "." }
                @else { "Logged in with module credentials." }
            }
        },
    );
    with_cookie(cookie, page)
}

pub(super) async fn reports(State(m): S, headers: HeaderMap) -> Response {
    let (who, cookie) = whoami(&m, &headers).await;
    let Some(who) = who else {
        return Redirect::to("/login").into_response();
    };
    let page = layout(
        &m,
        "Reports",
        html! { h1 { "Reports for " (who.username) } p { "Nothing to report." } },
    );
    with_cookie(cookie, page)
}

/// The portal's administration area: for `portal-admins` only, as
/// unigate's rule says; the page itself trusts that.
pub(super) async fn admin(State(m): S, headers: HeaderMap) -> Response {
    area(
        &m,
        &headers,
        "Administration",
        "Users, roles and settings of the portal.",
    )
    .await
}

/// The portal's billing page: unigate asks for a recent login first.
pub(super) async fn billing(State(m): S, headers: HeaderMap) -> Response {
    area(&m, &headers, "Billing", "Invoices and payment details.").await
}

async fn area(m: &DemoModule, headers: &HeaderMap, title: &str, what: &str) -> Response {
    let (who, cookie) = whoami(m, headers).await;
    let Some(who) = who else {
        return Redirect::to("/login").into_response();
    };
    let page = layout(
        m,
        title,
        html! { h1 { (title) } p { (what) } p.muted { "Signed in as " (who.username) "." } },
    );
    with_cookie(cookie, page)
}

/// The page, with the portal's new session cookie when one was opened.
pub(super) fn with_cookie(cookie: Option<String>, page: Html<String>) -> Response {
    match cookie {
        Some(c) => ([(header::SET_COOKIE, c)], page).into_response(),
        None => page.into_response(),
    }
}

/// What the portal sees of a request: its identity headers and whether the
/// assertion verified. For tests and curious operators.
pub(super) async fn api_whoami(State(m): S, headers: HeaderMap) -> Response {
    let asserted = m.asserted(&headers).await;
    let identity: HashMap<String, String> = headers
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            n.starts_with("x-kaseyaone")
                || n == "x-request-id"
                || n.starts_with("x-forwarded-")
                || n.starts_with("x-unigate")
                || n.contains("user")
        })
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let local = m.local_session(&headers).map(|(_, w)| w.username);
    axum::Json(serde_json::json!({
        "headers": identity,
        "assertion_verified": asserted.is_some(),
        "assertion": asserted,
        "local_session_user": local,
    }))
    .into_response()
}

/// A 64 KiB page of a legacy table, built once.
pub(super) fn big_page() -> &'static str {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PAGE.get_or_init(|| {
        let row = "<tr><td class=\"c\">cell</td><td>some legacy table data</td></tr>\n";
        let mut p = String::from("<!doctype html><html><head><title>Report</title></head><body><table>");
        while p.len() < 64 * 1024 - 40 {
            p.push_str(row);
        }
        p.push_str("</table></body></html>");
        p
    })
}
