//! Per-client rate limiting: a GCRA token bucket per IP address (per /64 for IPv6, where
//! one client holds the whole prefix). Over the limit: 429 with `Retry-After`.

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

/// A keyed rate limiter shared by all listeners.
#[derive(Clone)]
pub struct PerIpLimiter {
    limiter: Arc<Limiter>,
    clock: QuantaUpkeepClock,
}

type Limiter = RateLimiter<
    IpAddr,
    DefaultKeyedStateStore<IpAddr>,
    QuantaUpkeepClock,
    NoOpMiddleware<governor::clock::QuantaInstant>,
>;

/// How often the limiter's clock is refreshed. Reading a clock on every request costs more
/// than the limiter itself; a timestamp kept fresh by a background thread costs a load.
const CLOCK_RESOLUTION: Duration = Duration::from_millis(5);

impl std::fmt::Debug for PerIpLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerIpLimiter")
            .field("clients", &self.limiter.len())
            .finish()
    }
}

impl PerIpLimiter {
    /// `per_second` sustained, `burst` at once; zero is raised to one. Starts the clock's
    /// upkeep thread, which is the only way this can fail.
    pub fn new(per_second: u32, burst: u32) -> std::io::Result<Self> {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let clock = QuantaUpkeepClock::from_interval(CLOCK_RESOLUTION)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let quota = Quota::per_second(rate).allow_burst(burst);
        let store = DefaultKeyedStateStore::default();
        Ok(Self {
            limiter: Arc::new(RateLimiter::new(quota, store, clock.clone())),
            clock,
        })
    }

    /// `Ok` if `ip` may send a request now, else how long until it may.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&client_key(ip))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets clients whose buckets are full again, so memory stays bounded.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The unit a client is counted by: its IPv4 address, or its IPv6 /64.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let seg = v6.segments();
                IpAddr::V6([seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0].into())
            }
        },
    }
}

/// The 429 response for a client that must wait `wait`.
pub fn too_many_requests(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut resp = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "too many requests from this address; retry after the time in Retry-After",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_a_wait() {
        let l = PerIpLimiter::new(1, 3).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(ip).is_ok());
        }
        let wait = l.check(ip).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            l.check("192.0.2.2".parse().unwrap()).is_ok(),
            "other clients are unaffected"
        );
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let l = PerIpLimiter::new(1, 1).unwrap();
        assert!(l.check("2001:db8::1".parse().unwrap()).is_ok());
        assert!(l.check("2001:db8::2".parse().unwrap()).is_err());
        assert!(l.check("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }
}
