//! moat's egress proxy for a sandbox with network grants.
//!
//! The sandbox's network namespace has only loopback, where the child opened a listening
//! socket at 127.0.0.1:[`super::plan::PROXY_PORT`] and handed it to moat. This module
//! serves it from moat's side: each connection opens with `CONNECT host:port` (a tunnel,
//! for https) or a plain-HTTP request in absolute form (`GET http://host:port/path`, as
//! `HTTP_PROXY` clients send it); the destination must be granted ([`NetGrant`]) and pass
//! the caller's [`Judge`] (moat's egress policy and resolver), and only then is a TCP
//! connection made to an address the judge returned. A plain request goes on with its
//! target in origin form and `Connection: close`, so every request of the client opens a
//! connection of its own and is checked. Everything else is answered `400`/`403` with the
//! reason, and every decision is logged in the report. Nothing is resolved or connected
//! before both checks. A tunnel carrying TLS opens only if the server name its
//! ClientHello asks for is the granted host ([`super::tls_name`]).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::tls_name::{Opening, name_matches, read_opening};
use crate::outcome::NetEvent;
use crate::spec::{NetGrant, Network};

/// Tunnels open at once; past it, new connections get 503.
const MAX_TUNNELS: usize = 32;
/// Largest request head.
const MAX_HEAD: usize = 8 * 1024;
/// Time for a client to send its request head, and for a destination to accept.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Decisions kept for the report, of each kind: allowed connections cannot crowd the
/// refusals (which the audit log records) out. Past the cap, one last event counts the
/// rest.
const MAX_EVENTS: usize = 256;
/// The destination logged for a connection refused before it named one.
const UNPARSED: &str = "(no destination)";
/// The destination of the event that counts decisions past [`MAX_EVENTS`].
const UNTOLD: &str = "(more connections)";

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
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .remove(&id);
    }

    fn stopped(&self) -> bool {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    fn log(&self, destination: String, allowed: bool, reason: String) {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        record(&mut events, destination, allowed, reason);
    }
}

/// Adds one decision to `events`, within [`MAX_EVENTS`] of each kind.
fn record(events: &mut Vec<NetEvent>, destination: String, allowed: bool, reason: String) {
    let kept = events.iter().filter(|e| e.allowed == allowed).count();
    // Past the cap, the last event of the kind counts the rest.
    let counting = events
        .iter_mut()
        .rev()
        .find(|e| e.allowed == allowed)
        .filter(|e| e.destination == UNTOLD);
    if let Some(summary) = counting {
        let before: u64 = summary
            .reason
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        summary.reason = format!("{} more not itemized", before + 1);
    } else if kept < MAX_EVENTS {
        events.push(NetEvent {
            destination,
            allowed,
            reason,
        });
    } else {
        events.push(NetEvent {
            destination: UNTOLD.into(),
            allowed,
            reason: "1 more not itemized".into(),
        });
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
                        let why = "too many connections through the proxy";
                        let _ = answer(&client, 503, why);
                        s.log(UNPARSED.into(), false, why.into());
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
        std::mem::take(
            &mut *self
                .state
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn shut(&mut self) {
        let open = {
            let mut open = self
                .state
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
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

/// What a client asked the proxy for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `CONNECT host:port`: a tunnel.
    Connect { host: String, port: u16 },
    /// A plain-HTTP request in absolute form, with the head to send on in its place.
    Forward {
        host: String,
        port: u16,
        head: Vec<u8>,
    },
}

/// Parses a request head: `CONNECT host:port HTTP/1.x`, or `METHOD http://host[:port]/path
/// HTTP/1.x` with its headers. Hosts come back lowercase, without brackets or a trailing
/// dot.
pub(crate) fn parse_request(head: &[u8]) -> Result<Request, (u16, &'static str)> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end])
        .map_err(|_| (400, "the request line is not text"))?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return Err((400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Err((400, "malformed request line"));
    }
    if method == "CONNECT" {
        let (host, port) = host_port(target, None).ok_or((400, "CONNECT needs host:port"))?;
        return Ok(Request::Connect { host, port });
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err((400, "malformed request line"));
    }
    let Some(rest) = target.strip_prefix("http://") else {
        return Err((
            400,
            "the sandbox's proxy takes CONNECT (for https) or absolute http:// URLs",
        ));
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.contains('@') {
        return Err((400, "credentials in a proxied URL are refused"));
    }
    let (host, port) =
        host_port(authority, Some(80)).ok_or((400, "the URL names no valid host and port"))?;
    let path = path.split('#').next().unwrap_or_default();
    let path = if path.is_empty() || path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(Request::Forward {
        head: forwarded_head(method, &path, version, &head[line_end..], authority),
        host,
        port,
    })
}

/// The head sent on for a plain request: the target in origin form, the headers minus
/// the hop-by-hop ones the proxy itself answers to, `Host` set to the authority that was
/// checked (a client's own `Host` could name an ungranted site that shares the granted
/// server), and `Connection: close` (a later request on the same connection could name
/// another host).
fn forwarded_head(
    method: &str,
    path: &str,
    version: &str,
    rest: &[u8],
    authority: &str,
) -> Vec<u8> {
    let mut out = format!("{method} {path} {version}\r\n").into_bytes();
    for line in rest.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "connection" | "proxy-connection" | "proxy-authorization" | "keep-alive" | "host"
        ) {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Host: {authority}\r\n").as_bytes());
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// `host:port` (or `[v6]:port`; the port may be left out when there is a default).
fn host_port(target: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (h, p) = rest.split_once(']')?;
        match p.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if p.is_empty() => (h, None),
            None => return None,
        }
    } else {
        match target.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (target, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => default_port?,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
        && (host.contains(':') == target.starts_with('['));
    valid.then_some((host, port))
}

fn granted(grants: &[NetGrant], host: &str, port: u16) -> bool {
    grants.iter().any(|g| g.allows(host, port))
}

fn serve(state: &State, id: usize, mut client: TcpStream) {
    let Some(head) = read_head(&mut client) else {
        state.log(
            UNPARSED.into(),
            false,
            "no complete request head (8 KiB at most, within 10 s)".into(),
        );
        return;
    };
    let (host, port, forward) = match parse_request(&head) {
        Ok(Request::Connect { host, port }) => (host, port, None),
        Ok(Request::Forward { host, port, head }) => (host, port, Some(head)),
        Err((status, why)) => {
            let _ = answer(&client, status, why);
            state.log(UNPARSED.into(), false, why.into());
            return;
        }
    };
    let destination = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    if !granted(&state.network.grants, &host, port) {
        let hint = if forward.is_some() && granted(&state.network.grants, &host, 443) {
            " (a grant without a port means 443; grant HOST:80 for http)"
        } else {
            ""
        };
        let why = format!("{destination} is not granted to this sandbox{hint}");
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
    let Some(mut upstream) = connect_any(&addrs) else {
        let _ = answer(&client, 502, &format!("cannot connect to {destination}"));
        state.log(destination, false, "connection failed".into());
        return;
    };
    if !state.register(id, &upstream) {
        return;
    }
    let how = match &forward {
        // The upstream's answer goes back as it comes; the proxy adds nothing.
        Some(head) => {
            if upstream.write_all(head).is_err() {
                let _ = answer(&client, 502, &format!("cannot send to {destination}"));
                state.log(destination, false, "connection failed".into());
                return;
            }
            "http"
        }
        None => {
            if answer(&client, 200, "").is_err() {
                return;
            }
            // The name TLS asks for must be the granted host (see `tls_name`); what
            // was read to learn it goes on unchanged.
            let mut opening = Vec::new();
            match read_opening(&client, &mut opening) {
                Opening::Tls(name) if !name_matches(name.as_deref(), &host) => {
                    let why = match name {
                        Some(name) => {
                            let name: String = name.chars().take(253).collect();
                            format!("TLS asked for {name:?}, not the granted host")
                        }
                        None => {
                            "TLS asked for no server name; the granted host must be named".into()
                        }
                    };
                    state.log(destination, false, why);
                    return;
                }
                Opening::Unreadable(why) => {
                    state.log(destination, false, why.into());
                    return;
                }
                Opening::Tls(_) | Opening::NotTls => {}
            }
            if upstream.write_all(&opening).is_err() {
                state.log(destination, false, "connection failed".into());
                return;
            }
            "tunnel"
        }
    };
    state.log(destination, true, how.into());
    tunnel(client, upstream);
}

/// The first of `addrs` that accepts, all within [`CONNECT_TIMEOUT`] together: a name
/// with many dead addresses holds a connection slot no longer than one.
fn connect_any(addrs: &[SocketAddr]) -> Option<TcpStream> {
    let deadline = std::time::Instant::now() + CONNECT_TIMEOUT;
    addrs.iter().find_map(|a| {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        TcpStream::connect_timeout(a, left).ok()
    })
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

    fn connect(head: &[u8]) -> Result<(String, u16), u16> {
        match parse_request(head) {
            Ok(Request::Connect { host, port }) => Ok((host, port)),
            Ok(other) => panic!("not a CONNECT: {other:?}"),
            Err((status, _)) => Err(status),
        }
    }

    #[test]
    fn connect_requests_parse() {
        assert_eq!(
            connect(b"CONNECT Example.COM.:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(("example.com".into(), 443))
        );
        assert_eq!(
            connect(b"CONNECT [::1]:8080 HTTP/1.1\r\n\r\n"),
            Ok(("::1".into(), 8080))
        );
        for bad in [
            &b"CONNECT example.com HTTP/1.1\r\n\r\n"[..],
            b"CONNECT example.com:0 HTTP/1.1\r\n\r\n",
            b"CONNECT ex/ample.com:443 HTTP/1.1\r\n\r\n",
            b"CONNECT example.com:443\r\n\r\n",
            b"CONNECT a b HTTP/1.1 x\r\n\r\n",
            b"CONNECT ::1:443 HTTP/1.1\r\n\r\n",
            b"CONNECT [::1]443 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(connect(bad), Err(400), "{bad:?}");
        }
    }

    #[test]
    fn refusals_are_kept_however_many_connections_were_allowed() {
        let mut events = Vec::new();
        for i in 0..MAX_EVENTS + 10 {
            record(&mut events, format!("ok{i}:443"), true, "granted".into());
        }
        for i in 0..MAX_EVENTS + 3 {
            record(
                &mut events,
                format!("no{i}:443"),
                false,
                "not granted".into(),
            );
        }
        let refused: Vec<_> = events.iter().filter(|e| !e.allowed).collect();
        assert_eq!(refused.len(), MAX_EVENTS + 1);
        assert_eq!(refused[0].destination, "no0:443");
        assert_eq!(refused[MAX_EVENTS].destination, UNTOLD);
        assert_eq!(refused[MAX_EVENTS].reason, "3 more not itemized");
        let allowed = events.iter().rfind(|e| e.allowed).unwrap();
        assert_eq!(allowed.reason, "10 more not itemized");
    }

    #[test]
    fn plain_requests_go_on_in_origin_form_and_close() {
        // The client's Host names another site on the same server: the checked authority
        // replaces it.
        let head = b"POST http://API.example:8080/v1/x?q=1#frag HTTP/1.1\r\nHost: ungranted.example\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n";
        let Ok(Request::Forward { host, port, head }) = parse_request(head) else {
            panic!("not forwarded");
        };
        assert_eq!((host.as_str(), port), ("api.example", 8080));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /v1/x?q=1 HTTP/1.1\r\nContent-Length: 2\r\nHost: API.example:8080\r\nConnection: close\r\n\r\n"
        );
        // Port 80 by default; a Host header is added when missing; an empty path is /.
        let Ok(Request::Forward { host, port, head }) =
            parse_request(b"GET http://[::1]?x HTTP/1.0\r\n\r\n")
        else {
            panic!("not forwarded");
        };
        assert_eq!((host.as_str(), port), ("::1", 80));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /?x HTTP/1.0\r\nHost: [::1]\r\nConnection: close\r\n\r\n"
        );
        for bad in [
            &b"GET https://example.com/ HTTP/1.1\r\n\r\n"[..],
            b"GET /relative HTTP/1.1\r\n\r\n",
            b"GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n",
            b"GET http://example.com:99999/ HTTP/1.1\r\n\r\n",
            b"GET http:///path HTTP/1.1\r\n\r\n",
            b"get http://example.com/ HTTP/1.1\r\n\r\n",
            b"GET http://example.com/ SPDY/3\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad).err().map(|e| e.0), Some(400), "{bad:?}");
        }
    }
}
