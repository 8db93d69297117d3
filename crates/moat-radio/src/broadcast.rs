//! One encode, many listeners: encoded audio is published once into a ring that every
//! listener reads from at its own pace. A listener that falls a whole ring behind is
//! dropped (its connection ends); nobody waits for anybody, so a stalled player cannot
//! slow the station or the other listeners.
//!
//! A newcomer first gets the stream's header pages (Ogg) and the last moment of audio
//! already sent, so a player starts at once instead of waiting to fill its buffer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::broadcast;

/// Chunks the ring holds: at the encoder's usual one chunk per frame or two, ten seconds
/// and more of slack before a listener is dropped.
const RING_CHUNKS: usize = 1024;

/// The encoded audio's distribution.
#[derive(Debug)]
pub struct Broadcast {
    tx: broadcast::Sender<Bytes>,
    /// Set when the station stops: every feed ends, so a server shutting down is not
    /// held open by its listeners.
    closed: tokio::sync::watch::Sender<bool>,
    /// The last moments of audio (and the Ogg headers), under one lock with publishing so
    /// a newcomer's start and its live feed meet without a gap or a repeat.
    recent: Mutex<Recent>,
    listeners: Arc<AtomicUsize>,
    burst_bytes: usize,
}

#[derive(Debug, Default)]
struct Recent {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    headers: Option<Bytes>,
}

impl Broadcast {
    /// A broadcast that gives newcomers `burst_bytes` of recent audio.
    pub fn new(burst_bytes: usize) -> Broadcast {
        let (tx, _) = broadcast::channel(RING_CHUNKS);
        Broadcast {
            tx,
            closed: tokio::sync::watch::Sender::new(false),
            recent: Mutex::new(Recent::default()),
            listeners: Arc::new(AtomicUsize::new(0)),
            burst_bytes,
        }
    }

    /// Publishes encoded audio to every listener.
    pub fn publish(&self, chunk: Bytes) {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.bytes += chunk.len();
        recent.chunks.push_back(chunk.clone());
        while recent.bytes > self.burst_bytes && recent.chunks.len() > 1 {
            if let Some(old) = recent.chunks.pop_front() {
                recent.bytes -= old.len();
            }
        }
        // No receiver is not an error: the station plays to an empty room.
        let _ = self.tx.send(chunk);
    }

    /// A new stream began (the encoder started or restarted): its headers go to every
    /// listener now (a chained stream) and to each newcomer first, and the audio of the
    /// old stream is no longer offered to newcomers.
    pub fn set_headers(&self, headers: Bytes) {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.chunks.clear();
        recent.bytes = 0;
        recent.headers = Some(headers.clone());
        let _ = self.tx.send(headers);
    }

    /// Ends every feed, now and for listeners still to come.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// How many listeners are connected.
    pub fn listeners(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }

    /// A new listener: what to send first, then the live feed.
    pub fn subscribe(&self) -> Listener {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Shared, not copied: a listener's start costs it a few pointers. The burst holds
        // only whole chunks of the stream the headers begin.
        let start: VecDeque<Bytes> = recent
            .headers
            .iter()
            .chain(recent.chunks.iter())
            .cloned()
            .collect();
        let rx = self.tx.subscribe();
        drop(recent);
        self.listeners.fetch_add(1, Ordering::Relaxed);
        Listener {
            start,
            rx,
            closed: self.closed.subscribe(),
            count: self.listeners.clone(),
        }
    }
}

/// One listener's feed. Dropping it counts the listener out.
#[derive(Debug)]
pub struct Listener {
    start: VecDeque<Bytes>,
    rx: broadcast::Receiver<Bytes>,
    closed: tokio::sync::watch::Receiver<bool>,
    count: Arc<AtomicUsize>,
}

/// Why a feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEnd {
    /// The listener fell a whole ring behind.
    TooSlow,
    /// The station stopped.
    Closed,
}

impl Listener {
    /// The next bytes to send.
    pub async fn next(&mut self) -> Result<Bytes, FeedEnd> {
        if *self.closed.borrow() {
            return Err(FeedEnd::Closed);
        }
        if let Some(first) = self.start.pop_front() {
            return Ok(first);
        }
        let received = tokio::select! {
            r = self.rx.recv() => r,
            _ = self.closed.wait_for(|c| *c) => return Err(FeedEnd::Closed),
        };
        match received {
            Ok(b) => Ok(b),
            Err(broadcast::error::RecvError::Lagged(_)) => Err(FeedEnd::TooSlow),
            Err(broadcast::error::RecvError::Closed) => Err(FeedEnd::Closed),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newcomer_gets_the_recent_audio_then_the_live_feed() {
        let b = Broadcast::new(10);
        b.publish(Bytes::from_static(b"aaaaa"));
        b.publish(Bytes::from_static(b"bbbbb"));
        b.publish(Bytes::from_static(b"ccccc"));
        let mut l = b.subscribe();
        assert_eq!(b.listeners(), 1);
        assert_eq!(&l.next().await.unwrap()[..], b"bbbbb");
        assert_eq!(&l.next().await.unwrap()[..], b"ccccc");
        b.publish(Bytes::from_static(b"d"));
        assert_eq!(&l.next().await.unwrap()[..], b"d");
        drop(l);
        assert_eq!(b.listeners(), 0);
    }

    #[tokio::test]
    async fn closing_ends_every_feed() {
        let b = Broadcast::new(10);
        let mut l = b.subscribe();
        let waiting = tokio::spawn(async move { l.next().await });
        tokio::task::yield_now().await;
        b.close();
        assert_eq!(waiting.await.unwrap(), Err(FeedEnd::Closed));
        assert_eq!(b.subscribe().next().await, Err(FeedEnd::Closed));
    }

    #[tokio::test]
    async fn a_listener_a_ring_behind_is_dropped_and_the_others_are_not() {
        let b = Broadcast::new(0);
        let mut slow = b.subscribe();
        let mut fast = b.subscribe();
        for i in 0..RING_CHUNKS + 10 {
            b.publish(Bytes::from(vec![i as u8]));
            assert!(fast.next().await.is_ok());
        }
        assert_eq!(slow.next().await, Err(FeedEnd::TooSlow));
    }
}
