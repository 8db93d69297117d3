//! Test harness: runs the real `moat` binary in a temporary MOAT_HOME and talks to it over
//! real sockets with a raw HTTP/1.1 client, so tests control every header byte.
#![allow(dead_code)]

pub(crate) mod upstream;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_moat");

/// A running `moat serve`.
pub(crate) struct Moat {
    pub child: Child,
    pub home: tempfile::TempDir,
    pub main: SocketAddr,
    pub lan: Option<SocketAddr>,
    stderr_path: PathBuf,
    stdout_lines: Vec<String>,
}

/// A `moat` command in a fresh home, with the environment cleared of the host's MOAT_*.
pub(crate) fn moat_cmd(home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("MOAT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("MOAT_HOME", home);
    cmd.env("MOAT_SEAL_DIR", seal_dir());
    // Tests that want the OS keyring ask for it; the rest must not depend on the host having one.
    cmd.env("MOAT_SEAL_STORE", "file");
    cmd
}

/// Where tests keep seal secrets: outside every test home, and not in the real ~/.local.
pub(crate) fn seal_dir() -> PathBuf {
    std::env::temp_dir().join("moat-test-seal")
}

/// A fresh home with mode 0700, as `moat serve` would create it.
pub(crate) fn new_home() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("moat-test-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

impl Moat {
    /// Starts `moat serve` with `args` and `env` on an ephemeral loopback port unless
    /// `args` chooses a listener, and waits until it listens.
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> Moat {
        Self::start_in(new_home(), args, env, None)
    }

    /// Like [`Moat::start`], in an existing home, optionally wrapped (e.g. `ip netns exec NS`).
    pub(crate) fn start_in(
        home: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
        wrap: Option<&[&str]>,
    ) -> Moat {
        let stderr_path = home.path().join("stderr.log");
        let stderr_file = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = match wrap {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg(BIN);
                for (k, _) in std::env::vars() {
                    if k.starts_with("MOAT_") {
                        c.env_remove(k);
                    }
                }
                c.env("MOAT_HOME", home.path());
                c.env("MOAT_SEAL_DIR", seal_dir());
                c.env("MOAT_SEAL_STORE", "file");
                c
            }
            None => moat_cmd(home.path()),
        };
        cmd.arg("serve");
        if !args.contains(&"--listen") && !env.iter().any(|(k, _)| *k == "MOAT_LISTEN") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr_file);
        let mut child = cmd.spawn().expect("spawn moat");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut main, mut lan) = (None, None);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("moat: main listener on ") {
                        main = Some(parse_url_addr(rest));
                    }
                    if let Some(rest) = line.strip_prefix("moat: lan listener on ") {
                        lan = Some(parse_url_addr(rest));
                    }
                    let done = line.starts_with("moat: control token in");
                    lines.push(line);
                    if done {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                        panic!("moat exited early with {status}: {err}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let main = main.unwrap_or_else(|| {
            let _ = child.kill();
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("moat did not report a listener; stdout {lines:?}; stderr {err}")
        });
        Moat {
            child,
            home,
            main,
            lan,
            stderr_path,
            stdout_lines: lines,
        }
    }

    pub(crate) fn token(&self) -> String {
        std::fs::read_to_string(self.home.path().join("control.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub(crate) fn host(&self) -> String {
        self.main.to_string()
    }

    /// Sends SIGTERM and waits for exit; returns the exit status code.
    pub(crate) fn terminate(&mut self) -> Option<i32> {
        signal(self.child.id(), "TERM");
        self.wait_exit()
    }

    /// Waits up to 30 s for the process to exit; returns its exit code.
    pub(crate) fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("moat did not exit within 30s");
    }

    /// Everything moat wrote to stdout (until start) and stderr so far.
    pub(crate) fn output(&self) -> String {
        let mut s = self.stdout_lines.join("\n");
        s.push('\n');
        s.push_str(&std::fs::read_to_string(&self.stderr_path).unwrap_or_default());
        s
    }
}

impl Drop for Moat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

fn parse_url_addr(url: &str) -> SocketAddr {
    let rest = url.split("://").nth(1).expect("a URL");
    rest.parse()
        .unwrap_or_else(|_| panic!("bad listener address in {url:?}"))
}

/// A parsed HTTP response.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    /// Asserts the three security headers are present.
    pub(crate) fn assert_security_headers(&self) {
        assert_eq!(
            self.header("x-content-type-options"),
            Some("nosniff"),
            "{self:?}"
        );
        assert_eq!(self.header("x-frame-options"), Some("DENY"), "{self:?}");
        assert_eq!(self.header("cache-control"), Some("no-store"), "{self:?}");
    }
}

/// Sends raw request bytes (the caller writes the whole head) and reads one response.
pub(crate) fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // The server may refuse before reading everything; a failed write is fine then.
    let _ = s.write_all(request);
    read_response(&mut s)
}

/// Reads one response (until the connection closes or content-length is satisfied).
pub(crate) fn read_response(s: &mut TcpStream) -> Resp {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let (status, headers) = parse_head(&buf[..end]);
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = String::from_utf8_lossy(&buf[end + 4..]).to_string();
            return Resp {
                status,
                headers,
                body,
            };
        }
        match s.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed before a response: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read failed: {e}; got {:?}", String::from_utf8_lossy(&buf)),
        }
    }
}

/// The status and the headers (names lowercased) of a response head.
fn parse_head(head: &[u8]) -> (u16, HashMap<String, String>) {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response head: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A GET with the given extra header lines; `Host` is the listener address unless given.
pub(crate) fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    raw(addr, req.as_bytes())
}

/// Runs `moat ARGS` to completion in `home` with `env`; returns (code, stdout, stderr).
/// A command still running after 60 s is killed and the test fails.
/// Runs `moat ARGS` in `home` feeding `stdin`, and returns (exit code, stdout, stderr).
pub(crate) fn run_moat_stdin(home: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = moat_cmd(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn run_moat(home: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let child = moat_cmd(home)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            signal(pid, "KILL");
            panic!("`moat {}` still running after 60s", args.join(" "));
        }
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A self-signed certificate for `names` (DNS names or IPs), written as PEM into `dir`.
pub(crate) fn self_signed(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// POSTs JSON and reads the whole response (de-chunked); the connection then closes.
pub(crate) fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let end = find(&buf, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&buf)));
    let (status, headers) = parse_head(&buf[..end]);
    let raw_body = &buf[end + 4..];
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(data, b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..line_end]).to_string();
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        data = &data[line_end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// The `data:` payloads of an SSE body, with their event names.
pub(crate) fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for block in body.replace("\r\n", "\n").split("\n\n") {
        let mut event = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.trim_start().to_string());
            }
        }
        if !data.is_empty() {
            out.push((event, data.join("\n")));
        }
    }
    out
}
