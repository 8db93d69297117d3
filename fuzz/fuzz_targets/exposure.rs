//! Arbitrary Host, Origin and credential headers against the exposure policy.
//! Properties: never panics; a Control request is admitted only with the exact token and
//! a Host naming this server; a foreign peer never passes on a loopback-only listener.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_core::secret::SecretString;
use moat_net::{Exposure, ListenerKind, Policy, PolicySettings, RequestFacts};

const TOKEN: &str = "fuzz-control-token-0123456789";
const KEY: &str = "fuzz-api-key-Zq4Rt8YpLm2Wx6Vn";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let host = parts.next();
    let origin = parts.next();
    let token = parts.next();
    let flags = data.first().copied().unwrap_or(0);
    let remote_peer = flags & 1 == 1;
    let remote_listener = flags & 2 == 2;

    // A remote main listener exists only with a key (the constructor refuses it without).
    let policy = Policy::new(PolicySettings {
        kind: ListenerKind::Main,
        bound: if remote_listener { ([10, 0, 0, 1], 7411).into() } else { ([127, 0, 0, 1], 7411).into() },
        allowed_hosts: vec!["moat.home.arpa".into()],
        cors_origin: Some("http://localhost:5173".into()),
        api_key: remote_listener.then(|| SecretString::new(KEY.into())),
        control_token: SecretString::new(TOKEN.into()),
        tls: true,
        allow_insecure_remote: false,
    })
    .expect("a valid policy");
    let facts = RequestFacts {
        peer: if remote_peer { [10, 0, 0, 2].into() } else { [127, 0, 0, 1].into() },
        local: if remote_peer { ([10, 0, 0, 1], 7411).into() } else { ([127, 0, 0, 1], 7411).into() },
        host,
        origin,
        tls: flags & 4 == 4,
        api_key: token,
        control_token: token,
    };
    if policy.decide(Exposure::Control, &facts).is_ok() {
        assert_eq!(token, Some(TOKEN));
        assert!(!remote_peer || remote_listener);
        // The port is not a default one, so an admitted Host must name it.
        assert!(host.expect("admitted without Host").ends_with(":7411"));
    }
    let _ = policy.decide(Exposure::Api, &facts);
});
