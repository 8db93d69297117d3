//! End-to-end: the real `moat` binary on real loopback sockets.
#![allow(clippy::unwrap_used)] // a failing unwrap in a test is the test failing

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn health_is_open_minimal_and_carries_security_headers() {
    let moat = Moat::start(&[], &[]);
    let r = get(moat.main, "/health", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
    r.assert_security_headers();
    // Open routes need no Host check: a foreign Host still gets liveness and nothing else.
    let r = get(moat.main, "/health", &[("Host", "evil.example")]);
    assert_eq!(r.status, 200);
}

#[test]
fn control_route_on_loopback_needs_local_host_local_origin_and_token() {
    let moat = Moat::start(&[], &[]);
    let token = moat.token();
    let port = moat.main.port();
    let local_host = format!("localhost:{port}");
    let evil_host = format!("evil.example:{port}");
    let own_origin = format!("http://127.0.0.1:{port}");

    let ok = get(moat.main, "/status", &[("X-Moat-Control-Token", &token)]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let status = ok.json();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["listeners"][0]["kind"], "main");
    assert!(status["uptime_secs"].is_u64());
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get(moat.main, "/status", &[("Authorization", &bearer)]).status,
        200
    );
    assert_eq!(
        get(
            moat.main,
            "/status",
            &[("Host", &local_host), ("X-Moat-Control-Token", &token)]
        )
        .status,
        200
    );
    assert_eq!(
        get(
            moat.main,
            "/status",
            &[("Origin", &own_origin), ("X-Moat-Control-Token", &token)]
        )
        .status,
        200
    );

    // The same token with its last hex digit changed (to a digit it is not).
    let last = if token.ends_with('0') { '1' } else { '0' };
    let wrong_token = format!("{}{last}", &token[..token.len() - 1]);
    let refused: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no token", vec![]),
        ("wrong token", vec![("X-Moat-Control-Token", &wrong_token)]),
        (
            "foreign Host (DNS rebinding)",
            vec![("Host", &evil_host), ("X-Moat-Control-Token", &token)],
        ),
        (
            "loopback Host, wrong port",
            vec![("Host", "localhost:1"), ("X-Moat-Control-Token", &token)],
        ),
        (
            "cross-site Origin",
            vec![
                ("Origin", "https://evil.example"),
                ("X-Moat-Control-Token", &token),
            ],
        ),
        (
            "null Origin",
            vec![("Origin", "null"), ("X-Moat-Control-Token", &token)],
        ),
        (
            "other local port Origin",
            vec![
                ("Origin", "http://localhost:1"),
                ("X-Moat-Control-Token", &token),
            ],
        ),
    ];
    for (what, headers) in refused {
        let r = get(moat.main, "/status", &headers);
        assert_eq!(r.status, 403, "{what}: {r:?}");
        r.assert_security_headers();
        assert!(r.json()["error"]["code"].is_string(), "{what}");
        assert!(!r.body.contains(&token), "{what}: token echoed");
    }
}

#[test]
fn unknown_path_wrong_method_and_oversized_or_slow_bodies() {
    let moat = Moat::start(
        &[],
        &[
            ("MOAT_BODY_READ_TIMEOUT", "1s"),
            ("MOAT_HEADER_TIMEOUT", "1s"),
        ],
    );
    let host = moat.host();

    let r = get(moat.main, "/no/such/route", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "forbidden");
    r.assert_security_headers();

    let r = raw(
        moat.main,
        format!("DELETE /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 405);
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{r:?}"
    );
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    r.assert_security_headers();

    // Declared too large: refused before the body is read.
    let limit = 10 * 1024 * 1024;
    let mut req = format!(
        "POST /health HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        limit + 1
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b'x', limit + 1));
    let r = raw(moat.main, &req);
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    r.assert_security_headers();

    // Chunked, no length: refused as soon as it grows past the limit.
    let mut s = TcpStream::connect(moat.main).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /v1/models HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'y'; 1024 * 1024];
    for _ in 0..11 {
        if write!(s, "{:x}\r\n", chunk.len())
            .and_then(|()| s.write_all(&chunk))
            .and_then(|()| s.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
    }
    let r = read_response(&mut s);
    assert_eq!(r.status, 413, "{r:?}");
    r.assert_security_headers();

    // Exactly at the limit is fine.
    let mut req = format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nContent-Length: {limit}\r\nConnection: close\r\n\r\n").into_bytes();
    req.extend(std::iter::repeat_n(b'x', limit));
    assert_eq!(raw(moat.main, &req).status, 200);

    // Slow-loris body: 408 once body_read_timeout passes.
    let mut s = TcpStream::connect(moat.main).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /v1/models HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\n\r\nabc"
    )
    .unwrap();
    let started = Instant::now();
    let r = read_response(&mut s);
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "request_timeout");
    r.assert_security_headers();
    assert!(started.elapsed() < Duration::from_secs(20));

    // Slow-loris headers: 408 too, with the security headers.
    let mut s = TcpStream::connect(moat.main).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /health HTTP/1.1\r\nHost: {host}\r\nX-Slow: ").unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 408, "{r:?}");
    r.assert_security_headers();

    // An idle keep-alive connection is closed without a stray 408.
    let mut s = TcpStream::connect(moat.main).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 200);
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    assert!(
        rest.is_empty(),
        "idle connection got: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let moat = Moat::start(
        &[],
        &[
            ("MOAT_RATE_LIMIT_LOOPBACK_PER_SECOND", "1"),
            ("MOAT_RATE_LIMIT_LOOPBACK_BURST", "3"),
        ],
    );
    let key = [("x-api-key", "program-a")];
    let statuses: Vec<u16> = (0..6)
        .map(|_| get(moat.main, "/health", &key).status)
        .collect();
    assert!(statuses.starts_with(&[200, 200, 200]), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = get(moat.main, "/health", &key);
    assert_eq!(r.status, 429);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    r.assert_security_headers();
    // The refusal names the limit, and another local program is not held back by it.
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("1 requests/s (burst 3)")
            && message.contains("rate_limit.loopback_per_second"),
        "{message}"
    );
    assert_eq!(
        get(moat.main, "/health", &[("x-api-key", "program-b")]).status,
        200
    );
}

/// Every program on this machine is 127.0.0.1: the per-address limit is for remote
/// peers, and a local burst far past it is not refused.
#[test]
fn local_programs_are_not_held_to_the_per_address_limit() {
    let moat = Moat::start(
        &[],
        &[
            ("MOAT_RATE_LIMIT_PER_SECOND", "1"),
            ("MOAT_RATE_LIMIT_BURST", "2"),
        ],
    );
    let refused = (0..40)
        .filter(|_| get(moat.main, "/health", &[]).status == 429)
        .count();
    assert_eq!(refused, 0);
}

#[test]
fn refuses_a_public_bind_without_auth_and_names_the_setting() {
    let home = new_home();
    let (code, _, err) = run_moat(home.path(), &["serve", "--listen", "0.0.0.0:0"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("0.0.0.0") && err.contains("MOAT_API_KEY") && err.contains("auth"),
        "{err}"
    );

    let (code, _, err) = run_moat(
        home.path(),
        &["serve", "--listen", "0.0.0.0:0"],
        &[("MOAT_API_KEY", "key-canary-0123456789")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("TLS") && err.contains("--allow-insecure-remote"),
        "{err}"
    );
    assert!(!err.contains("key-canary"), "{err}");

    // The same through config.toml.
    std::fs::write(
        home.path().join("config.toml"),
        "[server]\nlisten = \"0.0.0.0:0\"\n",
    )
    .unwrap();
    let (code, _, err) = run_moat(home.path(), &["serve"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("MOAT_API_KEY"), "{err}");
}

#[test]
fn authenticated_public_bind_with_explicit_opt_in_starts_and_warns() {
    let mut moat = Moat::start(
        &["--listen", "0.0.0.0:0", "--allow-insecure-remote"],
        &[("MOAT_API_KEY", "api-key-canary-5678901234")],
    );
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], moat.main.port()));
    assert_eq!(get(local, "/health", &[]).status, 200);
    assert_eq!(moat.terminate(), Some(0));
    let out = moat.output();
    assert!(out.contains("WITHOUT TLS"), "{out}");
    assert!(!out.contains("api-key-canary"), "{out}");
}

#[test]
fn tls_listener_serves_https() {
    let home = new_home();
    let (cert, key) = self_signed(home.path(), &["localhost", "127.0.0.1"]);
    let moat = Moat::start_in(
        home,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
        None,
    );
    let url = format!("https://localhost:{}/health", moat.main.port());
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert", cert.to_str().unwrap(), "--resolve"])
        .arg(format!("localhost:{}:127.0.0.1", moat.main.port()))
        .arg(&url)
        .output()
        .expect("curl is installed (see .ci/run)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"status\":\"ok\"}",
        "{out:?}"
    );
    // Plain HTTP to a TLS port gets no answer.
    let mut s = TcpStream::connect(moat.main).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
}

#[test]
fn lan_listener_routes_only_open_and_lan_classes() {
    let moat = Moat::start(&["--lan-listen", "127.0.0.1:0"], &[]);
    let lan = moat.lan.expect("lan listener reported");
    let token = moat.token();
    assert_eq!(get(lan, "/health", &[]).status, 200);
    let r = get(lan, "/status", &[("X-Moat-Control-Token", &token)]);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.json()["error"]["code"],
        "forbidden",
        "not routed at all on the LAN listener"
    );
    r.assert_security_headers();
    assert_eq!(
        get(moat.main, "/status", &[("X-Moat-Control-Token", &token)]).status,
        200
    );
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests_and_cleans_up() {
    let mut moat = Moat::start(&[], &[]);
    let host = moat.host();
    let token_path = moat.home.path().join("control.token");
    assert!(token_path.exists());

    // A request whose body is still arriving when the signal comes.
    let mut s = TcpStream::connect(moat.main).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\n\r\nab"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    signal(moat.child.id(), "TERM");
    // The listener closes promptly; allow a loaded machine a few seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&moat.main, Duration::from_secs(1)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 5s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s.write_all(b"cd").unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 200, "in-flight request was dropped: {r:?}");

    assert_eq!(moat.wait_exit(), Some(0));
    assert!(!token_path.exists(), "control token left behind");
    let wal = moat.home.path().join("state.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "WAL not checkpointed at shutdown"
    );
}

#[test]
fn canary_secrets_never_reach_logs_or_error_bodies() {
    let key = "sk-ant-api03-CANARYkeyFromEnv0000000000";
    let home = new_home();
    std::fs::write(
        home.path().join("config.toml"),
        "[auth]\napi_key = \"env:CANARY_REF\"\n[log]\nlevel = \"trace\"\n",
    )
    .unwrap();
    let mut moat = Moat::start_in(
        home,
        &["-vv"],
        &[("CANARY_REF", key), ("MOAT_ALLOWED_HOSTS", "localhost")],
        None,
    );
    let token = moat.token();
    let client_canaries = [
        "sk-ant-api03-CANARYfromClientHeader111111",
        "sk-proj-CANARYbearer22222222222222",
        "CANARYquery333333",
        "CANARYjsonPassword444444",
    ];
    let mut bodies = Vec::new();
    // Wrong API keys and secrets in headers, query strings and bodies, on every kind of route.
    for (path, headers) in [
        (
            "/status",
            vec![
                ("x-api-key", client_canaries[0]),
                ("X-Moat-Control-Token", client_canaries[0]),
            ],
        ),
        (
            "/status",
            vec![("Authorization", "Bearer sk-proj-CANARYbearer22222222222222")],
        ),
        (
            "/nope?token=CANARYquery333333&key=CANARYquery333333",
            vec![],
        ),
    ] {
        bodies.push(get(moat.main, path, &headers).body);
    }
    let body = r#"{"password":"CANARYjsonPassword444444"}"#;
    let req = format!(
        "POST /health HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        moat.host(),
        body.len()
    );
    bodies.push(raw(moat.main, req.as_bytes()).body);
    bodies.push(get(moat.main, "/status", &[("X-Moat-Control-Token", &token)]).body);
    assert_eq!(moat.terminate(), Some(0));

    // And through the CLI's error paths.
    let probe = new_home();
    let (_, out1, err1) = run_moat(
        probe.path(),
        &["serve"],
        &[("MOAT_LISTEN", "sk-ant-api03-CANARYbadListen55555")],
    );
    std::fs::write(
        probe.path().join("config.toml"),
        "[auth]\napi_key = \"sk-ant-api03-CANARYinFile666666\"\n",
    )
    .unwrap();
    let (_, out2, err2) = run_moat(probe.path(), &["config", "show"], &[]);

    let everything = format!(
        "{}\n{}\n{out1}{err1}{out2}{err2}",
        moat.output(),
        bodies.join("\n")
    );
    assert!(
        everything.contains("request refused"),
        "the refusals were logged: {everything}"
    );
    for canary in [
        key,
        "CANARYkeyFromEnv",
        "CANARYfromClientHeader",
        "CANARYbearer",
        "CANARYquery",
        "CANARYjsonPassword",
        "CANARYbadListen",
        "CANARYinFile",
    ] {
        assert!(
            !everything.contains(canary),
            "canary {canary} leaked:\n{everything}"
        );
    }
    assert!(!everything.contains(&token), "control token leaked");
}

#[test]
fn cors_admits_only_the_configured_local_origin() {
    let moat = Moat::start(&[], &[("MOAT_CORS_ORIGIN", "http://localhost:5173")]);
    let token = moat.token();
    let host = moat.host();
    let preflight = |origin: &str| {
        raw(
            moat.main,
            format!(
                "OPTIONS /status HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: GET\r\n\
                 Access-Control-Request-Headers: x-moat-control-token\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    let ok = preflight("http://localhost:5173");
    assert!(ok.status < 300, "{ok:?}");
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    ok.assert_security_headers();
    let other = preflight("http://localhost:5174");
    assert_eq!(
        other.header("access-control-allow-origin"),
        None,
        "{other:?}"
    );

    let r = get(
        moat.main,
        "/status",
        &[
            ("Origin", "http://localhost:5173"),
            ("X-Moat-Control-Token", &token),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    let r = get(
        moat.main,
        "/status",
        &[
            ("Origin", "http://localhost:5174"),
            ("X-Moat-Control-Token", &token),
        ],
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn without_a_cors_origin_there_is_no_cors() {
    let moat = Moat::start(&[], &[]);
    let host = moat.host();
    let r = raw(
        moat.main,
        format!(
            "OPTIONS /status HTTP/1.1\r\nHost: {host}\r\nOrigin: http://localhost:5173\r\n\
             Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn bodies_are_not_read_for_unknown_paths_or_refused_callers() {
    let moat = Moat::start(&[], &[("MOAT_BODY_READ_TIMEOUT", "5s")]);
    let host = moat.host();
    for (what, head) in [
        (
            "unknown path",
            format!("POST /nope HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n"),
        ),
        (
            "no control token",
            format!("POST /status HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n"),
        ),
    ] {
        let mut s = TcpStream::connect(moat.main).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(b"only the start of the body").unwrap();
        let started = Instant::now();
        let r = read_response(&mut s);
        assert_eq!(r.status, 403, "{what}: {r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{what}: waited for the body"
        );
    }
}

#[test]
fn buffered_bodies_share_a_budget_and_overflow_gets_503() {
    let moat = Moat::start(
        &[],
        &[
            ("MOAT_MAX_BODY_BYTES", "1048576"),
            ("MOAT_MAX_BUFFERED_BYTES", "1048576"),
            ("MOAT_BODY_READ_TIMEOUT", "5s"),
        ],
    );
    let host = moat.host();
    let small_body = || {
        raw(moat.main, format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz").as_bytes())
    };
    // Idle connections that declare the whole budget and send a byte hold a byte's share,
    // not what they declared: they cannot lock everyone else out.
    let mut idle = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(moat.main).unwrap();
        s.write_all(
            format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1048576\r\n\r\na")
                .as_bytes(),
        )
        .unwrap();
        idle.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let r = small_body();
    assert_eq!(r.status, 200, "idle declarations took the budget: {r:?}");
    drop(idle);
    // A loaded machine can delay the holder past a deadline (seen once in a full parallel
    // run); a fresh holder gets another try, but a budget that never applies still fails.
    let mut last = None;
    let mut holders = Vec::new();
    for _attempt in 0..3 {
        // One slow body that has sent nearly the whole budget holds it...
        let mut first = TcpStream::connect(moat.main).unwrap();
        first
            .write_all(
                format!(
                    "GET /v1/models HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1048576\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
        first.write_all(&vec![b'a'; 1048576 - 10]).unwrap();
        holders.push(first);
        // ...so a second body must wait its turn (once the first has taken its share).
        let deadline = Instant::now() + Duration::from_secs(3);
        let r = loop {
            let r = small_body();
            if r.status == 503 || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let refused = r.status == 503;
        last = Some(r);
        if refused {
            break;
        }
    }
    let r = last.unwrap();
    assert_eq!(
        r.status,
        503,
        "second body never refused: {r:?}\nmoat: {}",
        moat.output()
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    r.assert_security_headers();
    // Requests without a body are unaffected.
    assert_eq!(get(moat.main, "/health", &[]).status, 200);
    drop(holders);
}

#[test]
fn one_server_per_home() {
    let moat = Moat::start(&[], &[]);
    let (code, _, err) = run_moat(moat.home.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another `moat serve`"), "{err}");
    // The first server's token is untouched.
    assert_eq!(
        get(
            moat.main,
            "/status",
            &[("X-Moat-Control-Token", &moat.token())]
        )
        .status,
        200
    );
}

#[test]
fn a_remote_listener_needs_a_long_api_key() {
    let home = new_home();
    let (code, _, err) = run_moat(
        home.path(),
        &["serve", "--listen", "0.0.0.0:0", "--allow-insecure-remote"],
        &[("MOAT_API_KEY", "short-key")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 16"), "{err}");
    assert!(!err.contains("short-key"), "{err}");
}

#[test]
fn connections_per_client_are_capped() {
    let moat = Moat::start(&[], &[("MOAT_MAX_CONNECTIONS_PER_IP", "3")]);
    let health = || {
        format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            moat.host()
        )
    };
    let answered = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        std::io::Read::read(s, &mut buf).unwrap_or(0) > 0
    };
    // Three connections each part way through a request head: none may be closed for
    // another, so the fourth is closed unanswered.
    let busy: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(moat.main).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut over = TcpStream::connect(moat.main).unwrap();
    let _ = over.write_all(health().as_bytes());
    assert!(
        !answered(&mut over),
        "the connection over the cap should be closed unanswered"
    );
    drop(busy);
    std::thread::sleep(Duration::from_millis(200));
    // Three connections opened and left silent: a new connection closes the one that
    // has waited longest (once it has been quiet a second), so the client is never
    // locked out.
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let s = TcpStream::connect(moat.main).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1300));
    let mut next = TcpStream::connect(moat.main).unwrap();
    next.write_all(health().as_bytes()).unwrap();
    assert!(
        answered(&mut next),
        "an idle connection should have made room"
    );
    // The oldest idle connection was the one closed.
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut idle[0], &mut buf).unwrap_or(0), 0);
    drop(idle.drain(..));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        get(moat.main, "/health", &[]).status,
        200,
        "closed connections free their places"
    );
}

#[test]
fn ambiguous_hosts_and_origins_are_refused() {
    let moat = Moat::start(&[], &[]);
    let host = moat.host();
    let token = moat.token();
    let status = |head: String| raw(moat.main, head.as_bytes()).status;
    // The same request is answered when it says one thing once.
    assert_eq!(
        status(format!(
            "GET /status HTTP/1.1\r\nHost: {host}\r\nX-Moat-Control-Token: {token}\r\nConnection: close\r\n\r\n"
        )),
        200
    );
    for (what, head) in [
        (
            "two Host headers, the first local",
            format!(
                "GET /status HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\nX-Moat-Control-Token: {token}\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "an absolute target naming another host",
            format!(
                "GET http://evil.example/status HTTP/1.1\r\nHost: {host}\r\nX-Moat-Control-Token: {token}\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "two Origin headers, the first absent-equivalent local",
            format!(
                "GET /status HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nOrigin: http://evil.example\r\nX-Moat-Control-Token: {token}\r\nConnection: close\r\n\r\n"
            ),
        ),
    ] {
        assert_eq!(status(head), 400, "{what}");
    }
    let port = moat.main.port();
    for odd in [format!("127.0.0.1:+{port}"), format!("127.0.0.1:0{port}")] {
        let head = format!(
            "GET /status HTTP/1.1\r\nHost: {odd}\r\nX-Moat-Control-Token: {token}\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(status(head), 403, "Host: {odd}");
    }
}

#[test]
fn a_header_section_over_64_kib_is_refused() {
    let moat = Moat::start(&[], &[]);
    let host = moat.host();
    let big = "a".repeat(70 * 1024);
    let r = raw(
        moat.main,
        format!(
            "GET /health HTTP/1.1\r\nHost: {host}\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 431, "{r:?}");
    let fits = "a".repeat(32 * 1024);
    let r = raw(
        moat.main,
        format!(
            "GET /health HTTP/1.1\r\nHost: {host}\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
}

/// One local program trickling request heads must not lock every other program out.
#[test]
fn slow_heads_lose_their_places_to_new_connections() {
    let moat = Moat::start(&[], &[("MOAT_MAX_CONNECTIONS_PER_IP", "4")]);
    let host = moat.host();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tricklers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let addr = moat.main;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                // One byte of a head every 300 ms, never finishing it.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.write_all(b"X").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2600));
    let started = Instant::now();
    let mut s = TcpStream::connect(moat.main).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tricklers {
        t.join().unwrap();
    }
}

/// A file others can write (or own) could point a backend at their server, which gets
/// the key at the next start: serve refuses, and says what to run.
#[test]
fn serve_refuses_a_home_others_can_change() {
    use std::os::unix::fs::PermissionsExt;
    let home = new_home();
    let config = home.path().join("config.toml");
    std::fs::write(&config, "[log]\nlevel = \"info\"\n").unwrap();
    let set = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    for (what, path, mode) in [
        ("config 0666", config.clone(), 0o666),
        ("config 0620", config.clone(), 0o620),
        ("home 0777", home.path().to_path_buf(), 0o777),
    ] {
        set(&config, 0o600);
        set(home.path(), 0o700);
        set(&path, mode);
        let (code, out, err) = run_moat(home.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
        assert_eq!(code, 2, "{what}: {out}{err}");
        assert!(
            err.contains("refusing to serve")
                && err.contains(&format!(
                    "chmod {:o}",
                    if path == config { 0o600 } else { 0o700 }
                )),
            "{what}: {err}"
        );
    }
    // Only readable by others: a warning, and it serves.
    set(home.path(), 0o700);
    set(&config, 0o644);
    let mut moat = Moat::start_in(home, &[], &[], None);
    assert_eq!(get(moat.main, "/health", &[]).status, 200);
    moat.terminate();
    assert!(
        moat.output().contains("other users can read it"),
        "{}",
        moat.output()
    );
    // Owned by someone else (only root can arrange that).
    let root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if root {
        let home = new_home();
        let config = home.path().join("config.toml");
        std::fs::write(&config, "").unwrap();
        set(&config, 0o600);
        std::os::unix::fs::chown(&config, Some(65534), Some(65534)).unwrap();
        let (code, _, err) = run_moat(home.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("belongs to uid 65534") && err.contains("chown 0"),
            "{err}"
        );
    }
}

/// Curls `url` on a TLS listener with `cert`, for at most `secs`; its body.
fn curl_tls(cert: &std::path::Path, port: u16, path: &str, extra: &[&str], secs: u64) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", &secs.to_string(), "--cacert"])
        .arg(cert)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl is installed (see scripts/test)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Connections to the TLS listener that never finish a handshake, or sit idle on HTTP/2
/// after one, give way to a new connection of the same client at its limit.
#[test]
fn tls_handshakes_and_idle_http2_connections_cannot_lock_a_client_out() {
    let home = new_home();
    let (cert, key) = self_signed(home.path(), &["localhost", "127.0.0.1"]);
    let moat = Moat::start_in(
        home,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[("MOAT_MAX_CONNECTIONS_PER_IP", "4")],
        None,
    );
    let port = moat.main.port();
    // Four connections that never send a ClientHello.
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(moat.main).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1300));
    let body = curl_tls(&cert, port, "/health", &[], 5);
    assert_eq!(body, "{\"status\":\"ok\"}", "a silent handshake made room");
    drop(silent);
    // HTTP/2 connections held open after their handshake with nothing in flight: idle,
    // so they make room too.
    let held: Vec<std::process::Child> = (0..4)
        .map(|_| {
            std::process::Command::new("openssl")
                .args(["s_client", "-quiet", "-alpn", "h2", "-connect"])
                .arg(format!("127.0.0.1:{port}"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("openssl is installed")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let body = curl_tls(&cert, port, "/health", &["--http2"], 5);
    assert_eq!(body, "{\"status\":\"ok\"}");
    for mut c in held {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A request body trickled a byte at a time holds its place no longer than a trickled
/// head does; and routes that take no body (and preflights) never read one, so no
/// unauthenticated caller fills moat's body budget.
#[test]
fn trickled_bodies_and_unread_bodies_lock_nobody_out() {
    let moat = Moat::start(
        &[],
        &[
            ("MOAT_MAX_CONNECTIONS_PER_IP", "4"),
            ("MOAT_MAX_BODY_BYTES", "1048576"),
            ("MOAT_MAX_BUFFERED_BYTES", "2097152"),
            ("MOAT_BODY_READ_TIMEOUT", "60s"),
        ],
    );
    let host = moat.host();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tricklers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, addr, host) = (stop.clone(), moat.main, host.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let head = format!(
                    "POST /v1/messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).is_err() {
                    return;
                }
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.write_all(b" ").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2600));
    let r = get(moat.main, "/health", &[]);
    assert_eq!(r.status, 200, "a trickled body made room: {r:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tricklers {
        t.join().unwrap();
    }

    // Bodies sent to /health are never read into the budget: half-sent megabytes there
    // leave an API request its share.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(moat.main).unwrap();
            let head =
                format!("POST /health HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1048576\r\n\r\n");
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&vec![b'x'; 512 * 1024]);
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = post_json(moat.main, "/v1/messages", &[],
        &serde_json::json!({"model": "nothing-routes-here", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}).to_string());
    assert_ne!(r.status, 503, "{r:?}");
    drop(held);
}
