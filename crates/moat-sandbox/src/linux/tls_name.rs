//! The server name a TLS client asks for, read from the first bytes of a tunnel.
//!
//! A `CONNECT` grant is checked on the host the client names in `CONNECT host:port`, and
//! the connection goes to that host's addresses. But one address serves many names (a
//! CDN, a shared host), and TLS picks among them by the server name (SNI) in the
//! ClientHello: a sandboxed tool could `CONNECT granted.example:443` and then ask the same
//! servers for another site. So the proxy reads the ClientHello (rustls parses it; moat
//! sees no keys and decrypts nothing), and the tunnel opens only if its name is the
//! granted host. The bytes read are kept, to be sent on unchanged.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Most bytes read looking for a whole ClientHello (post-quantum key shares make them a
/// few KiB; several records at most).
const MAX_HELLO: usize = 64 * 1024;
/// Time for the client to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What a tunnel's first bytes were.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// Not a TLS handshake (another protocol through the tunnel): nothing to check.
    NotTls,
    /// A ClientHello, with the server name it asks for, if any.
    Tls(Option<String>),
    /// Nothing usable: the client closed, stalled, or sent a broken handshake.
    Unreadable(&'static str),
}

/// Reads `client`'s opening up to a whole ClientHello, keeping every byte read in `seen`.
pub(crate) fn read_opening(client: &TcpStream, seen: &mut Vec<u8>) -> Opening {
    let deadline = Instant::now() + HELLO_TIMEOUT;
    let opening = read_until(client, seen, deadline);
    let _ = client.set_read_timeout(None);
    opening
}

/// Lets the next read wait only until `deadline`: a client sending a byte now and then
/// must not hold a tunnel slot for longer than [`HELLO_TIMEOUT`] in all.
fn wait_until(client: &TcpStream, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    !left.is_zero() && client.set_read_timeout(Some(left)).is_ok()
}

fn read_until(client: &TcpStream, seen: &mut Vec<u8>, deadline: Instant) -> Opening {
    let mut first = [0u8; 1];
    if !wait_until(client, deadline) || client.peek(&mut first).ok() != Some(1) {
        return Opening::Unreadable("the client sent nothing");
    }
    match first[0] {
        // A TLS record of the handshake type: the ClientHello.
        0x16 => {}
        // Other TLS record types (change cipher spec, alert, data, heartbeat) before the
        // ClientHello, or an SSLv2-style hello: a server may skip or accept them and take
        // a ClientHello after, which would go unread.
        0x14 | 0x15 | 0x17 | 0x18 | 0x80.. => {
            return Opening::Unreadable("TLS that does not open with a ClientHello");
        }
        _ => return Opening::NotTls,
    }
    let mut acceptor = rustls::server::Acceptor::default();
    loop {
        if !wait_until(client, deadline) {
            return Opening::Unreadable("no whole TLS ClientHello within 10 s");
        }
        let mut reader = Kept {
            inner: client,
            seen: &mut *seen,
        };
        match acceptor.read_tls(&mut reader) {
            Ok(0) => return Opening::Unreadable("the client closed during its TLS handshake"),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Opening::Unreadable("no whole TLS ClientHello within 10 s");
            }
            Err(_) => return Opening::Unreadable("the TLS ClientHello could not be read"),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let name = accepted.client_hello().server_name().map(str::to_string);
                return Opening::Tls(name);
            }
            Ok(None) if seen.len() < MAX_HELLO => {}
            Ok(None) => return Opening::Unreadable("a TLS ClientHello larger than 64 KiB"),
            Err(_) => return Opening::Unreadable("a TLS ClientHello that does not parse"),
        }
    }
}

/// Reads from `inner`, keeping a copy of what was read.
struct Kept<'a> {
    inner: &'a TcpStream,
    seen: &'a mut Vec<u8>,
}

impl Read for Kept<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&mut &*self.inner).read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// Whether the server name a ClientHello asked for (`None`: none, or an address) is the
/// host the tunnel was granted for. A tunnel to an address literal was granted by
/// address: any name, or none, may follow. A tunnel granted by name needs that name:
/// without one, many servers pick the site by the `Host` header inside, unseen here.
pub(crate) fn name_matches(asked: Option<&str>, host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    asked.is_some_and(|asked| asked.trim_end_matches('.').eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::Arc;

    /// The bytes a real TLS client (rustls) opens with, asking for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// What the proxy reads from a client that sends `bytes` (in `pieces` writes), and
    /// the bytes it kept.
    fn opening_of(bytes: &[u8], pieces: usize) -> (Opening, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let bytes = bytes.to_vec();
        let writer = std::thread::spawn(move || {
            let step = bytes.len().div_ceil(pieces.max(1)).max(1);
            for piece in bytes.chunks(step) {
                client.write_all(piece).unwrap();
                client.flush().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            // Then the client is done: an incomplete handshake ends, not times out.
            let _ = client.shutdown(std::net::Shutdown::Write);
            client
        });
        let mut seen = Vec::new();
        let opening = read_opening(&server, &mut seen);
        drop(writer.join().unwrap());
        (opening, seen)
    }

    #[test]
    fn the_server_name_is_read_whatever_the_pieces_and_every_byte_is_kept() {
        let hello = client_hello("api.example.com");
        for pieces in [1, 2, 7, 50] {
            let (opening, seen) = opening_of(&hello, pieces);
            assert_eq!(
                opening,
                Opening::Tls(Some("api.example.com".into())),
                "{pieces}"
            );
            assert_eq!(seen, hello, "{pieces}");
        }
    }

    #[test]
    fn other_protocols_and_broken_handshakes_are_told_apart() {
        let (opening, seen) = opening_of(b"SSH-2.0-OpenSSH_9.6\r\n", 1);
        assert_eq!(opening, Opening::NotTls);
        assert!(seen.is_empty(), "peeked, not read");
        // A warning alert first, then a ClientHello a server might take after skipping it.
        let mut alert_first = vec![0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0x5a];
        alert_first.extend_from_slice(&client_hello("evil.example"));
        let (opening, _) = opening_of(&alert_first, 1);
        assert_eq!(
            opening,
            Opening::Unreadable("TLS that does not open with a ClientHello")
        );
        // A handshake record of 40 bytes that are no ClientHello.
        let mut broken = vec![0x16, 0x03, 0x01, 0x00, 40];
        broken.extend_from_slice(&[0xff; 40]);
        let (opening, _) = opening_of(&broken, 1);
        assert_eq!(
            opening,
            Opening::Unreadable("a TLS ClientHello that does not parse")
        );
        let (opening, _) = opening_of(&client_hello("x.example")[..20], 1);
        assert_eq!(
            opening,
            Opening::Unreadable("the client closed during its TLS handshake")
        );
    }

    #[test]
    fn names_match_the_granted_host_only() {
        assert!(name_matches(Some("API.Example.com"), "api.example.com"));
        assert!(name_matches(Some("api.example.com."), "api.example.com"));
        assert!(!name_matches(Some("evil.example"), "api.example.com"));
        assert!(!name_matches(
            Some("api.example.com.evil"),
            "api.example.com"
        ));
        assert!(!name_matches(None, "api.example.com"));
        assert!(name_matches(Some("anything.example"), "192.0.2.1"));
        assert!(name_matches(None, "2001:db8::1"));
    }
}
