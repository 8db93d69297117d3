//! Connection limits: at most so many open connections per client (IP, or /64 for IPv6)
//! and in all, so one client cannot exhaust file descriptors for everyone. A connection over
//! a limit is closed as soon as it is accepted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ratelimit::client_key;

/// The limits and the count of open connections; shared by all listeners.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    per_client: u32,
    total: Arc<Semaphore>,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// A connection's place under the limits; released when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
    _total: OwnedSemaphorePermit,
}

impl ConnLimits {
    /// At most `per_client` connections per client and `total` in all (both at least 1).
    pub fn new(per_client: u32, total: u32) -> Self {
        Self {
            per_client: per_client.max(1),
            total: Arc::new(Semaphore::new(total.max(1) as usize)),
            open: Arc::default(),
        }
    }

    /// A slot for a new connection from `ip`, or `None` if a limit is reached.
    pub fn admit(&self, ip: IpAddr) -> Option<ConnSlot> {
        let total = self.total.clone().try_acquire_owned().ok()?;
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.per_client {
            return None;
        }
        *count += 1;
        Some(ConnSlot {
            key,
            open: self.open.clone(),
            _total: total,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_and_total_limits_release_on_drop() {
        let limits = ConnLimits::new(2, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_none(), "per-client limit");
        let _b1 = limits.admit(b).unwrap();
        assert!(limits.admit(b).is_none(), "total limit");
        drop(a1);
        assert!(
            limits.admit(b).is_some(),
            "a closed connection frees its place"
        );
        assert!(limits.open.lock().unwrap().len() <= 2);
    }
}
