//! Connection limits: at most so many open connections per client (IP, or /64 for IPv6)
//! and in all, so one client cannot exhaust file descriptors for everyone.
//!
//! A client at its limit gets room by losing its own longest-idle connection: one that
//! has received nothing of a request since its last response was sent whole (flushed),
//! is answering none, and has been so for [`MIN_IDLE`] (idle keep-alive, or never
//! used). When none is idle, it loses the connection whose request head has been
//! arriving longest, if for at least [`SLOW_HEAD`]: a slow sender (one header byte every
//! few seconds) loses to a new connection instead of holding its place until the header
//! timeout. Connections opened and left silent, or trickling a head, therefore cannot lock
//! their client's later requests out; and as every local program shares 127.0.0.1, that
//! client is everyone on this machine. A connection whose request is being answered is
//! never closed for another; when none can go, the new connection is closed as soon as it
//! is accepted. The total limit is strict.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::ratelimit::client_key;
use crate::slow_head::Activity;

/// How long a connection must have been quiet to be closed for another: a client that
/// reuses a connection a moment after its response must not find it closing.
const MIN_IDLE: Duration = Duration::from_secs(1);

/// How long a request may take to arrive (its head, or its body before a handler has
/// it) before its connection may be closed for a new one of the same client at its
/// limit, if it came slower than [`STALLED_BYTES_PER_SEC`]. Any client sends a head in
/// far less; a connection still sending one after this is stalled or trickling on purpose.
const SLOW_HEAD: Duration = Duration::from_secs(2);

/// Below this average, a request that has been arriving for [`SLOW_HEAD`] is stalled; an
/// upload at any real speed is far above it.
const STALLED_BYTES_PER_SEC: u64 = 4096;

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
    /// What the socket has seen ([`crate::slow_head::TrackedStream`]); unset for
    /// connections not tracked, which are then never taken for idle.
    activity: OnceLock<Arc<Activity>>,
    /// Requests being handled, their responses not yet sent whole.
    responding: AtomicUsize,
    /// Of those, requests whose bodies are still being read (no handler has them yet).
    reading: AtomicUsize,
    evicted: AtomicBool,
    evict: Notify,
}

impl ConnState {
    /// Lets the limits see what the connection's socket is doing.
    pub fn track(&self, activity: Arc<Activity>) {
        let _ = self.activity.set(activity);
    }

    /// Whether the limits see this connection's socket (and so may close it when idle).
    pub fn is_tracked(&self) -> bool {
        self.activity.get().is_some()
    }

    /// Counts one response in flight until the guard is dropped.
    pub fn responding(self: &Arc<Self>) -> Responding {
        self.responding.fetch_add(1, Ordering::AcqRel);
        Responding(self.clone())
    }

    /// How long nothing of a request has been received and nothing answered or left
    /// unsent; `None` while something is.
    fn idle_for(&self) -> Option<Duration> {
        if self.responding.load(Ordering::Acquire) != 0 {
            return None;
        }
        self.activity.get()?.quiet_for()
    }

    /// How long this connection's request has been arriving, if it is stalled: slower
    /// than [`STALLED_BYTES_PER_SEC`], with no request being answered (a request whose
    /// body is still being read is not being answered yet).
    fn slow_for(&self) -> Option<Duration> {
        let reading = self.reading.load(Ordering::Acquire);
        if self.responding.load(Ordering::Acquire) > reading {
            return None;
        }
        let (arriving, bytes) = self.activity.get()?.arriving()?;
        let allowed = STALLED_BYTES_PER_SEC.saturating_mul(arriving.as_secs().max(1));
        (bytes < allowed).then_some(arriving)
    }

    /// Counts a request body being read until the guard is dropped: while it lasts, a
    /// stalled upload may lose its connection to a new one (see [`ConnState::slow_for`]).
    pub fn reading_body(self: &Arc<Self>) -> ReadingBody {
        self.reading.fetch_add(1, Ordering::AcqRel);
        ReadingBody(self.clone())
    }

    /// Resolves when the limits want this connection closed to make room.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Whether the connection may close now that it is asked to: still idle, or still
    /// slow sending its head. A request may have begun (or its head completed) in
    /// between, and then it stays (counted under the limit again).
    pub fn close_if_still_evictable(&self) -> bool {
        let evictable =
            self.idle_for().is_some() || self.slow_for().is_some_and(|d| d >= SLOW_HEAD);
        if !evictable {
            self.evicted.store(false, Ordering::Release);
        }
        evictable
    }
}

/// A request body being read (see [`ConnState::reading_body`]).
#[derive(Debug)]
pub struct ReadingBody(Arc<ConnState>);

impl Drop for ReadingBody {
    fn drop(&mut self) {
        self.0.reading.fetch_sub(1, Ordering::AcqRel);
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
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let conns = open.entry(key).or_default();
        let closing = conns
            .iter()
            .filter(|c| c.evicted.load(Ordering::Acquire))
            .count();
        if conns.len() - closing >= self.per_client {
            let candidates = || conns.iter().filter(|c| !c.evicted.load(Ordering::Acquire));
            let idle = candidates()
                .filter_map(|c| Some((c, c.idle_for()?)))
                .filter(|(_, quiet)| *quiet >= MIN_IDLE)
                .max_by_key(|(_, quiet)| *quiet);
            let slow = || {
                candidates()
                    .filter_map(|c| Some((c, c.slow_for()?)))
                    .filter(|(_, arriving)| *arriving >= SLOW_HEAD)
                    .max_by_key(|(_, arriving)| *arriving)
            };
            let (victim, _) = idle.or_else(slow)?;
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
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let limits = ConnLimits::new(4, 100);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let quiet = |secs: u64| Activity::for_test(false, Duration::from_secs(secs));
        // Mid-request; answering; idle 5 s; idle 9 s (the longest); in order of admission.
        let activities = [
            Activity::for_test(true, Duration::from_secs(60)),
            quiet(60),
            quiet(5),
            quiet(9),
        ];
        let slots: Vec<ConnSlot> = activities
            .iter()
            .map(|a| {
                let slot = limits.admit(ip).unwrap();
                slot.state().track(a.clone());
                slot
            })
            .collect();
        let answering = slots[1].state().responding();
        let evicted = |i: usize| slots[i].state().evicted.load(Ordering::Acquire);
        let fifth = limits.admit(ip).expect("room made");
        assert!(evicted(3) && !evicted(0) && !evicted(1) && !evicted(2));
        let sixth = limits.admit(ip).expect("room made again");
        assert!(evicted(2));
        // Nothing idle long enough is left: the next is refused.
        assert!(limits.admit(ip).is_none());
        // A connection that took a request after all stays, counted again.
        activities[2].set_pending(true);
        assert!(!slots[2].state().close_if_still_evictable());
        assert!(!evicted(2));
        drop(answering);
        let seventh = limits
            .admit(ip)
            .expect("the finished response left an idle connection");
        assert!(evicted(1));
        // Just quiet is not idle enough.
        let fresh = limits.admit("192.0.2.9".parse().unwrap()).unwrap();
        fresh.state().track(quiet(0));
        assert!(fresh.state().idle_for().is_some_and(|d| d < MIN_IDLE));
        drop((fifth, sixth, seventh, slots, fresh));
        assert!(limits.open.lock().unwrap().is_empty());
    }

    #[test]
    fn when_none_is_idle_the_slowest_stalled_head_makes_room() {
        let limits = ConnLimits::new(3, 100);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // A head arriving for 30 s, one for 10 s, one that began just now.
        let activities = [
            Activity::pending_for_test(Duration::from_secs(10)),
            Activity::pending_for_test(Duration::from_secs(30)),
            Activity::pending_for_test(Duration::ZERO),
        ];
        let slots: Vec<ConnSlot> = activities
            .iter()
            .map(|a| {
                let slot = limits.admit(ip).unwrap();
                slot.state().track(a.clone());
                slot
            })
            .collect();
        let evicted = |i: usize| slots[i].state().evicted.load(Ordering::Acquire);
        let fourth = limits.admit(ip).expect("a stalled head makes room");
        assert!(evicted(1) && !evicted(0) && !evicted(2));
        assert!(slots[1].state().close_if_still_evictable());
        let fifth = limits.admit(ip).expect("and the next stalled one");
        assert!(evicted(0));
        // A head that began a moment ago is a request arriving, not a stall.
        assert!(limits.admit(ip).is_none());
        // Nor is one whose request is being answered.
        let answering = slots[2].state().responding();
        assert!(slots[2].state().slow_for().is_none());
        drop((answering, fourth, fifth, slots));
    }
}
