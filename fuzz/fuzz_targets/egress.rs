//! Arbitrary text against the egress URL policy and address classifier.
//! Properties: never panics; an allowed URL is http or https, has no userinfo, an allowed
//! port, and a host that is either a globally reachable address (by the classifier and by
//! the standard library's own predicates) or a name that no IP parser would read as an
//! address (so the connector can never skip the resolver's check); the normalized URL is
//! judged the same way again, and the HTTP client reads the same host from it.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use moat_net::egress::addr::classify;
use moat_net::egress::{Host, Policy};

fn std_says_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || v6.to_ipv4_mapped().is_some_and(|v4| std_says_special(IpAddr::V4(v4)))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() >= 16 {
        let ip = IpAddr::from(u128::from_be_bytes(data[..16].try_into().unwrap()).to_be_bytes());
        if std_says_special(ip) {
            assert!(!classify(ip).is_global(), "{ip}");
        }
    }
    let text = String::from_utf8_lossy(data);
    let policy = Policy::default();
    let Ok(checked) = policy.check_url(&text) else { return };
    let url = &checked.url;
    assert!(matches!(url.scheme(), "http" | "https"));
    assert!(url.username().is_empty() && url.password().is_none());
    assert!([80, 443].contains(&checked.port));
    match &checked.host {
        Host::Addr(a) => {
            assert!(classify(*a).is_global(), "{a} allowed from {text:?}");
            assert!(!std_says_special(*a), "{a} allowed from {text:?}");
        }
        Host::Name(n) => {
            assert!(n.parse::<IpAddr>().is_err(), "name {n:?} reads as an address");
            assert!(!n.is_empty() && n.contains('.'));
        }
    }
    let again = policy.check_url(url.as_str()).expect("the normal form passes again");
    assert_eq!(again, checked);
    if let Ok(uri) = url.as_str().parse::<http::Uri>() {
        let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
        match &checked.host {
            Host::Addr(a) => assert_eq!(host.parse::<IpAddr>().ok(), Some(*a)),
            Host::Name(n) => assert_eq!(host.trim_end_matches('.'), n),
        }
    }
});
