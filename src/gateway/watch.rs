//! Long-lived responses (websockets, event streams, any body without a
//! declared length) under a session: their upstream socket is closed once
//! the session ends — revoked, or past its absolute or idle timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pingora::http::ResponseHeader;

use crate::clock::unix_now;
use crate::session::Session;
use crate::session::redis::RedisStore;

/// Whether a response may go on indefinitely: an upgrade (websocket), or a
/// body with no declared length (chunked or close-delimited, which includes
/// every event stream). Answers to HEAD, 1xx, 204 and 304 carry no body.
pub fn streamed(head: bool, resp: &ResponseHeader) -> bool {
    let status = resp.status.as_u16();
    let bodiless = head || status < 200 || status == 204 || status == 304;
    status == 101 || !(bodiless || resp.headers.contains_key(http::header::CONTENT_LENGTH))
}

/// A task that ends with the request that started it; `fired` once it
/// has closed the response.
pub struct Watcher {
    pub task: tokio::task::JoinHandle<()>,
    pub fired: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A socket's two addresses: they tell it from another socket that was
/// given its file descriptor number after it was closed.
pub type SocketEnds = (nix::sys::socket::SockaddrStorage, nix::sys::socket::SockaddrStorage);

pub fn socket_ends(fd: std::os::unix::io::RawFd) -> Option<SocketEnds> {
    use nix::sys::socket::{getpeername, getsockname};
    Some((getsockname(fd).ok()?, getpeername(fd).ok()?))
}

/// Closes the upstream socket of a long-lived response once its session is
/// revoked, or past its absolute or idle timeout, whichever comes first.
/// With Redis (`idle`: the timeout, the store, the session's id hash) the
/// idle timeout is the one Redis keeps, asked before closing.
pub async fn watch(
    s: Arc<Session>,
    (fd, ends): (std::os::unix::io::RawFd, SocketEnds),
    idle: Option<(u64, Arc<RedisStore>, [u8; 32])>,
    fired: Arc<std::sync::atomic::AtomicBool>,
    label: String,
) {
    let absolute = if s.expires_at > 0 { s.expires_at } else { u64::MAX };
    let mut idle_until = 0u64;
    loop {
        let now = unix_now();
        let mut deadline = absolute;
        if let Some((secs, _, _)) = &idle {
            idle_until = idle_until.max(s.touched.load(Ordering::Relaxed).saturating_add(*secs));
            deadline = deadline.min(idle_until);
        }
        if now >= deadline {
            // Idle here, but perhaps busy on another replica.
            if deadline < absolute
                && let Some((_, shared, h)) = &idle
                && let Ok(Some(left)) = shared.ttl(h).await
            {
                idle_until = now + left.as_secs().max(1);
                continue;
            }
            break;
        }
        let wait = Duration::from_secs(deadline.saturating_sub(now).min(86_400));
        tokio::select! {
            _ = s.revoked() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    fired.store(true, Ordering::Release);
    // Only the socket it was started for: after an error Pingora may have
    // closed it, and its number may belong to another socket by now.
    if socket_ends(fd).is_some_and(|now| now == ends) {
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
    }
    tracing::info!(module.name = %label, user.sub = %s.identity.sub, "long-lived response closed: its session ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.insert_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn which_responses_are_watched_as_streams() {
        let chunked = [("transfer-encoding", "chunked")];
        let sized = [("content-length", "12")];
        let sse = [("content-type", "text/event-stream")];
        for (head, r, want) in [
            (false, resp(101, &[("upgrade", "websocket")]), true),
            (false, resp(200, &sse), true),
            (false, resp(200, &chunked), true),
            (false, resp(200, &[]), true), // close-delimited
            (false, resp(500, &chunked), true),
            (false, resp(200, &sized), false),
            (false, resp(204, &[]), false),
            (false, resp(304, &[]), false),
            (false, resp(103, &[]), false),
            (true, resp(200, &chunked), false),
        ] {
            assert_eq!(streamed(head, &r), want, "HEAD {head}, {} {:?}", r.status, r.headers);
        }
    }
}
