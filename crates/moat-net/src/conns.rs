//! Connection limits: at most so many open connections per client (IP, or /64 for IPv6)
//! and in all, so one client cannot exhaust file descriptors for everyone.
//!
//! A client at its limit gets room by losing its own longest-idle connection: one that
//! has received nothing of a request since its last response and is answering none
//! (idle keep-alive, or never used). Connections opened and left silent therefore cannot
//! lock their client's later requests out until the header timeout frees them; and as
//! every local program shares 127.0.0.1, that client is everyone on this machine. A
//! connection with a request under way is never closed for another; when none is idle, the
//! new connection is closed as soon as it is accepted. The total limit is strict.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::ratelimit::client_key;

/// The limits and the open connections; shared by all listeners.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    per_client: usize,
    total: Arc<Semaphore>,
    open: Arc<Mutex<HashMap<IpAddr, Vec<Arc<ConnState>>>>>,
}

/// What the limits know of one open connection, and how it is asked to close.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Set while bytes of a request have arrived that no response has followed
    /// ([`crate::slow_head::TrackedStream`]); unset for connections not tracked, which are
    /// then never taken for idle.
    head_pending: OnceLock<Arc<AtomicBool>>,
    /// Responses still being sent (their bodies not yet finished).
    responding: AtomicUsize,
    evicted: AtomicBool,
    evict: Notify,
}

impl ConnState {
    /// Lets the limits see when a request is arriving on this connection.
    pub fn track(&self, head_pending: Arc<AtomicBool>) {
        let _ = self.head_pending.set(head_pending);
    }

    /// Counts one response in flight until the guard is dropped.
    pub fn responding(self: &Arc<Self>) -> Responding {
        self.responding.fetch_add(1, Ordering::AcqRel);
        Responding(self.clone())
    }

    /// Nothing of a request received and nothing being answered.
    fn idle(&self) -> bool {
        self.head_pending
            .get()
            .is_some_and(|pending| !pending.load(Ordering::Acquire))
            && self.responding.load(Ordering::Acquire) == 0
            && !self.evicted.load(Ordering::Acquire)
    }

    /// Resolves when the limits want this connection closed to make room.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Whether the connection may close now that it is asked to: a request may have
    /// begun in between, and then it stays (counted under the limit again).
    pub fn close_if_idle(&self) -> bool {
        let idle = self
            .head_pending
            .get()
            .is_some_and(|pending| !pending.load(Ordering::Acquire))
            && self.responding.load(Ordering::Acquire) == 0;
        if !idle {
            self.evicted.store(false, Ordering::Release);
        }
        idle
    }
}

/// A response in flight on a connection (see [`ConnState::responding`]).
#[derive(Debug)]
pub struct Responding(Arc<ConnState>);

impl Drop for Responding {
    fn drop(&mut self) {
        self.0.responding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's place under the limits; released when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    key: IpAddr,
    state: Arc<ConnState>,
    open: Arc<Mutex<HashMap<IpAddr, Vec<Arc<ConnState>>>>>,
    _total: OwnedSemaphorePermit,
}

impl ConnSlot {
    /// This connection's state, for the code that serves it.
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl ConnLimits {
    /// At most `per_client` connections per client and `total` in all (both at least 1).
    pub fn new(per_client: u32, total: u32) -> Self {
        Self {
            per_client: per_client.max(1) as usize,
            total: Arc::new(Semaphore::new(total.max(1) as usize)),
            open: Arc::default(),
        }
    }

    /// A slot for a new connection from `ip` (closing the client's longest-idle one if it
    /// is at its limit), or `None` if a limit is reached and no connection of the client's
    /// is idle.
    pub fn admit(&self, ip: IpAddr) -> Option<ConnSlot> {
        let total = self.total.clone().try_acquire_owned().ok()?;
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let conns = open.entry(key).or_default();
        let closing = conns
            .iter()
            .filter(|c| c.evicted.load(Ordering::Acquire))
            .count();
        if conns.len() - closing >= self.per_client {
            // In order of admission: the first idle one has waited longest.
            let victim = conns.iter().find(|c| c.idle())?;
            victim.evicted.store(true, Ordering::Release);
            victim.evict.notify_one();
        }
        let state = Arc::new(ConnState::default());
        conns.push(state.clone());
        Some(ConnSlot {
            key,
            state,
            open: self.open.clone(),
            _total: total,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conns) = open.get_mut(&self.key) {
            conns.retain(|c| !Arc::ptr_eq(c, &self.state));
            if conns.is_empty() {
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

    #[test]
    fn a_client_at_its_limit_loses_its_longest_idle_connection_only() {
        let limits = ConnLimits::new(3, 100);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let flags: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
        let slots: Vec<ConnSlot> = flags
            .iter()
            .map(|f| {
                let slot = limits.admit(ip).unwrap();
                slot.state().track(f.clone());
                slot
            })
            .collect();
        // The first is mid-request, the second is sending a response: the third goes.
        flags[0].store(true, Ordering::Release);
        let answering = slots[1].state().responding();
        let fourth = limits.admit(ip).expect("room made");
        assert!(slots[2].state().evicted.load(Ordering::Acquire));
        assert!(!slots[0].state().evicted.load(Ordering::Acquire));
        assert!(!slots[1].state().evicted.load(Ordering::Acquire));
        // Nothing idle is left (the fourth is untracked): the next is refused.
        assert!(limits.admit(ip).is_none());
        drop(answering);
        let fifth = limits
            .admit(ip)
            .expect("the finished response left an idle connection");
        assert!(slots[1].state().evicted.load(Ordering::Acquire));
        drop((fourth, fifth, slots));
        assert!(limits.open.lock().unwrap().is_empty());
    }
}
