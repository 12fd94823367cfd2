//! A request as the decisions see it: its path made canonical in place (so
//! that what unigate decides on is what the module is sent), its host,
//! its cookies, and the plain `RequestFacts` the policy decides on.

use std::borrow::Cow;

use pingora::http::RequestHeader;

use crate::policy::ClientKind;
use crate::policy::path::{PathRefusal, canonicalize};
use crate::policy::request::RequestFacts;
use crate::session::cookie_value;

/// A browser navigating, or a script (`policy::request::client_kind`).
pub fn client_kind(req: &RequestHeader) -> ClientKind {
    crate::policy::request::client_kind(&req.headers)
}

/// The `Authorization: Bearer` token, if the request has one.
pub fn bearer_token(req: &RequestHeader) -> Option<&str> {
    crate::policy::request::bearer_token(&req.headers)
}

/// The facts the request decision reads, borrowed from the request.
pub fn facts(req: &RequestHeader) -> RequestFacts<'_> {
    RequestFacts {
        path: req.uri.path(),
        target: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        query: req.uri.query(),
        method: &req.method,
        headers: &req.headers,
    }
}

/// The request's host, lowercase, without port.
pub fn host_of(req: &RequestHeader) -> Option<Cow<'_, str>> {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))?;
    let host = match raw.rfind(':') {
        Some(i) if !raw.ends_with(']') => &raw[..i],
        _ => raw,
    };
    // Allocate only for the rare host written with capitals.
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    cookie_value(
        req.headers.get_all(http::header::COOKIE).iter().map(|v| v.as_bytes()),
        name,
    )
}

/// A query parameter of the request, decoded.
pub fn query_param(req: &RequestHeader, name: &str) -> Option<String> {
    let q = req.uri.query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Drops Pingora's record of the case of each header name from a request
/// (the one the module will be sent is made from it), and makes room for
/// `room` more headers: appends then cost a third. HTTP/1.1 header names
/// are case-insensitive; the module gets the standard ones title-cased and
/// the rest lower-case. The request target is kept as Pingora keeps it.
pub fn without_case(req: &mut RequestHeader, room: usize) {
    // A target the URI does not hold (absolute-form, not UTF-8) is left to
    // `canonical_target` with its case map: it is rewritten or refused.
    if !req.has_case()
        || req
            .uri
            .path_and_query()
            .is_none_or(|pq| pq.as_str().as_bytes() != req.raw_path())
    {
        return;
    }
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, empty).into();
    parts.headers.reserve(room);
    *req = RequestHeader::from(parts);
}

/// Makes the request's path canonical (`policy::path`) in place, so that
/// what unigate decides on is what the module is sent: also a target that
/// Pingora would forward verbatim (absolute-form, or not UTF-8).
pub fn canonical_target(req: &mut RequestHeader) -> std::result::Result<(), PathRefusal> {
    if !req.raw_path_is_utf8() {
        return Err(PathRefusal::NotUtf8);
    }
    let verbatim = req
        .uri
        .path_and_query()
        .is_none_or(|pq| pq.as_str().as_bytes() != req.raw_path());
    let path = match canonicalize(req.uri.path())? {
        Cow::Borrowed(_) if !verbatim => return Ok(()),
        Cow::Borrowed(p) => p.to_string(),
        Cow::Owned(p) => p,
    };
    let target = match req.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(target.parse().map_err(|_| PathRefusal::BadEscape)?);
    let uri = http::Uri::from_parts(parts).map_err(|_| PathRefusal::BadEscape)?;
    req.set_uri(uri);
    Ok(())
}
