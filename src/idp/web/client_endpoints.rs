//! The endpoints relying parties call directly, answering JSON: discovery,
//! the JWKS, the token endpoint, introspection and UserInfo.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{P, pairs};
use crate::idp::oauth::{ClientAuth, TokenError, params_map};

pub(super) async fn discovery(State(p): P) -> Response {
    let doc = serde_json::json!({
        "issuer": p.issuer,
        "authorization_endpoint": p.url("/authorize"),
        "token_endpoint": p.url("/token"),
        "userinfo_endpoint": p.url("/userinfo"),
        "introspection_endpoint": p.url("/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "jwks_uri": p.url("/.well-known/jwks.json"),
        "end_session_endpoint": p.url("/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email", "groups", "offline_access"],
        "claims_supported": ["iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce", "sid", "email", "email_verified", "preferred_username", "name", "company", "groups", "amr", "at_hash"],
        "prompt_values_supported": ["none", "login"],
        "authorization_response_iss_parameter_supported": true,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "frontchannel_logout_supported": true,
        "frontchannel_logout_session_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    });
    ([(header::CACHE_CONTROL, "public, max-age=300")], axum::Json(doc)).into_response()
}

pub(super) async fn jwks(State(p): P) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(p.keys.jwks(SystemTime::now())),
    )
        .into_response()
}

/// An `invalid_request` error (400, no challenge).
fn invalid(description: impl Into<String>) -> TokenError {
    TokenError::new("invalid_request", description)
}

fn token_error(e: TokenError) -> Response {
    let mut r = (
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        axum::Json(serde_json::json!({ "error": e.error, "error_description": e.description })),
    )
        .into_response();
    if e.basic_challenge {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"unigate-idp\""),
        );
    }
    r
}

/// The form and the client's credentials (Basic or in the form) of a
/// request to the token or introspection endpoint.
fn client_form(headers: &HeaderMap, body: &[u8]) -> Result<(ClientAuth, HashMap<String, String>), TokenError> {
    let form = params_map(pairs(body)).map_err(invalid)?;
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("invalid"));
    Ok((ClientAuth::from_request(auth, &form)?, form))
}

pub(super) async fn token(State(p): P, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return token_error(invalid(format!("the request body could not be read ({})", e.status()))),
    };
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
        });
    if !form_type {
        return token_error(invalid("the body must be application/x-www-form-urlencoded"));
    }
    let result = client_form(&headers, &body).and_then(|(auth, form)| p.token(&auth, &form, SystemTime::now()));
    match result {
        Ok(t) => (
            [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
            axum::Json(t),
        )
            .into_response(),
        Err(e) => {
            tracing::info!(error = e.error, "token request refused");
            token_error(e)
        }
    }
}

/// Token introspection (RFC 7662), for registered clients (Basic or
/// form credentials, as at the token endpoint).
pub(super) async fn introspect(State(p): P, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let Ok(body) = body else {
        return token_error(invalid("the request body could not be read"));
    };
    match client_form(&headers, &body).and_then(|(auth, form)| p.introspect(&auth, &form, SystemTime::now())) {
        Ok(v) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(v)).into_response(),
        Err(e) => token_error(e),
    }
}

pub(super) async fn userinfo(State(p): P, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let challenge = |v: &'static str| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, v)],
            axum::Json(serde_json::json!({"error": "invalid_token"})),
        )
            .into_response()
    };
    let Some(token) = token else {
        return challenge("Bearer realm=\"unigate-idp\"");
    };
    match p.userinfo(&token, SystemTime::now()) {
        Some(claims) => axum::Json(claims).into_response(),
        None => challenge("Bearer realm=\"unigate-idp\", error=\"invalid_token\""),
    }
}
