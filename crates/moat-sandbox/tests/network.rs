//! Network grants: the command reaches granted destinations through moat's egress proxy
//! on its loopback, and nothing else; every refusal says why and is in the report.
//!
//! Real namespaces and a real python3 client inside; the host side is a listener on the
//! host's 127.0.0.1 (the only kind of address tests may use), which the judge here lets
//! through as moat's egress policy would with `egress.allow_cidrs = ["127.0.0.1/32"]`.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use moat_sandbox::{Judge, NetGrant, Network, Report, Spec, run};

/// The judge of these tests: the host's 127.0.0.1 only, as moat's egress policy with
/// `egress.allow_cidrs = ["127.0.0.1/32"]` would let through.
fn loopback_judge() -> Judge {
    Arc::new(|host: &str, port: u16| match host {
        "127.0.0.1" => Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]),
        _ => Err(format!("refused by moat's egress policy ({host})")),
    })
}

/// Runs the python3 `script` (with `port` as its argument) in a sandbox granted
/// `grants` and judged by `judge`: the report and the script's output.
fn python_with_grants(
    script: &str,
    port: u16,
    grants: &[String],
    judge: Judge,
) -> (Report, String) {
    let ws = tempfile::tempdir().unwrap();
    let mut spec = Spec::new(
        "/usr/bin/python3",
        ["-c", script, &port.to_string()],
        ws.path(),
    );
    spec.network = Some(Network {
        grants: grants.iter().map(|g| NetGrant::parse(g).unwrap()).collect(),
        judge,
    });
    let report = run(&spec).unwrap_or_else(|e| panic!("the sandbox could not start: {e}"));
    let out = String::from_utf8_lossy(&report.stdout).into_owned();
    assert!(report.outcome.success(), "{report:?}\n{out}");
    (report, out)
}

/// The proxy's decisions in the report: allowed or not, and why.
fn decisions(report: &Report) -> Vec<(bool, &str)> {
    (report.network_log.iter())
        .map(|e| (e.allowed, e.reason.as_str()))
        .collect()
}

/// A host service answering each line with `pong:LINE`; counts its connections.
fn host_service() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_ok() {
                let _ = writeln!(&conn, "pong:{}", line.trim());
            }
        }
    });
    (port, seen)
}

const CLIENT: &str = r#"
import os, socket, sys
port = int(sys.argv[1])
print("proxy", os.environ.get("HTTPS_PROXY"))
def ask(head, then=None):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(head.encode())
    got = b""
    while b"\r\n\r\n" not in got:
        c = s.recv(1)
        if not c:
            break
        got += c
    status = got.split(b" ")[1].decode() if got else "none"
    if status == "200" and then:
        s.sendall(then.encode())
        status += " " + s.makefile().readline().strip()
    elif status != "200":
        status += " " + s.recv(4096).decode().strip()
    return status
print("granted", ask(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n", "ping\n"))
print("other-port", ask(f"CONNECT 127.0.0.1:{port + 1} HTTP/1.1\r\n\r\n"))
print("policy", ask("CONNECT refused.example:443 HTTP/1.1\r\n\r\n"))
print("https-absolute", ask(f"GET https://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n"))
try:
    socket.create_connection(("127.0.0.1", port), timeout=3)
    print("direct CONNECTED")
except OSError as e:
    print("direct refused", type(e).__name__)
"#;

#[test]
fn granted_destinations_only_through_the_proxy() {
    let (port, seen) = host_service();
    let grants = [format!("127.0.0.1:{port}"), "refused.example".into()];
    let (report, out) = python_with_grants(CLIENT, port, &grants, loopback_judge());
    assert!(out.contains("proxy http://127.0.0.1:3128"), "{out}");
    assert!(out.contains("granted 200 pong:ping"), "{out}");
    assert!(
        out.contains(&format!(
            "other-port 403 moat: 127.0.0.1:{} is not granted",
            port + 1
        )),
        "{out}"
    );
    assert!(
        out.contains("policy 403 moat: refused.example:443: refused by moat's egress policy"),
        "{out}"
    );
    assert!(
        out.contains("https-absolute 400 moat: the sandbox's proxy takes CONNECT"),
        "{out}"
    );
    assert!(out.contains("direct refused"), "{out}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "only the tunnel reached the host"
    );
    assert!(report.enforcement.network);
    assert_eq!(
        decisions(&report),
        [
            (true, "tunnel"),
            (false, "not granted"),
            (false, "refused by moat's egress policy (refused.example)"),
            (
                false,
                "the sandbox's proxy takes CONNECT (for https) or absolute http:// URLs"
            ),
        ],
        "{:?}",
        report.network_log
    );
}

/// A host HTTP server that answers each request with its request line and headers as the
/// body; counts its connections.
fn host_http() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            head.push_str(&format!("body={}", String::from_utf8_lossy(&body)));
            let _ = write!(
                &conn,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{head}",
                head.len()
            );
        }
    });
    (port, seen)
}

/// Python's own HTTP client, proxied by the environment the sandbox sets.
const URLLIB: &str = r#"
import sys, urllib.request, urllib.error
port = int(sys.argv[1])
def show(name, req):
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            print(name, r.status, repr(r.read().decode()))
    except urllib.error.HTTPError as e:
        print(name, e.code, repr(e.read().decode()))
show("get", f"http://127.0.0.1:{port}/hello?x=1")
show("post", urllib.request.Request(f"http://127.0.0.1:{port}/submit", data=b"a=1&b=2"))
show("other-port", f"http://127.0.0.1:{port + 1}/")
"#;

#[test]
fn plain_http_goes_through_the_proxy_one_checked_request_per_connection() {
    let (port, seen) = host_http();
    let grants = [format!("127.0.0.1:{port}")];
    let (report, out) = python_with_grants(URLLIB, port, &grants, loopback_judge());
    let get = out
        .lines()
        .find(|l| l.starts_with("get "))
        .unwrap_or_default();
    // Origin form, the client's own Host, and a connection of its own.
    assert!(
        get.starts_with("get 200 'GET /hello?x=1 HTTP/1.1\\r\\n"),
        "{out}"
    );
    assert!(get.contains(&format!("Host: 127.0.0.1:{port}")), "{out}");
    assert!(
        get.contains("Connection: close") && !get.contains("keep-alive"),
        "{out}"
    );
    assert!(out.contains("post 200 'POST /submit HTTP/1.1"), "{out}");
    assert!(out.contains("body=a=1&b=2'"), "{out}");
    assert!(
        out.contains(&format!(
            "other-port 403 'moat: 127.0.0.1:{} is not granted to this sandbox",
            port + 1
        )),
        "{out}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2, "{out}");
    assert_eq!(
        decisions(&report),
        [(true, "http"), (true, "http"), (false, "not granted")]
    );
}

#[test]
fn without_grants_there_is_no_proxy() {
    let ws = tempfile::tempdir().unwrap();
    let report = run(&Spec::new(
        "/usr/bin/python3",
        [
            "-c",
            "import os, socket\nprint(os.environ.get('HTTPS_PROXY'))\ntry:\n socket.create_connection(('127.0.0.1', 3128), timeout=3)\n print('reached')\nexcept OSError as e:\n print('no proxy', type(e).__name__)",
        ],
        ws.path(),
    ))
    .unwrap_or_else(|e| panic!("the sandbox could not start: {e}"));
    let out = String::from_utf8_lossy(&report.stdout);
    assert!(out.contains("None\nno proxy"), "{out}");
    assert!(report.network_log.is_empty());
}

#[test]
fn grants_without_isolation_are_refused() {
    let ws = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("/bin/true", Vec::<String>::new(), ws.path());
    spec.level = moat_sandbox::Level::None;
    spec.network = Some(Network {
        grants: vec![NetGrant::parse("example.com").unwrap()],
        judge: Arc::new(|_: &str, _: u16| Err("unused".into())),
    });
    match run(&spec) {
        Err(moat_sandbox::SandboxError::Invalid(why)) => {
            assert!(why.contains("none level"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A tool that tunnels to a granted name and then asks TLS for another site behind the
/// same addresses (domain fronting).
const FRONTING: &str = r#"
import socket, ssl, sys
port = int(sys.argv[1])
def tls_through_tunnel(server_hostname):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(f"CONNECT granted.test:{port} HTTP/1.1\r\n\r\n".encode())
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(1)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.wrap_socket(s, server_hostname=server_hostname).close()
        return "handshake done"
    except (OSError, ssl.SSLError) as e:
        return type(e).__name__
print("other", tls_through_tunnel("other.test"))
print("same", tls_through_tunnel("granted.test"))
"#;

/// A host service that keeps the first bytes of each connection that sends any.
fn recording_service() -> (u16, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = got.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            if let Ok(n @ 1..) = conn.read(&mut buf) {
                record.lock().unwrap().push(buf[..n].to_vec());
            }
        }
    });
    (port, got)
}

#[test]
fn a_tunnel_opens_only_for_the_tls_name_it_was_granted_for() {
    let (port, received) = recording_service();
    let judge: Judge = Arc::new(|host: &str, port: u16| match host {
        "granted.test" => Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]),
        _ => Err(format!("refused by moat's egress policy ({host})")),
    });
    let grants = [format!("granted.test:{port}")];
    let (report, out) = python_with_grants(FRONTING, port, &grants, judge);
    // Only the ClientHello asking for the granted name reached the host (which is no TLS
    // server, so that handshake fails there).
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "{out}");
    let granted_name = received[0].windows(12).any(|w| w == b"granted.test");
    assert!(granted_name && received[0][0] == 0x16, "{out}");
    assert_eq!(
        decisions(&report),
        [
            (false, "TLS asked for \"other.test\", not the granted host"),
            (true, "tunnel"),
        ],
        "{:?}",
        report.network_log
    );
}
