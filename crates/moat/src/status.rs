//! `moat status`: asks the running server for `/status` with the control token.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, anyhow};
use moat_core::home::Home;

use crate::Failure;

/// Where the running server listens (a wildcard address made loopback), whether with
/// TLS, and its control token: what the server itself recorded, so the token goes to
/// that server only.
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: bool,
    pub(crate) token: String,
}

pub(crate) fn endpoint(home: &Home) -> Result<Endpoint, Failure> {
    let not_running = || {
        Failure::runtime(anyhow!(
            "no server is running with MOAT_HOME {} (no {}): start it with `moat serve`",
            home.root().display(),
            home.serve_info().display()
        ))
    };
    let info: serde_json::Value = std::fs::read_to_string(home.serve_info())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(not_running)?;
    let mut addr: SocketAddr = info["main"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            Failure::runtime(anyhow!(
                "{} is damaged; restart `moat serve`",
                home.serve_info().display()
            ))
        })?;
    let token = std::fs::read_to_string(home.control_token())
        .map(|t| t.trim().to_string())
        .map_err(|_| not_running())?;
    moat_core::redact::global().add_known_secret(&token);
    // A wildcard listener is reached through loopback of the same family.
    if addr.ip().is_unspecified() {
        let ip = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        addr = SocketAddr::new(ip, addr.port());
    }
    Ok(Endpoint {
        addr,
        tls: info["tls"].as_bool() == Some(true),
        token,
    })
}

pub(crate) fn run(home: &Home) -> Result<(), Failure> {
    let Endpoint { addr, tls, token } = endpoint(home)?;
    if tls {
        return Err(Failure::usage(anyhow!(
            "the main listener uses TLS, which `moat status` does not speak yet; use \
             curl --cacert CERT -H \"X-Moat-Control-Token: $(cat {})\" https://HOST:{}/status",
            home.control_token().display(),
            addr.port()
        )));
    }
    let body = get(addr, "/status", &token)
        .with_context(|| format!("cannot reach moat at {addr}: is `moat serve` still running?"))
        .map_err(Failure::runtime)?;
    let pretty = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(body);
    println!("{pretty}");
    Ok(())
}

/// A minimal HTTP/1.1 GET; returns the body of a 200 response.
pub(crate) fn get(addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<String> {
    request(addr, "GET", path, token, None)
}

/// A minimal HTTP/1.1 POST of JSON; returns the body of a 200 response.
pub(crate) fn post(
    addr: SocketAddr,
    path: &str,
    token: &str,
    json: &serde_json::Value,
) -> anyhow::Result<String> {
    request(addr, "POST", path, token, Some(json))
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    json: Option<&serde_json::Value>,
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    // Casting waits on speakers (a search, then their answers).
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // The address itself is a Host the server accepts from a loopback peer and otherwise.
    let host = addr.to_string();
    let body = json.map(|j| j.to_string()).unwrap_or_default();
    let content = if json.is_some() {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    } else {
        String::new()
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nX-Moat-Control-Token: {token}\r\n{content}Connection: close\r\n\r\n{body}"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed response"))?;
    let status = head.split(' ').nth(1).unwrap_or("?");
    if status != "200" {
        // moat's own errors carry a sentence meant for the person reading.
        let said = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        return Err(anyhow!("server answered {status}: {said}"));
    }
    Ok(body.to_string())
}
