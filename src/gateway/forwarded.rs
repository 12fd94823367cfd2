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
mod tests {
    use super::*;

    #[test]
    fn hops_are_written_as_addresses_are() {
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "::1",
            "2001:db8::7",
        ] {
            assert_eq!(hop_value(a.parse().unwrap()), a);
        }
    }

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&nets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let ingress = trusted(&["10.0.0.0/8", "fd00::/8", "::1/128"]);
        let none = TrustedProxies::default();
        // (peer, X-Forwarded-For values, Forwarded values, trusted, client)
        type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a TrustedProxies, &'a str);
        let cases: &[Case] = &[
            // No trusted proxies: the peer, whatever the headers say.
            ("198.51.100.9", &["1.2.3.4"], &["for=1.2.3.4"], &none, "198.51.100.9"),
            // An untrusted peer: the peer.
            ("198.51.100.9", &["1.2.3.4"], &[], &ingress, "198.51.100.9"),
            // Behind the ingress: the hop it appended.
            ("10.0.0.2", &["203.0.113.7"], &[], &ingress, "203.0.113.7"),
            // A spoofed leftmost entry is skipped.
            ("10.0.0.2", &["6.6.6.6, 203.0.113.7"], &[], &ingress, "203.0.113.7"),
            ("10.0.0.2", &["6.6.6.6", "203.0.113.7"], &[], &ingress, "203.0.113.7"),
            // Several trusted hops.
            (
                "10.0.0.2",
                &["6.6.6.6, 203.0.113.7, 10.9.9.9, 10.1.1.1"],
                &[],
                &ingress,
                "203.0.113.7",
            ),
            // Spoofed trusted-looking entries left of the client change nothing.
            ("10.0.0.2", &["10.6.6.6, 203.0.113.7"], &[], &ingress, "203.0.113.7"),
            // Only trusted hops: the leftmost.
            ("10.0.0.2", &["10.0.0.7, 10.0.0.5"], &[], &ingress, "10.0.0.7"),
            // No header: the peer.
            ("10.0.0.2", &[], &[], &ingress, "10.0.0.2"),
            ("10.0.0.2", &[""], &[], &ingress, "10.0.0.2"),
            // Garbage stops the walk at the trusted hop after it.
            ("10.0.0.2", &["203.0.113.7, garbage"], &[], &ingress, "10.0.0.2"),
            ("10.0.0.2", &["garbage, 10.0.0.5"], &[], &ingress, "10.0.0.5"),
            ("10.0.0.2", &["unknown"], &[], &ingress, "10.0.0.2"),
            ("10.0.0.2", &["999.1.1.1"], &[], &ingress, "10.0.0.2"),
            // Garbage left of the client does not matter.
            ("10.0.0.2", &["garbage, 203.0.113.7"], &[], &ingress, "203.0.113.7"),
            // Ports and brackets.
            ("10.0.0.2", &["203.0.113.7:5555"], &[], &ingress, "203.0.113.7"),
            ("10.0.0.2", &["[2001:db8::7]:443"], &[], &ingress, "2001:db8::7"),
            // IPv6 hops and peers; IPv4-mapped addresses are IPv4.
            ("::1", &["2001:db8::7, fd00::1"], &[], &ingress, "2001:db8::7"),
            ("fd00::2", &["::ffff:203.0.113.7"], &[], &ingress, "203.0.113.7"),
            ("::ffff:10.0.0.2", &["203.0.113.7"], &[], &ingress, "203.0.113.7"),
            (
                "10.0.0.2",
                &["::ffff:10.0.0.9, 2001:db8::1"],
                &[],
                &ingress,
                "2001:db8::1",
            ),
            // Forwarded, when there is no X-Forwarded-For.
            (
                "10.0.0.2",
                &[],
                &["for=203.0.113.7;proto=https"],
                &ingress,
                "203.0.113.7",
            ),
            (
                "10.0.0.2",
                &[],
                &["for=6.6.6.6, for=203.0.113.7;by=10.0.0.2"],
                &ingress,
                "203.0.113.7",
            ),
            (
                "10.0.0.2",
                &[],
                &[r#"for="[2001:db8:cafe::17]:4711""#],
                &ingress,
                "2001:db8:cafe::17",
            ),
            (
                "10.0.0.2",
                &[],
                &[r#"for="203.0.113.7:80";proto=http"#],
                &ingress,
                "203.0.113.7",
            ),
            (
                "10.0.0.2",
                &[],
                &["For=203.0.113.7", "for=10.0.0.9"],
                &ingress,
                "203.0.113.7",
            ),
            ("10.0.0.2", &[], &["for=_hidden"], &ingress, "10.0.0.2"),
            (
                "10.0.0.2",
                &[],
                &[r#"for="a,b;c", for=203.0.113.7"#],
                &ingress,
                "203.0.113.7",
            ),
            // Both: X-Forwarded-For wins (what proxies append to).
            ("10.0.0.2", &["203.0.113.7"], &["for=6.6.6.6"], &ingress, "203.0.113.7"),
        ];
        for (peer, xff, fwd, t, want) in cases {
            let got = client_ip(ip(peer), xff.iter().copied(), fwd.iter().copied(), t);
            assert_eq!(got, ip(want), "peer {peer}, xff {xff:?}, forwarded {fwd:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Whatever a client writes, nothing panics, and no address it
        /// wrote left of the hop the trusted proxy appended is believed.
        #[test]
        fn any_chain_never_panics_and_the_appended_hop_wins(
            xff in "[0-9a-f.:\\[\\], _\"=;]{0,80}",
            fwd in proptest::prelude::any::<String>(),
            client in proptest::prelude::any::<[u8; 4]>(),
        ) {
            let t = trusted(&["10.0.0.0/8"]);
            let none = TrustedProxies::default();
            let peer = ip("10.0.0.2");
            let _ = client_ip(peer, std::iter::once(xff.as_str()), std::iter::once(fwd.as_str()), &t);
            proptest::prop_assert_eq!(
                client_ip(peer, std::iter::once(xff.as_str()), std::iter::once(fwd.as_str()), &none),
                peer
            );
            let real = IpAddr::from(client);
            if !t.contains(real) {
                let appended = format!("{xff}, {real}");
                proptest::prop_assert_eq!(
                    client_ip(peer, std::iter::once(appended.as_str()), std::iter::empty(), &t),
                    real
                );
            }
        }
    }

    #[test]
    fn a_long_chain_is_walked_only_so_far() {
        let t = trusted(&["10.0.0.0/8"]);
        let chain = vec!["10.0.0.1"; 10_000].join(", ");
        let got = client_ip(ip("10.0.0.2"), std::iter::once(chain.as_str()), std::iter::empty(), &t);
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn trusted_proxies_are_checked_entry_by_entry() {
        assert!(TrustedProxies::parse(&[]).unwrap().is_empty());
        let ok = trusted(&["10.0.0.0/8", "::1/128", "192.168.1.7", "2001:db8::/32"]);
        assert!(ok.contains(ip("10.200.0.1")));
        assert!(ok.contains(ip("::1")));
        assert!(ok.contains(ip("192.168.1.7")));
        assert!(ok.contains(ip("::ffff:10.0.0.1")));
        assert!(!ok.contains(ip("192.168.1.8")));
        assert!(!ok.contains(ip("11.0.0.1")));
        let bad: Vec<String> = [
            "10.0.0.0/8",
            "10.0.0.300/8",
            "nonsense",
            "10.1.2.3/8",
            "0.0.0.0/0",
            "::/0",
            "::1/129",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let errs = TrustedProxies::parse(&bad).unwrap_err();
        let at: Vec<usize> = errs.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, vec![1, 2, 3, 4, 5, 6], "{errs:?}");
        assert!(errs[2].1.contains("10.0.0.0/8"), "suggests the network: {}", errs[2].1);
        assert!(errs[3].1.contains("every address"), "{}", errs[3].1);
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn all(r: &RequestHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    const CLIENT_SENT: [(&str, &str); 13] = [
        ("X-Forwarded-For", "1.2.3.4"),
        ("x-forwarded-for", "5.6.7.8"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
        ("Forwarded", "for=1.2.3.4"),
        ("X-Real-IP", "1.2.3.4"),
        ("True-Client-IP", "1.2.3.4"),
        ("X_Forwarded_For", "1.2.3.4"),
        ("x_real_ip", "1.2.3.4"),
        ("X_Request_Id", "chosen"),
        ("X-Original-URL", "/admin"),
        ("x_rewrite_url", "/admin"),
    ];

    #[test]
    fn an_untrusted_client_gets_unigates_forwarding_headers() {
        let mut r = request(&CLIENT_SENT);
        r.append_header("accept", "*/*").unwrap();
        let o = Origin {
            peer: Some(ip("::ffff:198.51.100.9")),
            trusted: false,
            proto: "https",
            host: Some(&http::HeaderValue::from_static("portal.example:8443")),
        };
        set_forwarding_headers(&mut r, &o);
        assert_eq!(all(&r, "x-forwarded-for"), ["198.51.100.9"]);
        assert_eq!(all(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&r, "x-forwarded-host"), ["portal.example:8443"]);
        let mut left: Vec<&str> = r.headers.keys().map(|n| n.as_str()).collect();
        left.sort();
        assert_eq!(
            left,
            ["accept", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"]
        );
    }

    #[test]
    fn a_trusted_proxy_keeps_its_headers_and_the_peer_is_appended() {
        let mut r = request(&CLIENT_SENT);
        r.append_header("x-request-id", "ingress-1").unwrap();
        let o = Origin {
            peer: Some(ip("10.0.0.2")),
            trusted: true,
            proto: "http",
            host: Some(&http::HeaderValue::from_static("portal.example")),
        };
        set_forwarding_headers(&mut r, &o);
        assert_eq!(all(&r, "x-forwarded-for"), ["1.2.3.4, 5.6.7.8, 10.0.0.2"]);
        assert_eq!(all(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&r, "x-forwarded-host"), ["evil.example"]);
        assert_eq!(all(&r, "x-forwarded-port"), ["443"]);
        assert_eq!(all(&r, "forwarded"), ["for=1.2.3.4"]);
        assert_eq!(all(&r, "x-real-ip"), ["1.2.3.4"]);
        assert_eq!(all(&r, "x-request-id"), ["ingress-1"]);
        for gone in [
            "x_forwarded_for",
            "x_real_ip",
            "x_request_id",
            "x-original-url",
            "x_rewrite_url",
        ] {
            assert!(all(&r, gone).is_empty(), "{gone}");
        }
        // A trusted proxy that sends nothing: unigate's own.
        let mut r = request(&[]);
        set_forwarding_headers(&mut r, &o);
        assert_eq!(all(&r, "x-forwarded-for"), ["10.0.0.2"]);
        assert_eq!(all(&r, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&r, "x-forwarded-host"), ["portal.example"]);
    }

    #[test]
    fn every_spelling_of_a_forwarding_header_is_one() {
        for p in FORWARDING_HEADERS {
            let upper = p.to_ascii_uppercase();
            let under = p.replace('-', "_");
            let mixed: String = p
                .chars()
                .enumerate()
                .map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c })
                .collect();
            for n in [p.to_string(), upper, under, mixed] {
                assert!(same_name(&n, p), "{n}");
            }
        }
        assert!(!same_name("x-forwarded-fo", "x-forwarded-for"));
        assert!(!same_name("x-forwarded-user", "x-forwarded-for"));
        assert!(
            !same_name("x-forwarded_for", "x_forwarded_for"),
            "patterns are `-` spelt"
        );
    }
}
