//! Writing whole responses of unigate's own, and the `X-Request-Id` every
//! request and answer carries.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session as PSession;

/// Writes a whole response. `headers` may repeat names (`set-cookie`).
pub async fn respond(
    session: &mut PSession,
    status: u16,
    content_type: &str,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Result<bool> {
    let body: Bytes = body.into();
    let mut h = ResponseHeader::build(status, Some(headers.len() + 5))?;
    if let Some(id) = session.req_header().headers.get(REQUEST_ID) {
        h.insert_header(REQUEST_ID, id.clone())?;
    }
    h.insert_header("content-type", content_type)?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    for (k, v) in headers {
        h.append_header(k.to_string(), v.as_str())?;
    }
    session.write_response_header(Box::new(h), body.is_empty()).await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

/// The request id header: kept when a trusted proxy before unigate sent a
/// sane one, else generated; passed to the module and returned to the
/// client.
pub const REQUEST_ID: &str = "x-request-id";

/// Makes sure the request carries an `X-Request-Id` of unigate's own, or
/// of a `trusted` proxy.
pub fn ensure_request_id(session: &mut PSession, trusted: bool) {
    let sane = |v: &http::HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= 200 && b.iter().all(|c| (0x21..=0x7e).contains(c))
    };
    let req = session.req_header_mut();
    match req.headers.get(REQUEST_ID) {
        Some(v) if trusted && sane(v) && req.headers.get_all(REQUEST_ID).iter().count() == 1 => {}
        // Replaced.
        Some(_) => {
            let _ = req.insert_header(REQUEST_ID, new_request_id());
        }
        None => {
            let _ = req.append_header(REQUEST_ID, new_request_id());
        }
    }
}

/// 32 hex digits: a random per-process prefix and a counter (unique
/// across replicas, no system call per request).
pub fn new_request_id() -> http::HeaderValue {
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicU64;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        use rand::RngCore;
        rand::rngs::OsRng.next_u64()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&prefix.to_be_bytes());
    raw[8..].copy_from_slice(&n.to_be_bytes());
    let mut hex = [0u8; 32];
    hex::encode_to_slice(raw, &mut hex).expect("32 bytes hold 16 in hex");
    http::HeaderValue::from_bytes(&hex).expect("hex digits are a valid header value")
}
