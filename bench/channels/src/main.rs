//! bench/channels: what moat's channel path adds to a message, measured against a real
//! IRC server (ngircd, penalties off) and a real Matrix homeserver (Synapse) in the same
//! run.
//!
//! - Round trip: a person's message to the assistant until its reply arrives (channel
//!   hub, policy, the assistant's turn through the router to a fake model that answers at
//!   once, the IRC adapter's queue), next to the same person's message to a plain echo
//!   client on the same server (the server's own latency, twice, and a client's). The
//!   difference is moat's side.
//!   Messages go 20 ms apart, a person's pace: back to back, the channel's flood-safe
//!   send limit (here 100/s after a burst of 4) would be what is measured.
//! - 100 senders at once, each with several messages in a row: every reply arrives?
//!   (none lost), wall time, round-trip p50/p99 under that load (where the send limit
//!   is the bottleneck, by design: IRC servers disconnect clients that flood).
//!
//! - The same two measures on Matrix (`matrix.rs`): moat's Matrix channel (matrix-sdk,
//!   the bot's own device) next to an echo client on the same Synapse; people are raw
//!   client-server API clients in unencrypted DMs. Needs `MOAT_SYNAPSE_PYTHON`
//!   (scripts/peers); without it the Matrix half is skipped, saying so.
//!
//! Usage: moat-bench-channels [ROUND_TRIPS] [SENDERS] [PER_SENDER]   (300 100 5)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot run stops

mod matrix;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use moat_agent::{Agent, AgentStore};
use moat_channels::irc::{Irc, IrcSettings};
use moat_channels::owner::Desk;
use moat_channels::{Hub, Pairing, Spec};
use moat_core::config::channels::{ChannelConfig, DmPolicy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const TEXT: &str = r#"{"id":"msg_b","type":"message","role":"assistant","model":"claude-bench","content":[{"type":"text","text":"pong"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":20,"output_tokens":1}}"#;

/// A fake Anthropic upstream that answers every request at once.
async fn upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(TEXT.as_bytes())))
                            .unwrap(),
                    )
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// ngircd on a free loopback port, its flood penalties off (they would measure ngircd's
/// throttle, not moat).
fn ngircd(dir: &std::path::Path) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("ngircd.conf");
    std::fs::write(
        &conf,
        format!(
            "[Global]\nName = irc.bench\nInfo = bench\nListen = 127.0.0.1\nPorts = {port}\nMotdPhrase = hi\n\
             [Limits]\nMaxConnectionsIP = 0\nMaxNickLength = 30\nPingTimeout = 300\nMaxPenaltyTime = 0\n\
             [Options]\nIdent = no\nPAM = no\nDNS = no\n"
        ),
    )
    .unwrap();
    let bin = ["/usr/sbin/ngircd", "/usr/local/sbin/ngircd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("ngircd is not installed (apt-get install ngircd)");
    let child = std::process::Command::new(bin)
        .args(["-n", "-f"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ngircd did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

/// A raw IRC client: PRIVMSGs to it arrive as (from, text); PINGs are answered.
struct Person {
    out: mpsc::UnboundedSender<String>,
    heard: mpsc::UnboundedReceiver<(String, String)>,
}

impl Person {
    async fn join(port: u16, nick: &str) -> Person {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (read, mut write) = stream.into_split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (heard_tx, heard) = mpsc::unbounded_channel();
        let (welcome_tx, welcome) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            while let Some(line) = out_rx.recv().await {
                if write
                    .write_all(format!("{line}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let pong = out.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            let mut welcome = Some(welcome_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(arg) = line.strip_prefix("PING ") {
                    let _ = pong.send(format!("PONG {arg}"));
                } else if line.contains(" 001 ") {
                    if let Some(w) = welcome.take() {
                        let _ = w.send(());
                    }
                } else if let Some((prefix, rest)) = line
                    .strip_prefix(':')
                    .and_then(|l| l.split_once(" PRIVMSG "))
                    && let Some((_, text)) = rest.split_once(" :")
                {
                    let from = prefix.split('!').next().unwrap_or("").to_string();
                    let _ = heard_tx.send((from, text.to_string()));
                }
            }
        });
        out.send(format!("NICK {nick}")).unwrap();
        out.send(format!("USER {nick} 0 * :{nick}")).unwrap();
        tokio::time::timeout(Duration::from_secs(20), welcome)
            .await
            .expect("no welcome from ngircd")
            .unwrap();
        Person { out, heard }
    }

    fn say(&self, to: &str, text: &str) {
        self.out.send(format!("PRIVMSG {to} :{text}")).unwrap();
    }

    /// The next message from `from`, within `wait`.
    async fn from(&mut self, from: &str, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.heard.recv()).await {
                Ok(Some((who, text))) if who == from => return Some(text),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn us(v: u64) -> String {
    format!("{:.2} ms", v as f64 / 1000.0)
}

/// Prints the round trips through moat next to the reference's.
fn report_round_trips(
    header: &str,
    reference: &str,
    moat: &str,
    direct: &mut [u64],
    through: &mut [u64],
) {
    let (d50, d99) = (percentile(direct, 0.5), percentile(direct, 0.99));
    let (m50, m99) = (percentile(through, 0.5), percentile(through, 0.99));
    println!("{header}");
    println!(
        "  {reference} (reference): p50 {}  p99 {}",
        us(d50),
        us(d99)
    );
    println!("  {moat}: p50 {}  p99 {}", us(m50), us(m99));
    println!(
        "  moat's side added: p50 {}  p99 {}  (ratio of p99s {:.1}x)",
        us(m50.saturating_sub(d50)),
        us(m99.saturating_sub(d99)),
        m99 as f64 / d99.max(1) as f64
    );
}

/// Prints what many senders at once got; the number of lost replies.
fn report_burst(
    senders: usize,
    per_sender: usize,
    results: Vec<(Vec<u64>, usize)>,
    wall: Duration,
    note: &str,
) -> usize {
    let (mut all, mut lost) = (Vec::new(), 0);
    for (times, l) in results {
        all.extend(times);
        lost += l;
    }
    let expected = senders * per_sender;
    println!(
        "{senders} senders at once, {per_sender} messages each in a row ({expected} messages):"
    );
    println!(
        "  replies received: {} of {expected}; lost: {lost}; wall {:.2} s ({:.0} replies/s{note})",
        all.len(),
        wall.as_secs_f64(),
        all.len() as f64 / wall.as_secs_f64()
    );
    println!(
        "  round trip under that load: p50 {}  p99 {}",
        us(percentile(&mut all, 0.5)),
        us(percentile(&mut all, 0.99))
    );
    lost
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // RUST_LOG=moat_channels=debug shows where a message's time goes.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: ROUND_TRIPS SENDERS PER_SENDER"))
        .collect();
    let round_trips = args.first().copied().unwrap_or(300);
    let senders = args.get(1).copied().unwrap_or(100);
    let per_sender = args.get(2).copied().unwrap_or(5);

    let dir = tempfile::tempdir().unwrap();
    let (mut ircd, port) = ngircd(dir.path());
    let url = upstream().await;
    let llm: moat_core::config::llm::LlmConfig = toml::from_str(&format!(
        "[backends.up]\nkind = \"anthropic\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\nmax_concurrency = 2000\nmax_queue = 2000\n"
    ))
    .unwrap();
    let gateway = Arc::new(moat_llm::Gateway::new(&llm, Default::default()).unwrap());
    let db = || moat_state::StateStore::open(&dir.path().join("state.db")).unwrap();
    let config = moat_core::config::agent::AgentConfig {
        model: "claude-bench".into(),
        messages_per_minute: u32::MAX,
        max_concurrent_turns: 5000,
        ..Default::default()
    };
    let agent = Arc::new(
        Agent::new(
            gateway,
            &Default::default(),
            config,
            AgentStore::new(db()),
            dir.path().join("workspaces"),
            vec![],
        )
        .unwrap(),
    );
    // Everyone may talk (pairing is not what is measured); sends as fast as the
    // channel's own limit allows.
    let channel = ChannelConfig {
        kind: "irc".into(),
        dm_policy: DmPolicy::Open,
        allow_from: vec!["*".into()],
        send_per_second: 100.0,
        server: Some(format!("127.0.0.1:{port}")),
        tls: Some(false),
        nick: Some("moatbot".into()),
        ..Default::default()
    };
    let adapter = Arc::new(Irc::new(IrcSettings {
        server: format!("127.0.0.1:{port}"),
        tls: false,
        roots: None,
        nick: "moatbot".into(),
        sasl_user: None,
        password: None,
        rooms: vec![],
        send_per_second: channel.send_per_second,
        max_piece: moat_channels::irc::MAX_PIECE,
    }));
    let hub = Hub::start(
        vec![Spec {
            name: "irc".into(),
            config: channel,
            adapter,
        }],
        agent.clone(),
        Arc::new(Desk::new(
            Pairing::new(db(), Default::default()),
            Default::default(),
            None,
        )),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while hub.statuses()[0].state != "connected" {
        assert!(Instant::now() < deadline, "the channel did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The reference: an echo client on the same server.
    let echo = Person::join(port, "echo").await;
    let mut echo_heard = echo.heard;
    let echo_out = echo.out.clone();
    tokio::spawn(async move {
        while let Some((from, text)) = echo_heard.recv().await {
            let _ = echo_out.send(format!("PRIVMSG {from} :{text}"));
        }
    });

    let mut alice = Person::join(port, "alice").await;
    // Warm up both paths (connections, the router's pool).
    for i in 0..10 {
        alice.say("echo", &format!("warm {i}"));
        alice.from("echo", Duration::from_secs(10)).await.unwrap();
        alice.say("moatbot", &format!("warm {i}"));
        alice
            .from("moatbot", Duration::from_secs(10))
            .await
            .unwrap();
    }
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for i in 0..round_trips {
        // A person's pace, not a flood: 20 ms apart keeps the channel's send limit
        // (100/s here, a burst of 4) out of the measurement.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        alice.say("echo", &format!("ping {i}"));
        alice
            .from("echo", Duration::from_secs(10))
            .await
            .expect("the echo was lost");
        direct.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        alice.say("moatbot", &format!("ping {i}"));
        alice
            .from("moatbot", Duration::from_secs(10))
            .await
            .expect("moat's reply was lost");
        through.push(t.elapsed().as_micros() as u64);
    }
    report_round_trips(
        &format!(
            "round trip, message in to reply out, {round_trips} sequential messages 20 ms apart (ngircd on loopback, penalties off):"
        ),
        "echo client on the same server",
        "moat (hub, turn, router, instant model, IRC queue)",
        &mut direct,
        &mut through,
    );

    // Many people at once, each writing several messages in a row.
    let mut people = Vec::new();
    for s in 0..senders {
        people.push(Person::join(port, &format!("p{s}")).await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut p in people {
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut lost = 0;
            for j in 0..per_sender {
                let t = Instant::now();
                p.say("moatbot", &format!("message {j}"));
                match p.from("moatbot", Duration::from_secs(120)).await {
                    Some(_) => times.push(t.elapsed().as_micros() as u64),
                    None => lost += 1,
                }
            }
            (times, lost)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let lost = report_burst(
        senders,
        per_sender,
        results,
        started.elapsed(),
        "; the channel sends at most 100/s",
    );
    let s = &hub.statuses()[0];
    println!(
        "  channel status: {} ({} in, {} out)",
        s.state, s.received, s.sent
    );
    hub.shutdown();
    let _ = ircd.kill();
    let _ = ircd.wait();

    let lost_on_matrix = match std::env::var("MOAT_SYNAPSE_PYTHON") {
        Ok(python) => {
            println!();
            matrix_half(
                &python,
                agent,
                &dir,
                round_trips.min(100),
                senders,
                per_sender,
            )
            .await
        }
        Err(_) => {
            println!(
                "\nMatrix: skipped (MOAT_SYNAPSE_PYTHON is not set: `eval \"$(scripts/peers)\"` first)"
            );
            0
        }
    };
    if lost + lost_on_matrix > 0 {
        std::process::exit(1);
    }
}

/// The Matrix half; the number of lost replies.
async fn matrix_half(
    python: &str,
    agent: Arc<Agent>,
    dir: &tempfile::TempDir,
    round_trips: usize,
    senders: usize,
    per_sender: usize,
) -> usize {
    use moat_channels::matrix::{Matrix, MatrixSettings};
    let synapse = matrix::Synapse::start(python).await;
    let api = matrix::Api::new(&synapse.url);
    let bot_password = "moatbot-bench-password";
    api.register("moatbot", bot_password).await;
    let channel = ChannelConfig {
        kind: "matrix".into(),
        dm_policy: DmPolicy::Open,
        allow_from: vec!["*".into()],
        homeserver: Some(synapse.url.clone()),
        user: Some("@moatbot:localhost".into()),
        ..Default::default()
    };
    let adapter = Arc::new(Matrix::new(MatrixSettings {
        homeserver: synapse.url.parse().unwrap(),
        user: "@moatbot:localhost".into(),
        password: moat_core::secret::SecretString::new(bot_password.into()),
        state_dir: dir.path().join("matrix-bot"),
        rooms: vec![],
        max_piece: moat_channels::matrix::MAX_PIECE,
    }));
    let db = || moat_state::StateStore::open(&dir.path().join("state.db")).unwrap();
    let hub = Hub::start(
        vec![Spec {
            name: "matrix".into(),
            config: channel,
            adapter,
        }],
        agent,
        Arc::new(Desk::new(
            Pairing::new(db(), Default::default()),
            Default::default(),
            None,
        )),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while hub.statuses()[0].state != "connected" {
        assert!(
            Instant::now() < deadline,
            "the Matrix channel did not connect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let echo = matrix::echo(api.clone(), "echo").await;
    let mut to_echo = matrix::Person::with_dm(&api, "alice", &echo).await;
    let mut to_moat = matrix::Person::with_dm(&api, "alice2", "@moatbot:localhost").await;
    let wait = Duration::from_secs(60);
    for i in 0..5 {
        to_echo.say(&format!("warm {i}")).await;
        to_echo.answer(wait).await.expect("the echo was lost");
        to_moat.say(&format!("warm {i}")).await;
        to_moat.answer(wait).await.expect("moat's reply was lost");
    }
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for i in 0..round_trips {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        to_echo.say(&format!("ping {i}")).await;
        to_echo.answer(wait).await.expect("the echo was lost");
        direct.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        to_moat.say(&format!("ping {i}")).await;
        to_moat.answer(wait).await.expect("moat's reply was lost");
        through.push(t.elapsed().as_micros() as u64);
    }
    report_round_trips(
        &format!(
            "Matrix: round trip, message in to reply out, {round_trips} sequential messages 20 ms apart (Synapse on loopback, SQLite, unencrypted DMs, /sync long polls):"
        ),
        "echo client on the same server",
        "moat (matrix-sdk sync, hub, turn, router, instant model, send)",
        &mut direct,
        &mut through,
    );

    // Everyone opens a DM with the bot (ten at a time), then all write at once.
    let mut people = Vec::new();
    for batch in (0..senders).collect::<Vec<_>>().chunks(10) {
        let joins: Vec<_> = batch
            .iter()
            .map(|s| {
                let api = api.clone();
                let name = format!("p{s}");
                tokio::spawn(async move {
                    matrix::Person::with_dm(&api, &name, "@moatbot:localhost").await
                })
            })
            .collect();
        for j in joins {
            people.push(j.await.unwrap());
        }
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut p in people {
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut lost = 0;
            for j in 0..per_sender {
                let t = Instant::now();
                p.say(&format!("message {j}")).await;
                match p.answer(Duration::from_secs(180)).await {
                    Some(_) => times.push(t.elapsed().as_micros() as u64),
                    None => lost += 1,
                }
            }
            (times, lost)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let lost = report_burst(senders, per_sender, results, started.elapsed(), "");
    let s = &hub.statuses()[0];
    println!(
        "  channel status: {} ({} in, {} out)",
        s.state, s.received, s.sent
    );
    hub.shutdown();
    lost
}
