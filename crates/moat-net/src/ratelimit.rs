//! Per-client rate limiting, a GCRA token bucket per client. Over the limit: 429 with
//! `Retry-After`, naming the limit that refused.
//!
//! A remote client is its IP address (its /64 for IPv6, where one client holds the
//! whole prefix). Every program on this machine shares 127.0.0.1, so a local client is
//! the credential it presents instead (API key, bearer token or control token, hashed),
//! with its own, higher limit: one agent's burst of sub-agents must not get another
//! program's requests refused, and a batch against a fast local model must not meet
//! moat's 429s before the model's own limits.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use governor::clock::{Clock, QuantaUpkeepClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderValue, StatusCode, header};

use crate::error::error_response;

/// The limits, as configured (`[rate_limit]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Sustained requests per second per remote address.
    pub per_second: u32,
    /// Requests a remote address may send at once.
    pub burst: u32,
    /// Sustained requests per second per local client.
    pub loopback_per_second: u32,
    /// Requests a local client may send at once.
    pub loopback_burst: u32,
}

/// The keyed rate limiters, shared by all listeners.
#[derive(Clone)]
pub struct ClientLimiter {
    remote: Arc<Limiter<IpAddr>>,
    local: Arc<Limiter<u64>>,
    limits: RateLimits,
    clock: QuantaUpkeepClock,
    /// Keys local clients by a hash of their credential, seeded per process.
    hasher: std::collections::hash_map::RandomState,
}

type Limiter<K> = RateLimiter<
    K,
    DefaultKeyedStateStore<K>,
    QuantaUpkeepClock,
    NoOpMiddleware<governor::clock::QuantaInstant>,
>;

/// How often the limiter's clock is refreshed. Reading a clock on every request costs more
/// than the limiter itself; a timestamp kept fresh by a background thread costs a load.
const CLOCK_RESOLUTION: Duration = Duration::from_millis(5);

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("remote_clients", &self.remote.len())
            .field("local_clients", &self.local.len())
            .finish()
    }
}

/// Why a request was refused: which limit, and how long until the client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Until the client may send again.
    pub wait: Duration,
    /// The rate that refused, per second.
    pub per_second: u32,
    /// Its burst.
    pub burst: u32,
    /// Whether it was the local clients' limit (by credential) or a remote address's.
    pub local: bool,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl ClientLimiter {
    /// The limiters for `limits` (zeros are raised to one). Starts the clock's upkeep
    /// thread, which is the only way this can fail.
    pub fn new(limits: RateLimits) -> std::io::Result<Self> {
        let clock = QuantaUpkeepClock::from_interval(CLOCK_RESOLUTION)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self {
            remote: Arc::new(RateLimiter::new(
                quota(limits.per_second, limits.burst),
                DefaultKeyedStateStore::default(),
                clock.clone(),
            )),
            local: Arc::new(RateLimiter::new(
                quota(limits.loopback_per_second, limits.loopback_burst),
                DefaultKeyedStateStore::default(),
                clock.clone(),
            )),
            limits,
            clock,
            hasher: std::collections::hash_map::RandomState::new(),
        })
    }

    /// `Ok` if the client may send a request now: a loopback `peer` is counted by
    /// `credential` (whatever it presents, or nothing), any other by its address.
    pub fn check(&self, peer: IpAddr, credential: Option<&[u8]>) -> Result<(), Limited> {
        let checked = if client_key(peer).is_loopback() {
            let key = self.hasher.hash_one(credential.unwrap_or_default());
            self.local.check_key(&key).map_err(|n| (n, true))
        } else {
            self.remote
                .check_key(&client_key(peer))
                .map_err(|n| (n, false))
        };
        checked.map_err(|(not_until, local)| Limited {
            wait: not_until.wait_time_from(self.clock.now()),
            per_second: if local {
                self.limits.loopback_per_second
            } else {
                self.limits.per_second
            },
            burst: if local {
                self.limits.loopback_burst
            } else {
                self.limits.burst
            },
            local,
        })
    }

    /// Forgets clients whose buckets are full again, so memory stays bounded.
    pub fn forget_idle(&self) {
        self.remote.retain_recent();
        self.remote.shrink_to_fit();
        self.local.retain_recent();
        self.local.shrink_to_fit();
    }
}

/// The unit a client is counted by (connection limits, audit sampling): its IPv4
/// address, or its IPv6 /64. Every loopback address is one client, this machine: a
/// local program binding 127.0.0.2, 127.0.0.3... is not sixteen clients.
pub fn client_key(ip: IpAddr) -> IpAddr {
    let key = match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6.is_loopback() => ip,
            None => {
                let seg = v6.segments();
                IpAddr::V6([seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0].into())
            }
        },
    };
    if key.is_loopback() {
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        key
    }
}

/// The 429 response for a client that must wait, naming the limit that refused.
pub fn too_many_requests(limited: &Limited) -> Response {
    let wait = limited.wait;
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let (who, keys) = if limited.local {
        (
            "per local client (counted by the API key it sends)",
            "rate_limit.loopback_per_second / loopback_burst",
        )
    } else {
        (
            "per client address",
            "rate_limit.per_second / rate_limit.burst",
        )
    };
    let mut resp = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        &format!(
            "moat's rate limit of {} requests/s (burst {}) {who} was reached; retry after the time in Retry-After ({keys})",
            limited.per_second, limited.burst
        ),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, burst: u32) -> RateLimits {
        RateLimits {
            per_second,
            burst,
            loopback_per_second: per_second,
            loopback_burst: burst,
        }
    }

    #[test]
    fn burst_then_refuse_with_a_wait() {
        let l = ClientLimiter::new(limits(1, 3)).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(ip, None).is_ok());
        }
        let limited = l.check(ip, None).unwrap_err();
        assert!(
            limited.wait > Duration::ZERO && limited.wait <= Duration::from_secs(1),
            "{limited:?}"
        );
        assert!(!limited.local);
        assert!(
            l.check("192.0.2.2".parse().unwrap(), None).is_ok(),
            "other clients are unaffected"
        );
        // The same credential from another remote address is another client.
        assert!(l.check("192.0.2.3".parse().unwrap(), Some(b"k")).is_ok());
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let l = ClientLimiter::new(limits(1, 1)).unwrap();
        assert!(l.check("2001:db8::1".parse().unwrap(), None).is_ok());
        assert!(l.check("2001:db8::2".parse().unwrap(), None).is_err());
        assert!(l.check("2001:db8:0:1::1".parse().unwrap(), None).is_ok());
    }

    #[test]
    fn local_clients_are_counted_by_their_credential() {
        let l = ClientLimiter::new(RateLimits {
            per_second: 1,
            burst: 1,
            loopback_per_second: 1,
            loopback_burst: 2,
        })
        .unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(l.check(local, Some(b"agent-a")).is_ok());
        assert!(l.check(local, Some(b"agent-a")).is_ok());
        let limited = l.check(local, Some(b"agent-a")).unwrap_err();
        assert!(limited.local && limited.burst == 2, "{limited:?}");
        // Another program on the same address, with its own key, is not held back.
        assert!(l.check(local, Some(b"agent-b")).is_ok());
        assert!(l.check("::1".parse().unwrap(), Some(b"agent-c")).is_ok());
        let resp = too_many_requests(&limited);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn every_loopback_address_is_one_client() {
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        for ip in ["127.0.0.2", "127.9.8.7", "::1", "::ffff:127.0.0.3"] {
            assert_eq!(client_key(ip.parse().unwrap()), one, "{ip}");
        }
        assert_ne!(client_key("192.0.2.1".parse().unwrap()), one);
    }
}
