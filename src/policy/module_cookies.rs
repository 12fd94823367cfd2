//! What a request's module session cookies say, given whom unigate saw
//! each one issued to: let through, kept from the module (another user's,
//! or one unigate cannot tie to the session's user), expired (issued under
//! a KaseyaOne session that has ended), or refused (more than a browser
//! sends). The readings and their owners are looked up by the gateway.

use std::sync::Arc;

use crate::config::route::Route;
use crate::session::cookie_forms::Reading;
use crate::session::{CookieOwner, Session};

/// The module session cookies of a request, as looked up.
#[derive(Debug, Clone, Default)]
pub enum Cookies {
    /// The route watches no module cookies, or the request has none.
    #[default]
    None,
    /// Each reading, with whom it was issued to (one owner per form found).
    Read(Vec<(Reading, Vec<Arc<CookieOwner>>)>),
    /// More values than a browser sends.
    TooMany,
}

/// The verdict on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Nothing to do.
    Pass,
    /// Issued to another user than the session's: these (bits, see
    /// `strip_bit`) stay out.
    Strip(u64),
    /// Issued under a KaseyaOne session that has ended: these `Set-Cookie`
    /// values expire them.
    Expire(Vec<String>),
    /// More values than a browser sends: the request is refused.
    TooMany,
}

/// The bit of a strip mask for the configured name at `index` (the last
/// bit stands for every name from 63 on).
pub fn strip_bit(index: usize) -> u64 {
    1u64 << index.min(63)
}

/// `Set-Cookie` values expiring a reading under the name it was sent
/// with, when that is not the configured name and a browser could have
/// stored a cookie of that name (a token).
pub fn raw_name_expiry(r: &Reading, configured: &str, owner: Option<&CookieOwner>) -> Vec<String> {
    let token = !r.raw_name.is_empty()
        && r.raw_name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if r.raw_name == configured || !token {
        return Vec::new();
    }
    CookieOwner::expiry(&r.raw_name, owner)
}

/// Module session cookies against the session (if any) of the request.
/// Every value of each configured name counts (a browser sends one per
/// path and domain), in every spelling a framework reads as that name
/// and in every form it decodes the value to.
pub fn check(route: &Route, cookies: &Cookies, session: Option<&Session>) -> Check {
    let readings = match cookies {
        Cookies::None => return Check::Pass,
        Cookies::TooMany => return Check::TooMany,
        Cookies::Read(r) => r,
    };
    let mut strip = 0u64;
    let mut expire = Vec::new();
    for (r, owners) in readings {
        let name = route.session_cookies[r.name].as_str();
        // Beside a KaseyaOne session, a module session unigate never saw
        // issued (opened with module credentials, or before unigate)
        // could be anyone's: it stays out too.
        if owners.is_empty() && session.is_some() {
            strip |= strip_bit(r.name);
        }
        for owner in owners {
            match session {
                // Beside a KaseyaOne session only that user's own module
                // session gets through: not another user's, not a local
                // exception's (whose user unigate cannot tie to the
                // identity it sends), nor one of the same user's earlier
                // login.
                Some(s)
                    if !owner.kaseyaone
                        || *owner.user != *s.identity.sub
                        || !owner.same_login(s.identity.sid.as_deref()) =>
                {
                    strip |= strip_bit(r.name)
                }
                Some(_) => {}
                None if owner.kaseyaone => {
                    expire.extend(CookieOwner::expiry(name, Some(owner)));
                    expire.extend(raw_name_expiry(r, name, Some(owner)));
                }
                None => {} // a local exception's own module session
            }
        }
    }
    if !expire.is_empty() {
        Check::Expire(expire)
    } else if strip != 0 {
        Check::Strip(strip)
    } else {
        Check::Pass
    }
}

/// Whether the request's module session is a local exception's: every
/// value the module could read as its session cookie is one (it may read
/// any of them).
pub fn all_local(cookies: &Cookies) -> bool {
    match cookies {
        Cookies::Read(readings) => {
            !readings.is_empty()
                && readings
                    .iter()
                    .all(|(_, owners)| !owners.is_empty() && owners.iter().all(|o| !o.kaseyaone))
        }
        Cookies::None | Cookies::TooMany => false,
    }
}
