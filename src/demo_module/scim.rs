//! The portal's SCIM 2.0 directory (`/scim/v2/Users`): the lookups unigate
//! makes, and the accounts Automatic User Provisioning creates.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{DemoAccount, DemoModule, S};

fn scim_error(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/scim+json")],
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": status.as_u16().to_string(),
            "detail": detail,
        })
        .to_string(),
    )
        .into_response()
}

fn scim_authorized(m: &DemoModule, headers: &HeaderMap) -> bool {
    let Some(want) = &m.cfg.scim_token else {
        return true;
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    subtle::ConstantTimeEq::ct_eq(want.as_bytes(), got.as_bytes()).into()
}

fn scim_user(a: &DemoAccount) -> serde_json::Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": a.username,
        "userName": a.username,
        "emails": [{"value": a.email, "primary": true, "type": "work"}],
        "active": a.active,
        "roles": [{"value": a.role, "primary": true}],
    })
}

/// `GET /scim/v2/Users?filter=…`: the filters unigate sends
/// (`userName eq "…"`, `emails.value eq "…"`), case-insensitive as RFC 7643
/// says for both attributes.
pub(super) async fn scim_list(State(m): S, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    m.scim_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !scim_authorized(&m, &headers) {
        return scim_error(StatusCode::UNAUTHORIZED, "bearer token required");
    }
    let filter = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "filter")
        .map(|(_, v)| v.into_owned());
    let accounts = m.accounts();
    let matched: Vec<&DemoAccount> = match filter {
        None => accounts.iter().collect(),
        Some(f) => {
            let Some((attr, value)) = parse_eq_filter(&f) else {
                return scim_error(
                    StatusCode::BAD_REQUEST,
                    "only `attr eq \"value\"` filters are supported",
                );
            };
            accounts
                .iter()
                .filter(|a| match attr.as_str() {
                    "username" => a.username.eq_ignore_ascii_case(&value),
                    "emails.value" | "emails" => a.email.eq_ignore_ascii_case(&value),
                    _ => false,
                })
                .collect()
        }
    };
    (
        [(header::CONTENT_TYPE, "application/scim+json")],
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": matched.len(),
            "itemsPerPage": matched.len(),
            "startIndex": 1,
            "Resources": matched.iter().map(|a| scim_user(a)).collect::<Vec<_>>(),
        })
        .to_string(),
    )
        .into_response()
}

/// `attr eq "value"` → (lowercase attr, value), JSON string escapes undone.
fn parse_eq_filter(f: &str) -> Option<(String, String)> {
    let (attr, rest) = f.trim().split_once(' ')?;
    let (op, value) = rest.trim_start().split_once(' ')?;
    if !op.eq_ignore_ascii_case("eq") {
        return None;
    }
    let value: String = serde_json::from_str(value.trim()).ok()?;
    Some((attr.to_ascii_lowercase(), value))
}

/// `POST /scim/v2/Users`: Automatic User Provisioning creates an account.
pub(super) async fn scim_create(State(m): S, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    m.scim_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !scim_authorized(&m, &headers) {
        return scim_error(StatusCode::UNAUTHORIZED, "bearer token required");
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return scim_error(StatusCode::BAD_REQUEST, "not JSON");
    };
    let Some(username) = v["userName"].as_str().filter(|u| !u.is_empty()) else {
        return scim_error(StatusCode::BAD_REQUEST, "userName is required");
    };
    let email = v["emails"][0]["value"].as_str().unwrap_or_default();
    let role = v["roles"][0]["value"].as_str().unwrap_or("technician");
    let mut accounts = m.accounts.lock().unwrap_or_else(|p| p.into_inner());
    if accounts.iter().any(|a| a.username.eq_ignore_ascii_case(username)) {
        return scim_error(StatusCode::CONFLICT, "userName already exists");
    }
    let mut a = DemoAccount::new(username, email, None);
    a.role = role.to_string();
    let out = scim_user(&a);
    accounts.push(a);
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/scim+json")],
        out.to_string(),
    )
        .into_response()
}
