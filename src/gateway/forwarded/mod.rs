//! Forwarding headers and the client's address. A client may write any
//! `X-Forwarded-*`, `Forwarded`, `X-Real-IP` or `X-Request-Id` it likes, so
//! unigate passes those on only from a peer in `[listen] trusted_proxies`;
//! from anyone else they are removed and unigate sets its own
//! `X-Forwarded-For` (the peer), `-Proto` (from `public_url`) and `-Host`
//! (the request's host, with `public_url`'s port). The client address used for rate limits and logs
//! is found the same way: the TCP peer, or, behind trusted proxies, the
//! first untrusted hop walking `X-Forwarded-For` from the right.

use std::net::IpAddr;

use ipnet::IpNet;
use pingora::http::RequestHeader;

/// Forwarding headers (lowercase, `-` separated), replaced unless the peer
/// is a trusted proxy. Their `_` spellings are always removed: servers that
/// map headers to CGI-style names (`HTTP_X_FORWARDED_FOR`) read those too,
/// and no proxy sends them.
pub const FORWARDING_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-protocol",
    "x-url-scheme",
    "front-end-https",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "x-request-id",
];

/// Path-override headers some frameworks obey (IIS, Symfony, Laravel):
/// they would let a client choose a path unigate did not decide on. Always
/// removed.
pub const PATH_OVERRIDE_HEADERS: &[&str] = &["x-original-url", "x-rewrite-url"];

/// The most hops walked in a forwarding chain.
const MAX_HOPS: usize = 64;

/// The proxies whose forwarding headers unigate believes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Parses `[listen] trusted_proxies`: a CIDR (`10.0.0.0/8`, `::1/128`)
    /// or a single address per entry. Every bad entry is an error, with its
    /// index.
    pub fn parse(entries: &[String]) -> Result<Self, Vec<(usize, String)>> {
        let mut nets = Vec::new();
        let mut errs = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match parse_net(e.trim()) {
                Ok(n) => nets.push(n),
                Err(why) => errs.push((i, why)),
            }
        }
        if errs.is_empty() {
            Ok(TrustedProxies(nets))
        } else {
            Err(errs)
        }
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                    "`{s}` is not a network like 10.0.0.0/8 or ::1/128, nor an address"
                ));
            }
        },
    };
    if net.prefix_len() == 0 {
        return Err(format!(
            "`{s}` trusts every address: any client could then choose its own address; list your proxies' networks"
        ));
    }
    if net.trunc() != net {
        return Err(format!(
            "`{s}` has bits set past its prefix; did you mean `{}`?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// `name` (any case) spelled like `pattern` (lowercase, `-`), where a `_`
/// in `name` may stand for a `-`.
fn same_name(name: &str, pattern: &str) -> bool {
    name.len() == pattern.len()
        && name
            .bytes()
            .zip(pattern.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// One hop of a forwarding chain: an address, perhaps with a port, in
/// brackets or quotes. `None` for anything else (`unknown`, obfuscated
/// identifiers, garbage).
pub fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"').trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    // `[v6]` without a port.
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|v6| IpAddr::V6(v6).to_canonical())
}

/// The `for=` values of `Forwarded` header values (RFC 7239), in order.
/// Quoted strings may hold `,` and `;`.
pub fn forwarded_for<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out = Vec::new();
    for v in values {
        let mut start = 0;
        let mut quoted = false;
        let bytes = v.as_bytes();
        for i in 0..=bytes.len() {
            let end = i == bytes.len();
            if !end && bytes[i] == b'"' {
                quoted = !quoted;
                continue;
            }
            if end || (!quoted && (bytes[i] == b',' || bytes[i] == b';')) {
                let pair = v[start..i].trim();
                if let Some((k, val)) = pair.split_once('=')
                    && k.trim().eq_ignore_ascii_case("for")
                {
                    out.push(val.trim());
                }
                start = i + 1;
            }
        }
    }
    out
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy;
/// then, walking the chain from the right (`X-Forwarded-For`, or without
/// one `Forwarded: for=`), the first hop that is not a trusted proxy. A hop
/// that cannot be read ends the walk at the trusted hop after it; a chain
/// of trusted proxies only ends at its leftmost hop.
pub fn client_ip<'a>(
    peer: IpAddr,
    xff: impl Iterator<Item = &'a str>,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut hops: Vec<&str> = xff.flat_map(|v| v.split(',')).collect();
    if hops.is_empty() {
        hops = forwarded_for(forwarded);
    }
    let mut client = peer;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        match parse_hop(hop) {
            Some(ip) if trusted.contains(ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// The client address of a request arriving from `peer`.
pub fn client_of(req: &RequestHeader, peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    let values = |name: &'static str| req.headers.get_all(name).into_iter().filter_map(|v| v.to_str().ok());
    client_ip(peer, values("x-forwarded-for"), values("forwarded"), trusted)
}

/// What unigate tells the module about where a request came from.
pub struct Origin<'a> {
    /// The TCP peer (`None`: not an IP socket).
    pub peer: Option<IpAddr>,
    /// The peer is a trusted proxy: its forwarding headers are kept.
    pub trusted: bool,
    /// `http` or `https`, from `[listen] public_url`.
    pub proto: &'static str,
    /// The request's host, with the port browsers use.
    pub host: Option<&'a http::HeaderValue>,
}

// Pingora parses a header name from its bytes on every insert, and a
// `&'static str` is the cheapest way in (a `HeaderName` is titled first).
const XFF: &str = "x-forwarded-for";
const XFP: &str = "x-forwarded-proto";
const XFH: &str = "x-forwarded-host";

/// An address as `X-Forwarded-For` writes it; IPv4 without the
/// formatting machinery (this runs for every request).
fn hop_value(peer: IpAddr) -> String {
    match peer {
        IpAddr::V4(v4) => {
            let mut out = String::with_capacity(15);
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if *o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if *o >= 10 {
                    out.push(char::from(b'0' + o / 10 % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
            out
        }
        IpAddr::V6(_) => peer.to_string(),
    }
}

/// Whether a client's header `name` (lower-case, as `HeaderName`s are)
/// is one the forwarding rules take out.
fn taken_out(name: &str, trusted: bool) -> bool {
    if !super::identity::may_be_special(name.as_bytes()) {
        return false;
    }
    if PATH_OVERRIDE_HEADERS.iter().any(|p| same_name(name, p)) {
        return true;
    }
    let canonical = !name.contains('_');
    FORWARDING_HEADERS
        .iter()
        .any(|p| same_name(name, p) && (!canonical || (!trusted && *p != "x-request-id")))
}

/// Sets the forwarding headers of a request bound for a module: the
/// client's removed (all of them unless the peer is trusted, their `_`
/// spellings always), then `X-Forwarded-For` (the trusted chain and the
/// peer), `X-Forwarded-Proto` and `X-Forwarded-Host` (a trusted proxy's
/// own, else unigate's). `X-Request-Id` is left to `ensure_request_id`.
pub fn set_forwarding_headers(up: &mut RequestHeader, o: &Origin<'_>) {
    // Most requests carry none: no `Vec` then.
    let remove: Vec<http::header::HeaderName> = if up.headers.keys().any(|n| taken_out(n.as_str(), o.trusted)) {
        up.headers
            .keys()
            .filter(|n| taken_out(n.as_str(), o.trusted))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let chain = if o.trusted {
        let parts: Vec<&str> = up
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        parts.join(", ")
    } else {
        String::new()
    };
    for n in remove {
        up.remove_header(&n);
    }
    match o.peer {
        Some(peer) => {
            let peer = peer.to_canonical();
            let xff = if chain.is_empty() {
                hop_value(peer)
            } else {
                format!("{chain}, {peer}")
            };
            let _ = up.insert_header(XFF, xff);
        }
        None => {
            up.remove_header(XFF);
        }
    }
    if !(o.trusted && up.headers.contains_key(XFP)) {
        let _ = up.insert_header(XFP, http::HeaderValue::from_static(o.proto));
    }
    if !(o.trusted && up.headers.contains_key(XFH))
        && let Some(h) = o.host
    {
        let _ = up.insert_header(XFH, h.clone());
    }
}

impl super::Gateway {
    /// Whether the request's TCP peer is one of `[listen] trusted_proxies`.
    pub fn peer_trusted(&self, session: &pingora::proxy::Session) -> bool {
        !self.cfg().trusted_proxies.is_empty()
            && session
                .client_addr()
                .and_then(|a| a.as_inet())
                .is_some_and(|a| self.cfg().trusted_proxies.contains(a.ip()))
    }

    /// The client's address as unigate trusts it (see `client_ip`).
    pub fn client_addr(&self, session: &pingora::proxy::Session) -> Option<IpAddr> {
        let peer = session.client_addr()?.as_inet()?.ip();
        Some(client_of(session.req_header(), peer, &self.cfg().trusted_proxies))
    }

    /// The forwarding headers of a request bound for the module.
    /// `host`: the host the request was routed by, with the port browsers
    /// use (`public_url`), not whatever port the client wrote after it: a
    /// module that builds links (or caches pages) from it gets unigate's.
    pub fn forwarding_headers(
        &self,
        session: &pingora::proxy::Session,
        up: &mut RequestHeader,
        host: Option<&http::HeaderValue>,
    ) {
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let origin = Origin {
            peer,
            trusted: peer.is_some_and(|p| self.cfg().trusted_proxies.contains(p)),
            proto: if self.cfg().tls { "https" } else { "http" },
            host,
        };
        set_forwarding_headers(up, &origin);
    }
}

#[cfg(test)]
mod tests;
