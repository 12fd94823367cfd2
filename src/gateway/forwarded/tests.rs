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
