//! moat's egress proxy for a sandbox with network grants.
//!
//! The sandbox's network namespace has only loopback, where the child opened a listening
//! socket at 127.0.0.1:[`super::plan::PROXY_PORT`] and handed it to moat. This module
//! serves it from moat's side: each connection must open with `CONNECT host:port`, the
//! destination must be granted ([`NetGrant`]) and pass the caller's [`Judge`] (moat's
//! egress policy and resolver), and only then is a TCP tunnel made to an address the
//! judge returned. Everything else is answered `403`/`405` with the reason, and every
//! decision is logged in the report. Nothing is resolved or connected before both checks.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::outcome::NetEvent;
use crate::spec::{NetGrant, Network};

/// Tunnels open at once; past it, new connections get 503.
const MAX_TUNNELS: usize = 32;
/// Largest request head.
const MAX_HEAD: usize = 8 * 1024;
/// Time for a client to send its request head, and for a destination to accept.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Decisions kept for the report.
const MAX_EVENTS: usize = 256;

/// A running proxy; [`Proxy::stop`] ends it and every tunnel.
pub struct Proxy {
    listener: TcpListener,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

struct State {
    network: Network,
    events: Mutex<Vec<NetEvent>>,
    /// Whether the proxy stopped, and the sockets of every connection being served
    /// (from accept on), to shut down when it stops: one lock, so no connection can
    /// register after the stop and outlive it.
    open: Mutex<(bool, HashMap<usize, Vec<TcpStream>>)>,
    tunnels: AtomicUsize,
    next_id: AtomicUsize,
}

impl State {
    /// Keeps a clone of `stream` under connection `id`; false (and the stream shut) when
    /// the proxy already stopped.
    fn register(&self, id: usize, stream: &TcpStream) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 {
            let _ = stream.shutdown(Shutdown::Both);
            return false;
        }
        if let Ok(c) = stream.try_clone() {
            open.1.entry(id).or_default().push(c);
        }
        true
    }

    fn forget(&self, id: usize) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .remove(&id);
    }

    fn stopped(&self) -> bool {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    fn log(&self, destination: String, allowed: bool, reason: String) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() < MAX_EVENTS {
            events.push(NetEvent {
                destination,
                allowed,
                reason,
            });
        }
    }
}

impl Proxy {
    /// Serves `listener` (the socket the child opened) for `network`.
    pub fn start(listener: OwnedFd, network: &Network) -> io::Result<Proxy> {
        let listener = TcpListener::from(listener);
        let serving = listener.try_clone()?;
        let state = Arc::new(State {
            network: network.clone(),
            events: Mutex::new(Vec::new()),
            open: Mutex::new((false, HashMap::new())),
            tunnels: AtomicUsize::new(0),
            next_id: AtomicUsize::new(0),
        });
        let s = state.clone();
        let accept = std::thread::Builder::new()
            .name("moat-sandbox-proxy".into())
            .spawn(move || {
                loop {
                    let client = match serving.accept() {
                        Ok((client, _)) => client,
                        // `stop` shuts the socket down, which fails the accept.
                        Err(_) if s.stopped() => break,
                        // Out of descriptors and the like: later connections still
                        // deserve an answer.
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    };
                    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
                    if !s.register(id, &client) {
                        break;
                    }
                    if s.tunnels.fetch_add(1, Ordering::AcqRel) >= MAX_TUNNELS {
                        s.tunnels.fetch_sub(1, Ordering::AcqRel);
                        let _ = answer(&client, 503, "too many connections through the proxy");
                        s.forget(id);
                        continue;
                    }
                    let mine = s.clone();
                    let spawned = std::thread::Builder::new()
                        .name("moat-sandbox-tunnel".into())
                        .spawn(move || {
                            serve(&mine, id, client);
                            mine.forget(id);
                            mine.tunnels.fetch_sub(1, Ordering::AcqRel);
                        });
                    if spawned.is_err() {
                        s.forget(id);
                        s.tunnels.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })?;
        Ok(Proxy {
            listener,
            state,
            accept: Some(accept),
        })
    }

    /// Stops accepting, breaks every connection, and returns the decisions made.
    pub fn stop(mut self) -> Vec<NetEvent> {
        self.shut();
        std::mem::take(&mut *self.state.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn shut(&mut self) {
        let open = {
            let mut open = self.state.open.lock().unwrap_or_else(|p| p.into_inner());
            open.0 = true;
            std::mem::take(&mut open.1)
        };
        // SAFETY: shutdown on a socket this struct owns; it wakes the blocked accept.
        unsafe {
            libc::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(&self.listener),
                libc::SHUT_RDWR,
            );
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for stream in open.into_values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A proxy dropped without `stop` (an error on the way) still ends everything.
impl Drop for Proxy {
    fn drop(&mut self) {
        self.shut();
    }
}

fn answer(mut client: &TcpStream, status: u16, why: &str) -> io::Result<()> {
    let reason = match status {
        200 => "Connection Established",
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        502 => "Bad Gateway",
        _ => "Service Unavailable",
    };
    let body = if why.is_empty() {
        String::new()
    } else {
        format!("moat: {why}\n")
    };
    write!(
        client,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads the request head (up to the blank line), bounded in size and time.
fn read_head(client: &mut TcpStream) -> Option<Vec<u8>> {
    client.set_read_timeout(Some(HEAD_TIMEOUT)).ok()?;
    let deadline = std::time::Instant::now() + HEAD_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the head may be consumed, it belongs to the tunnel.
    // The whole head within the timeout too, not just each byte of it.
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_HEAD
            || std::time::Instant::now() > deadline
            || client.read(&mut byte).ok()? == 0
        {
            return None;
        }
        head.push(byte[0]);
    }
    client.set_read_timeout(None).ok()?;
    Some(head)
}

/// `CONNECT host:port HTTP/1.x` → the lowercase host (no brackets, no trailing dot) and
/// the port.
pub(crate) fn parse_connect(head: &[u8]) -> Result<(String, u16), (u16, &'static str)> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .map_err(|_| (400, "the request line is not text"))?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if method != Some("CONNECT") {
        return Err((
            405,
            "the sandbox's proxy only tunnels (CONNECT): use https:// URLs",
        ));
    }
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) || parts.next().is_some() {
        return Err((400, "malformed CONNECT request"));
    }
    let target = target.unwrap_or_default();
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or((400, "CONNECT needs host:port"))?;
        (h, p)
    } else {
        target
            .rsplit_once(':')
            .ok_or((400, "CONNECT needs host:port"))?
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or((400, "CONNECT needs a port from 1 to 65535"))?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
    {
        return Err((400, "CONNECT names no valid host"));
    }
    Ok((host, port))
}

fn granted(grants: &[NetGrant], host: &str, port: u16) -> bool {
    grants.iter().any(|g| g.allows(host, port))
}

fn serve(state: &State, id: usize, mut client: TcpStream) {
    let Some(head) = read_head(&mut client) else {
        return;
    };
    let (host, port) = match parse_connect(&head) {
        Ok(target) => target,
        Err((status, why)) => {
            let _ = answer(&client, status, why);
            return;
        }
    };
    let destination = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    if !granted(&state.network.grants, &host, port) {
        let why = format!("{destination} is not granted to this sandbox");
        let _ = answer(&client, 403, &why);
        state.log(destination, false, "not granted".into());
        return;
    }
    let addrs = match (state.network.judge)(&host, port) {
        Ok(addrs) => addrs,
        Err(why) => {
            let _ = answer(&client, 403, &format!("{destination}: {why}"));
            state.log(destination, false, why);
            return;
        }
    };
    let Some(upstream) = connect_any(&addrs) else {
        let _ = answer(&client, 502, &format!("cannot connect to {destination}"));
        state.log(destination, false, "connection failed".into());
        return;
    };
    if !state.register(id, &upstream) || answer(&client, 200, "").is_err() {
        return;
    }
    state.log(destination, true, "tunnel".into());
    tunnel(client, upstream);
}

fn connect_any(addrs: &[SocketAddr]) -> Option<TcpStream> {
    addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, CONNECT_TIMEOUT).ok())
}

/// Copies both ways until either side is done; `stop` can break it from outside (both
/// sockets are registered).
fn tunnel(client: TcpStream, upstream: TcpStream) {
    let (Ok(mut client_r), Ok(mut upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::Builder::new()
        .name("moat-sandbox-tunnel".into())
        .spawn(move || {
            let _ = io::copy(&mut client_r, &mut upstream_w);
            let _ = upstream_w.shutdown(Shutdown::Write);
        });
    let (mut upstream_r, mut client_w) = (upstream, client);
    let _ = io::copy(&mut upstream_r, &mut client_w);
    let _ = client_w.shutdown(Shutdown::Write);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_requests_parse() {
        assert_eq!(
            parse_connect(b"CONNECT Example.COM.:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(("example.com".into(), 443))
        );
        assert_eq!(
            parse_connect(b"CONNECT [::1]:8080 HTTP/1.1\r\n\r\n"),
            Ok(("::1".into(), 8080))
        );
        assert_eq!(
            parse_connect(b"GET http://x/ HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .0,
            405
        );
        for bad in [
            &b"CONNECT example.com HTTP/1.1\r\n\r\n"[..],
            b"CONNECT example.com:0 HTTP/1.1\r\n\r\n",
            b"CONNECT ex/ample.com:443 HTTP/1.1\r\n\r\n",
            b"CONNECT example.com:443\r\n\r\n",
            b"CONNECT a b HTTP/1.1 x\r\n\r\n",
        ] {
            assert_eq!(parse_connect(bad).unwrap_err().0, 400, "{bad:?}");
        }
    }
}
