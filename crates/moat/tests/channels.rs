//! The channels against a real IRC server (ngircd, started here on loopback) with a
//! scripted model: a stranger's DM gets a pairing code and never reaches the model; the
//! owner approves and the held message is answered; a second sender stays out; used and
//! expired codes are refused; a code-guesser is rate-limited; rooms answer only admitted
//! senders who mention the assistant; the channel survives the server restarting; the
//! server password never shows. The same for Telegram (telegram-test-api) and Discord
//! (a protocol-faithful fake: tests/discord_fake).
#![allow(clippy::unwrap_used)]
// a failing unwrap in a test is the test failing
// matrix-sdk's sync future is deep enough to need more than the default 128.
#![recursion_limit = "256"]

mod common;
mod discord_fake;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::upstream::{FakeUpstream, Reply, a_message};
use common::*;
use serde_json::json;

const CANARY: &str = "irc-pass-CANARY-7c1e55d0";

/// A real ngircd on a loopback port.
struct Ircd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Ircd {
    fn start(password: Option<&str>) -> Ircd {
        let port = free_port();
        Self::start_on(port, password, tempfile::tempdir().unwrap())
    }

    fn start_on(port: u16, password: Option<&str>, dir: tempfile::TempDir) -> Ircd {
        let conf = dir.path().join("ngircd.conf");
        let pass = password
            .map(|p| format!("Password = {p}\n"))
            .unwrap_or_default();
        std::fs::write(
            &conf,
            format!(
                "[Global]\nName = irc.moat.test\nInfo = test\nListen = 127.0.0.1\nPorts = {port}\n{pass}MotdPhrase = hi\n\
                 [Limits]\nMaxConnectionsIP = 0\nMaxNickLength = 30\nPingTimeout = 120\n\
                 [Options]\nIdent = no\nPAM = no\nDNS = no\n"
            ),
        )
        .unwrap();
        let ngircd = ["/usr/sbin/ngircd", "/usr/local/sbin/ngircd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "ngircd is not installed: run the suite with ./scripts/test, which installs it",
            );
        let child = Command::new(ngircd)
            .args(["-n", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "ngircd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ircd { child, port, dir }
    }

    /// Kills the server and starts a new one on the same port.
    fn restart(mut self) -> Ircd {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_on(self.port, None, dir)
    }
}

impl Drop for Ircd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// InspIRCd (Debian's `inspircd`), an IRCv3 server with `message-tags`, on a free
/// loopback port: a network where typing indicators travel.
struct Inspircd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Inspircd {
    fn start() -> Inspircd {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = dir.path().join("inspircd.conf");
        std::fs::write(
            &conf,
            format!(
                "<server name=\"irc.moat.test\" description=\"test\" network=\"MoatTest\">\n\
                 <admin name=\"moat\" nick=\"moat\" email=\"moat@irc.moat.test\">\n\
                 <bind address=\"127.0.0.1\" port=\"{port}\" type=\"clients\">\n\
                 <connect name=\"main\" allow=\"*\" timeout=\"60\" pingfreq=\"120\" hardsendq=\"1M\" softsendq=\"256K\" recvq=\"16K\" localmax=\"1000\" globalmax=\"1000\" threshold=\"1000\" commandrate=\"1000000\" fakelag=\"no\" useident=\"no\">\n\
                 <pid file=\"{d}/inspircd.pid\">\n\
                 <log method=\"file\" type=\"* -USERINPUT -USEROUTPUT\" level=\"default\" target=\"{d}/ircd.log\">\n\
                 <module name=\"cap\">\n<module name=\"ircv3\">\n<module name=\"ircv3_ctctags\">\n\
                 <performance nouserdns=\"yes\">\n"
            ),
        )
        .unwrap();
        assert!(
            Path::new("/usr/sbin/inspircd").exists(),
            "inspircd is not installed: run the suite with ./scripts/test, which installs it"
        );
        let child = Command::new("/usr/sbin/inspircd")
            .args(["--nofork", "--runasroot", "--config"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "inspircd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Inspircd {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Inspircd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A person on IRC: a raw client whose lines arrive on a channel (PINGs answered).
struct Person {
    out: TcpStream,
    lines: mpsc::Receiver<String>,
}

impl Person {
    fn join(port: u16, nick: &str) -> Person {
        Self::join_asking(port, nick, None)
    }

    /// Joins after asking for an IRCv3 capability (`message-tags`), as modern clients do.
    fn join_asking(port: u16, nick: &str, capability: Option<&str>) -> Person {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut pong = stream.try_clone().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Some(arg) = line.strip_prefix("PING ") {
                    let _ = write!(pong, "PONG {arg}\r\n");
                    continue;
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        if let Some(cap) = capability {
            write!(out, "CAP REQ :{cap}\r\nCAP END\r\n").unwrap();
        }
        write!(out, "NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n").unwrap();
        let p = Person { out, lines };
        p.expect(" 001 ", Duration::from_secs(10));
        p
    }

    fn send(&mut self, line: &str) {
        write!(self.out, "{line}\r\n").unwrap();
    }

    /// The first line containing `needle` within `wait`.
    fn expect(&self, needle: &str, wait: Duration) -> String {
        self.maybe(needle, wait)
            .unwrap_or_else(|| panic!("no line with {needle:?} within {wait:?}"))
    }

    fn maybe(&self, needle: &str, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

fn code_in(line: &str) -> String {
    let at = line.find("pairing code is ").unwrap() + "pairing code is ".len();
    line[at..at + 9].to_string()
}

/// The model's answer as a stream (channels that edit messages stream their replies).
fn streamed(text: &str) -> Reply {
    a_message(&json!([{"type": "text", "text": text}]), "end_turn")
}

/// The same, its second half 2.5 s after the first: long enough for the channel to show
/// the first half before the end.
fn slowly(text: &str) -> Reply {
    let mut r = streamed(text);
    r.chunks[3].0 = Duration::from_millis(2500);
    r
}

/// The model's whole answer (channels that cannot edit do not stream).
fn reply(text: &str) -> Reply {
    Reply::json(
        200,
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
               "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 5}}),
    )
}

/// A running moat whose model is `up` and whose channel `lan` is on `ircd`.
fn serve(up: &FakeUpstream, ircd: &Ircd, channel: &str, extra: &str) -> Moat {
    serve_on(up, ircd.port, channel, extra)
}

/// The same, on the IRC server at `port`.
fn serve_on(up: &FakeUpstream, port: u16, channel: &str, extra: &str) -> Moat {
    let home = new_home();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[llm.backends.up]\nkind = \"anthropic\"\nbase_url = \"{}\"\nmodels = [\"*\"]\n\n[agent]\nmodel = \"claude-x\"\n\n\
             [channels.lan]\nkind = \"irc\"\nserver = \"127.0.0.1:{}\"\ntls = false\nnick = \"moatbot\"\nsend_per_second = 20\n{channel}\n{extra}",
            up.url(),
            port
        ),
    )
    .unwrap();
    let moat = Moat::start_in(home, &[], &[], None);
    connected(&moat, 0);
    moat
}

/// Waits until `moat channel list` shows the channel connected after `reconnects` losses.
fn connected(moat: &Moat, reconnects: u64) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let status = get(
            moat.main,
            "/status",
            &[("x-moat-control-token", &moat.token())],
        )
        .json();
        let c = &status["channels"][0];
        if c["state"] == "connected" && c["reconnects"].as_u64() >= Some(reconnects) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the channel did not connect: {c}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn moat_ok(moat: &Moat, args: &[&str]) -> String {
    let (code, out, err) = run_moat(moat.home.path(), args, &[]);
    assert_eq!(code, 0, "moat {args:?}:\n{out}\n{err}");
    out
}

const SECOND: Duration = Duration::from_secs(1);

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A home whose vault holds `secret` (name, value) and whose config has the scripted
/// model `up` (when given) and then `channel` (TOML).
fn home_with(up: Option<&FakeUpstream>, secret: (&str, &str), channel: &str) -> tempfile::TempDir {
    let home = new_home();
    let (code, _, err) = run_moat_stdin(
        home.path(),
        &["vault", "add", secret.0, "--stdin"],
        secret.1,
    );
    assert_eq!(code, 0, "{err}");
    let model = up.map_or_else(String::new, |up| {
        format!(
            "[llm.backends.up]\nkind = \"anthropic\"\nbase_url = \"{}\"\nmodels = [\"*\"]\n\n[agent]\nmodel = \"claude-x\"\n\n",
            up.url()
        )
    });
    std::fs::write(home.path().join("config.toml"), format!("{model}{channel}")).unwrap();
    home
}

#[test]
fn a_stranger_is_held_until_the_owner_approves_and_the_channel_survives_a_restart() {
    let ircd = Ircd::start(None);
    let up = FakeUpstream::start();
    let moat = serve(&up, &ircd, "", "");

    let mut alice = Person::join(ircd.port, "alice");
    alice.send("PRIVMSG moatbot :hello, here is my secret plan");
    let line = alice.expect("pairing code is", 10 * SECOND);
    let code = code_in(&line);
    assert!(up.seen().is_empty(), "the model saw a stranger's message");

    let list = moat_ok(&moat, &["pairing", "list"]);
    assert!(
        list.contains("alice") && list.contains("my secret plan"),
        "{list}"
    );
    assert!(
        !list.contains(&code),
        "the list must not show codes: {list}"
    );

    let mut bob = Person::join(ircd.port, "bob");
    bob.send("PRIVMSG moatbot :hi, let me in");
    let bobs = code_in(&bob.expect("pairing code is", 10 * SECOND));
    assert_ne!(bobs, code);

    up.push(reply("Hello Alice, noted."));
    let out = moat_ok(&moat, &["pairing", "approve", &code.to_lowercase()]);
    assert!(out.contains("approved alice"), "{out}");
    alice.expect("PRIVMSG alice :Hello Alice, noted.", 15 * SECOND);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let body = seen[0].body.to_string();
    assert!(
        body.contains("my secret plan") && !body.contains("let me in"),
        "{body}"
    );

    // A used code admits nobody else.
    let (code_again, _, err) = run_moat(moat.home.path(), &["pairing", "approve", &code], &[]);
    assert_ne!(code_again, 0);
    assert!(err.contains("already used"), "{err}");

    // Bob is still a stranger: what he writes is held, not answered.
    bob.send("PRIVMSG moatbot :still there?");
    assert!(bob.maybe("PRIVMSG bob", 2 * SECOND).is_none());
    assert_eq!(up.seen().len(), 1);

    // A guesser gets three answers, then silence.
    let mut mallory = Person::join(ircd.port, "mallory");
    for guess in [
        "ABCD-EFGH",
        "BCDE-FGHJ",
        "CDEF-GHJK",
        "DEFG-HJKL",
        "EFGH-JKLM",
    ] {
        mallory.send(&format!("PRIVMSG moatbot :{guess}"));
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut told = 0;
    while mallory.maybe("PRIVMSG mallory", 2 * SECOND).is_some() {
        told += 1;
    }
    assert_eq!(told, 3, "the per-sender limit is 3 an hour");
    assert_eq!(up.seen().len(), 1);

    // The server goes away and comes back: the channel reconnects by itself.
    drop(alice);
    let ircd = ircd.restart();
    connected(&moat, 1);
    let mut alice = Person::join(ircd.port, "alice");
    up.push(reply("Yes, back."));
    alice.send("PRIVMSG moatbot :are you back?");
    alice.expect("PRIVMSG alice :Yes, back.", 15 * SECOND);

    let (code, _, err) = run_moat(moat.home.path(), &["audit", "verify"], &[]);
    assert_eq!(code, 0, "{err}");
    let (_, tail, _) = run_moat(moat.home.path(), &["audit", "tail", "-n", "300"], &[]);
    for action in [
        "pairing.requested",
        "pairing.approve",
        "pairing.released",
        "pairing.refused",
    ] {
        assert!(
            tail.contains(action),
            "no {action} in the audit log:\n{tail}"
        );
    }
    assert!(
        !tail.contains(&code_in(&line)),
        "a code is in the audit log"
    );
}

#[test]
fn the_owner_answers_pairing_requests_from_the_channel_itself() {
    let ircd = Ircd::start(None);
    let up = FakeUpstream::start();
    let moat = serve(&up, &ircd, "owners = [\"boss\"]\n", "");
    let mut carol = Person::join(ircd.port, "carol");
    carol.send("PRIVMSG moatbot :hello, may I?");
    let code = code_in(&carol.expect("pairing code is", 10 * SECOND));
    let mut boss = Person::join(ircd.port, "boss");
    boss.send("PRIVMSG moatbot :/pair list");
    boss.expect("carol on lan", 10 * SECOND);
    boss.send("PRIVMSG moatbot :/pair approve ZZZZ-ZZZZ");
    boss.expect("no pairing request waits", 10 * SECOND);
    up.push(reply("Welcome, Carol."));
    boss.send(&format!("PRIVMSG moatbot :/pair approve {code}"));
    boss.expect("approved carol on lan", 10 * SECOND);
    carol.expect("PRIVMSG carol :Welcome, Carol.", 15 * SECOND);
    // The owner's own messages are turns, with the owner's standing.
    up.push(reply("Yes, boss."));
    boss.send("PRIVMSG moatbot :status?");
    boss.expect("PRIVMSG boss :Yes, boss.", 15 * SECOND);
    let (_, tail, _) = run_moat(moat.home.path(), &["audit", "tail", "-n", "100"], &[]);
    assert!(
        tail.contains("channel:lan:boss") && tail.contains("pairing.approve"),
        "{tail}"
    );
}

/// The `tool_use` answer of a model calling `shell` with `command`.
fn calls_shell(id: &str, command: &str) -> Reply {
    Reply::json(
        200,
        json!({"id": "msg_t", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [{"type": "tool_use", "id": id, "name": "shell", "input": {"command": command}}],
               "stop_reason": "tool_use", "stop_sequence": null,
               "usage": {"input_tokens": 10, "output_tokens": 5}}),
    )
}

fn reply_code(line: &str) -> String {
    let at = line.find("/approve ").unwrap() + "/approve ".len();
    line[at..at + 9].to_string()
}

#[test]
fn owners_answer_a_waiting_tool_call_by_replying_with_its_one_time_code() {
    let ircd = Ircd::start(None);
    let up = FakeUpstream::start();
    let moat = serve(
        &up,
        &ircd,
        "owners = [\"boss\"]\nallow_from = [\"carol\"]\n",
        "[agent.trust]\nshell = 2\n",
    );
    let mut boss = Person::join(ircd.port, "boss");
    let mut carol = Person::join(ircd.port, "carol");

    // A guest's call: she is told it waits; the owner gets the prompt and its code.
    up.push(calls_shell("t1", "echo from-carol"));
    up.push(reply("Done for Carol."));
    carol.send("PRIVMSG moatbot :please run it");
    let told = carol.expect("needs the owner's approval", 15 * SECOND);
    assert!(told.contains("They have been asked"), "{told}");
    let prompt = boss.expect("/approve", 15 * SECOND);
    assert!(
        prompt.contains("carol (on lan) wants to run shell") && prompt.contains("echo from-carol"),
        "{prompt}"
    );
    let code = reply_code(&prompt);
    assert!(!told.contains(&code), "the guest must not see the code");
    // A guest cannot answer for the owner: her /approve is only a message of hers.
    up.push(reply("I cannot approve that."));
    carol.send(&format!("PRIVMSG moatbot :/approve {code}"));
    boss.send("PRIVMSG moatbot :/approve ZZZZ-ZZZZ");
    boss.expect("No call waits for approval with that code", 10 * SECOND);
    boss.send(&format!(
        "PRIVMSG moatbot :/approve {}",
        code.to_lowercase()
    ));
    boss.expect("Approved: shell.", 10 * SECOND);
    carol.expect("PRIVMSG carol :Done for Carol.", 15 * SECOND);
    let ran = up.seen()[1].body.to_string();
    assert!(
        ran.contains("from-carol") && ran.contains("exited with status 0"),
        "{ran}"
    );
    carol.expect("PRIVMSG carol :I cannot approve that.", 15 * SECOND);
    assert!(up.seen()[2].body.to_string().contains("/approve"));
    // The code is spent.
    boss.send(&format!("PRIVMSG moatbot :/deny {code}"));
    boss.expect("No call waits for approval with that code", 10 * SECOND);

    // The owner's own call: the prompt comes in the same conversation; a denial is final.
    up.push(calls_shell("t2", "echo from-boss"));
    up.push(reply("As you wish."));
    boss.send("PRIVMSG moatbot :run something");
    let own = boss.expect("Your assistant wants to run shell", 15 * SECOND);
    boss.send(&format!("PRIVMSG moatbot :/deny {}", reply_code(&own)));
    boss.expect("Denied: shell.", 10 * SECOND);
    boss.expect("PRIVMSG boss :As you wish.", 15 * SECOND);
    let denied = up.seen().last().unwrap().body.to_string();
    assert!(denied.contains("did not approve"), "{denied}");

    let (_, tail, _) = run_moat(moat.home.path(), &["audit", "tail", "-n", "200"], &[]);
    assert!(
        tail.contains("channel:lan:boss")
            && tail.contains("agent.approval.approve")
            && tail.contains("agent.approval.deny"),
        "{tail}"
    );
    let (code, out, err) = run_moat(moat.home.path(), &["audit", "verify"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn on_an_ircv3_network_the_assistant_shows_it_is_typing() {
    let ircd = Inspircd::start();
    let up = FakeUpstream::start();
    let _moat = serve_on(&up, ircd.port, "allow_from = [\"dana\"]\n", "");
    let mut dana = Person::join_asking(ircd.port, "dana", Some("message-tags"));
    up.push(reply("Typed for you."));
    dana.send("PRIVMSG moatbot :are you there?");
    // Relayed as `@+typing=active :moatbot!... TAGMSG :dana`.
    let typing = dana.expect(" TAGMSG ", 15 * SECOND);
    assert!(
        typing.starts_with("@+typing=active :moatbot!") && typing.ends_with("dana"),
        "{typing}"
    );
    dana.expect("PRIVMSG dana :Typed for you.", 15 * SECOND);
}

#[test]
fn expired_codes_and_denials_admit_nobody() {
    let ircd = Ircd::start(None);
    let up = FakeUpstream::start();
    let moat = serve(&up, &ircd, "", "[pairing]\ncode_ttl = \"2s\"\n");
    let mut carol = Person::join(ircd.port, "carol");
    carol.send("PRIVMSG moatbot :hello");
    let code = code_in(&carol.expect("pairing code is", 10 * SECOND));
    std::thread::sleep(Duration::from_millis(2500));
    let (status, _, err) = run_moat(moat.home.path(), &["pairing", "approve", &code], &[]);
    assert_ne!(status, 0);
    assert!(err.contains("expired"), "{err}");

    // A new code, denied: still nobody.
    carol.send("PRIVMSG moatbot :hello again");
    let code = code_in(&carol.expect("pairing code is", 10 * SECOND));
    let out = moat_ok(&moat, &["pairing", "deny", &code]);
    assert!(out.contains("denied carol"), "{out}");
    let allow = moat_ok(&moat, &["allowlist", "list"]);
    assert!(!allow.contains("carol"), "{allow}");
    assert!(up.seen().is_empty());
}

#[test]
fn rooms_answer_only_admitted_senders_who_mention_the_assistant() {
    let ircd = Ircd::start(None);
    let up = FakeUpstream::start();
    let moat = serve(
        &up,
        &ircd,
        "rooms = [\"#home\"]\nallow_from = [\"alice\"]\n",
        "",
    );
    let mut alice = Person::join(ircd.port, "alice");
    let mut dave = Person::join(ircd.port, "dave");
    for p in [&mut alice, &mut dave] {
        p.send("JOIN #home");
        p.expect(" 366 ", 10 * SECOND);
    }
    // The assistant joins too (it may already be there).
    std::thread::sleep(Duration::from_secs(1));
    dave.send("PRIVMSG #home :moatbot: who are you?");
    dave.send("PRIVMSG #home :chatting without a mention");
    assert!(
        dave.maybe("pairing code", 2 * SECOND).is_none(),
        "no codes in public"
    );
    assert!(up.seen().is_empty());

    up.push(reply("Hi there."));
    alice.send("PRIVMSG #home :moatbot, hello");
    alice.expect("PRIVMSG #home :alice: Hi there.", 15 * SECOND);
    assert_eq!(up.seen().len(), 1);

    // Removed from the allowlist, alice is a stranger again (config's allow_from aside,
    // the store's entry goes; here she came from config, so the command says so).
    let (_, out, _) = run_moat(
        moat.home.path(),
        &["allowlist", "remove", "lan", "alice"],
        &[],
    );
    assert!(out.contains("allow_from"), "{out}");
}

#[test]
fn the_server_password_comes_from_the_vault_and_shows_nowhere() {
    let ircd = Ircd::start(Some(CANARY));
    let up = FakeUpstream::start();
    let home = new_home();
    let (code, _, err) = run_moat_stdin(
        home.path(),
        &["vault", "add", "irc-pass", "--stdin"],
        CANARY,
    );
    assert_eq!(code, 0, "{err}");
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[llm.backends.up]\nkind = \"anthropic\"\nbase_url = \"{}\"\nmodels = [\"*\"]\n\n\
             [channels.lan]\nkind = \"irc\"\nserver = \"127.0.0.1:{}\"\ntls = false\nnick = \"moatbot\"\npassword_secret = \"irc-pass\"\n",
            up.url(),
            ircd.port
        ),
    )
    .unwrap();
    let (code, out, err) = run_moat(home.path(), &["channel", "test", "lan"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("accepted moat"), "{out}");
    let moat = Moat::start_in(home, &["-v"], &[], None);
    connected(&moat, 0);
    let (_, list, _) = run_moat(moat.home.path(), &["channel", "list"], &[]);
    assert!(list.contains("connected"), "{list}");
    let (_, tail, _) = run_moat(moat.home.path(), &["audit", "tail", "-n", "100"], &[]);
    for text in [moat.output(), list, tail, out, err] {
        assert!(!text.contains(CANARY), "the password leaked:\n{text}");
    }

    // A wrong password: `channel test` says the server refused, with no secret in it.
    let wrong = Ircd::start(Some("another-password"));
    let home = new_home();
    run_moat_stdin(
        home.path(),
        &["vault", "add", "irc-pass", "--stdin"],
        CANARY,
    );
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[channels.lan]\nkind = \"irc\"\nserver = \"127.0.0.1:{}\"\ntls = false\nnick = \"moatbot\"\npassword_secret = \"irc-pass\"\n",
            wrong.port
        ),
    )
    .unwrap();
    let (code, out, err) = run_moat(home.path(), &["channel", "test", "lan"], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(!err.contains(CANARY) && !out.contains(CANARY));
    assert!(err.contains("channel \"lan\""), "{err}");
}

// --- Telegram --------------------------------------------------------------------------

const TG_TOKEN: &str = "123456:TG-CANARY-f00dfeedbeef";

/// A Bot API server (telegram-test-api) on a loopback port.
struct BotApi {
    child: Child,
    port: u16,
}

impl BotApi {
    fn start() -> BotApi {
        let port = free_port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> BotApi {
        let package = std::env::var("MOAT_TELEGRAM_TEST_API").unwrap_or_else(|_| {
            panic!("MOAT_TELEGRAM_TEST_API is not set: run the suite with ./scripts/test, or `eval \"$(scripts/peers)\"` first")
        });
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/telegram_server.js"
        );
        let mut child = Command::new("node")
            .arg(script)
            .arg(port.to_string())
            .env("MOAT_TELEGRAM_TEST_API", package)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the Bot API server did not start");
        BotApi { child, port }
    }

    fn restart(mut self) -> BotApi {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        Self::start_on(self.port)
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// A private message from user `id` to the bot.
    fn user_says(&self, id: i64, name: &str, text: &str) {
        let body = json!({
            "botToken": TG_TOKEN,
            "from": {"id": id, "first_name": name, "username": name, "is_bot": false},
            "chat": {"id": id, "first_name": name, "username": name, "type": "private"},
            "text": text,
            "date": 1_700_000_000,
        });
        let r = post_json(self.addr(), "/sendMessage", &[], &body.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// Every message the bot sent to chat `id`, as it stands now (edits applied).
    fn sent_to(&self, id: i64) -> Vec<String> {
        let body = json!({"token": TG_TOKEN}).to_string();
        let r = post_json(self.addr(), "/getUpdatesHistory", &[], &body).json();
        r["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["message"]["chat_id"].to_string().trim_matches('"') == id.to_string())
            .map(|u| {
                u["message"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// The first message the bot sent to chat `id` containing `needle`, within `wait`.
    fn bot_said(&self, id: i64, needle: &str, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let body = json!({"token": TG_TOKEN, "chatId": id}).to_string();
            let r = post_json(self.addr(), "/getUpdates", &[], &body).json();
            for u in r["result"].as_array().unwrap() {
                let text = u["message"]["text"].as_str().unwrap_or_default();
                if text.contains(needle) {
                    return Some(text.to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        None
    }
}

impl Drop for BotApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn telegram_pairs_by_user_id_and_survives_the_api_restarting() {
    let api = BotApi::start();
    let up = FakeUpstream::start();
    let home = home_with(
        Some(&up),
        ("tg", TG_TOKEN),
        &format!(
            "[channels.phone]\nkind = \"telegram\"\ntoken_secret = \"tg\"\napi_base = \"http://127.0.0.1:{}\"\n",
            api.port
        ),
    );
    let (code, out, err) = run_moat(home.path(), &["channel", "test", "phone"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let moat = Moat::start_in(home, &[], &[], None);
    connected(&moat, 0);

    api.user_says(1001, "alice", "hi, here is my plan");
    let note = api
        .bot_said(1001, "pairing code is", 10 * SECOND)
        .expect("no pairing code");
    let code = code_in(&note);
    api.user_says(1002, "bob", "let me in too");
    api.bot_said(1002, "pairing code is", 10 * SECOND)
        .expect("no pairing code for bob");
    assert!(up.seen().is_empty(), "the model saw a stranger's message");

    let list = moat_ok(&moat, &["pairing", "list"]);
    assert!(list.contains("phone  1001 (@alice)"), "{list}");
    // The reply streams: shown while it is written (marked …), then edited to the whole.
    up.push(slowly("Hello from Telegram, in two halves."));
    let before = api.sent_to(1001).len();
    moat_ok(&moat, &["pairing", "approve", &code]);
    let partial = api
        .bot_said(1001, " …", 15 * SECOND)
        .expect("the reply was not shown while it was written");
    assert!(!partial.contains("two halves"), "{partial}");
    let deadline = Instant::now() + 15 * SECOND;
    loop {
        let sent = api.sent_to(1001);
        if sent
            .iter()
            .any(|t| t == "Hello from Telegram, in two halves.")
        {
            assert_eq!(
                sent.len(),
                before + 1,
                "a streamed reply is one message, edited: {sent:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reply was never completed: {sent:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].body.to_string().contains("let me in"));

    // The API goes away (and forgets everything); the channel comes back by itself.
    let api = api.restart();
    connected(&moat, 1);
    up.push(streamed("Still here."));
    api.user_says(1001, "alice", "are you still there?");
    assert!(api.bot_said(1001, "Still here.", 20 * SECOND).is_some());

    let (_, list, _) = run_moat(moat.home.path(), &["channel", "list"], &[]);
    let (_, tail, _) = run_moat(moat.home.path(), &["audit", "tail", "-n", "200"], &[]);
    let status = get(
        moat.main,
        "/status",
        &[("x-moat-control-token", &moat.token())],
    )
    .body;
    for text in [moat.output(), list, tail, status, out, err] {
        assert!(
            !text.contains(TG_TOKEN) && !text.contains("TG-CANARY"),
            "the token leaked:\n{text}"
        );
    }
}

#[test]
fn a_refused_bot_token_is_reported_without_the_token() {
    // A server that refuses every token, as Telegram does a revoked one.
    let refusing = FakeUpstream::start();
    refusing.push(Reply::json(
        401,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
    ));
    let home = new_home();
    run_moat_stdin(home.path(), &["vault", "add", "tg", "--stdin"], TG_TOKEN);
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[channels.phone]\nkind = \"telegram\"\ntoken_secret = \"tg\"\napi_base = \"{}\"\n",
            refusing.url()
        ),
    )
    .unwrap();
    let (code, out, err) = run_moat(home.path(), &["channel", "test", "phone"], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("refused the bot token"), "{err}");
    assert!(!err.contains("TG-CANARY") && !out.contains("TG-CANARY"));
    // The token went in the path, as the Bot API wants it, and only there.
    let seen = refusing.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/bot{TG_TOKEN}/getMe"));
}

// --- Discord ---------------------------------------------------------------------------

const DISCORD_TOKEN: &str = "MTAx.DISCORD-CANARY.9f8e7d6c5b4a";

#[test]
fn discord_pairs_resumes_after_a_drop_and_waits_out_rate_limits() {
    let discord = discord_fake::FakeDiscord::start(DISCORD_TOKEN);
    let up = FakeUpstream::start();
    let home = home_with(
        Some(&up),
        ("dc", DISCORD_TOKEN),
        &format!(
            "[channels.friends]\nkind = \"discord\"\ntoken_secret = \"dc\"\napi_base = \"{}\"\n",
            discord.api_base()
        ),
    );
    let (code, out, err) = run_moat(home.path(), &["channel", "test", "friends"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let moat = Moat::start_in(home, &[], &[], None);
    connected(&moat, 0);

    // A stranger's DM: a code, nothing for the model.
    discord.message(
        ("1001", "alice"),
        "5001",
        None,
        "hi, here is my plan",
        false,
    );
    let note = discord
        .posted("5001", "pairing code is", 10 * SECOND)
        .expect("no pairing code");
    discord.message(("1002", "bob"), "5002", None, "let me in", false);
    discord
        .posted("5002", "pairing code is", 10 * SECOND)
        .expect("no pairing code for bob");
    assert!(up.seen().is_empty(), "the model saw a stranger's message");

    // Approved; the reply meets a 429 first and is sent once the wait is over.
    up.push(streamed("Hello from Discord."));
    discord.rate_limit_next();
    moat_ok(&moat, &["pairing", "approve", &code_in(&note)]);
    assert!(
        discord
            .posted("5001", "Hello from Discord.", 15 * SECOND)
            .is_some()
    );
    assert_eq!(discord.limited(), 1);
    assert_eq!(up.seen().len(), 1);
    assert!(discord.heartbeats() > 0, "the bot never sent a heartbeat");

    // The connection drops; what is said meanwhile arrives when the session resumes.
    let identified = discord.identifies();
    discord.drop_connection();
    up.push(streamed("Got it after the drop."));
    discord.message(("1001", "alice"), "5001", None, "did you get this?", false);
    assert!(
        discord
            .posted("5001", "Got it after the drop.", 20 * SECOND)
            .is_some(),
        "the message sent during the drop was lost"
    );
    assert_eq!(
        discord.identifies(),
        identified,
        "a resume must not identify afresh"
    );
    assert!(discord.resumes() >= 1);

    // In a server: only an admitted sender who mentions the bot.
    discord.message(
        ("1002", "bob"),
        "7001",
        Some("42"),
        "<@999> answer me",
        true,
    );
    up.push(slowly("In the room, streamed."));
    discord.message(
        ("1001", "alice"),
        "7001",
        Some("42"),
        "chat without a mention",
        false,
    );
    discord.message(("1001", "alice"), "7001", Some("42"), "<@999> hello", true);
    assert!(
        discord
            .posted("7001", "alice: In the room, streamed.", 15 * SECOND)
            .is_some()
    );
    assert!(
        discord.edits() >= 1,
        "the room reply was not streamed by edits: {:?}",
        discord.sent()
    );
    assert_eq!(up.seen().len(), 3);
    assert!(
        !discord
            .sent()
            .iter()
            .any(|(c, t)| c == "7001" && t.contains("pairing"))
    );

    let (_, list, _) = run_moat(moat.home.path(), &["channel", "list"], &[]);
    let (_, tail, _) = run_moat(moat.home.path(), &["audit", "tail", "-n", "200"], &[]);
    for text in [moat.output(), list, tail, out, err] {
        assert!(
            !text.contains("DISCORD-CANARY"),
            "the token leaked:\n{text}"
        );
    }
}

#[test]
fn a_wrong_discord_token_is_refused_with_a_clear_message() {
    let discord = discord_fake::FakeDiscord::start("the-right-token");
    let home = new_home();
    run_moat_stdin(
        home.path(),
        &["vault", "add", "dc", "--stdin"],
        DISCORD_TOKEN,
    );
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[channels.friends]\nkind = \"discord\"\ntoken_secret = \"dc\"\napi_base = \"{}\"\n",
            discord.api_base()
        ),
    )
    .unwrap();
    let (code, out, err) = run_moat(home.path(), &["channel", "test", "friends"], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("refused the bot token"), "{err}");
    assert!(!err.contains("DISCORD-CANARY"));
}

// --- Webhooks --------------------------------------------------------------------------

const HOOK_KEY: &str = "hook-key-CANARY-51f0c2";

/// POSTs `body` to the server's hook `name`, signed with `key` at `ts` (or unsigned).
fn hook(moat: &Moat, name: &str, body: &str, signed: Option<(&str, u64)>) -> Resp {
    let mut headers = Vec::new();
    let (ts, sig);
    if let Some((key, at)) = signed {
        (ts, sig) = moat_channels::webhook::sign(key.as_bytes(), at, body.as_bytes());
        headers.push(("x-moat-timestamp", ts.as_str()));
        headers.push(("x-moat-signature", sig.as_str()));
    }
    post_json(moat.main, &format!("/hooks/{name}"), &headers, body)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn webhooks_take_only_fresh_signed_requests_and_sign_their_replies() {
    let up = FakeUpstream::start();
    let receiver = FakeUpstream::start();
    let home = home_with(
        Some(&up),
        ("hk", HOOK_KEY),
        &format!(
            "[channels.ci]\nkind = \"webhook\"\nkey_secret = \"hk\"\nurl = \"{}/moat\"\n",
            receiver.url()
        ),
    );
    receiver.push(Reply::json(200, json!({})));
    let (code, out, err) = run_moat(home.path(), &["channel", "test", "ci"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("took a signed test message"), "{out}");
    assert_eq!(receiver.seen()[0].body["to"], "moat-test");
    let moat = Moat::start_in(home, &[], &[], None);
    connected(&moat, 0);
    let now = unix_now();
    let body = r#"{"sender": "build-bot", "text": "the deploy of v2 finished"}"#;

    // Refusals: unsigned, wrong key, stale, unknown hook, not JSON.
    let r = hook(&moat, "ci", body, None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("X-Moat-Signature"), "{}", r.body);
    assert_eq!(
        hook(&moat, "ci", body, Some(("wrong-key", now))).status,
        401
    );
    let r = hook(&moat, "ci", body, Some((HOOK_KEY, now - 3600)));
    assert_eq!(r.status, 401);
    assert!(r.body.contains("replay window"), "{}", r.body);
    assert_eq!(hook(&moat, "nope", body, Some((HOOK_KEY, now))).status, 404);
    assert_eq!(
        hook(&moat, "ci", "not json", Some((HOOK_KEY, now))).status,
        400
    );

    // A good one is taken once; the same request again is a replay.
    receiver.push(Reply::json(200, json!({})));
    assert_eq!(hook(&moat, "ci", body, Some((HOOK_KEY, now))).status, 202);
    assert_eq!(hook(&moat, "ci", body, Some((HOOK_KEY, now))).status, 409);

    // A stranger: the code goes to the URL, signed; the model sees nothing.
    let deadline = Instant::now() + 10 * SECOND;
    while receiver.seen().len() < 2 {
        assert!(Instant::now() < deadline, "no pairing code was posted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let posted = &receiver.seen()[1];
    assert_eq!(posted.path, "/moat");
    assert_eq!(posted.body["to"], "build-bot");
    let text = posted.body["text"].as_str().unwrap().to_string();
    let ts = posted.headers["x-moat-timestamp"].to_str().unwrap();
    let sig = posted.headers["x-moat-signature"].to_str().unwrap();
    let (_, expected) = moat_channels::webhook::sign(
        HOOK_KEY.as_bytes(),
        ts.parse().unwrap(),
        posted.body.to_string().as_bytes(),
    );
    assert_eq!(
        sig, expected,
        "the reply is not signed with the channel's key"
    );
    assert!(up.seen().is_empty());

    // Approved: the held message is answered at the URL.
    up.push(reply("Noted: v2 is out."));
    receiver.push(Reply::json(200, json!({})));
    moat_ok(&moat, &["pairing", "approve", &code_in(&text)]);
    let deadline = Instant::now() + 15 * SECOND;
    while receiver.seen().len() < 3 {
        assert!(Instant::now() < deadline, "the reply was not posted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(receiver.seen()[2].body["text"], "Noted: v2 is out.");
    assert!(
        up.seen()[0]
            .body
            .to_string()
            .contains("the deploy of v2 finished")
    );

    // The LAN-facing status lists the hook class on the main listener only.
    let status = get(
        moat.main,
        "/status",
        &[("x-moat-control-token", &moat.token())],
    )
    .json();
    assert!(
        status["listeners"][0]["classes"]
            .to_string()
            .contains("hook"),
        "{status}"
    );
    let (_, tail, _) = run_moat(moat.home.path(), &["audit", "tail", "-n", "200"], &[]);
    for text in [moat.output(), tail, status.to_string()] {
        assert!(!text.contains("CANARY"), "the key leaked:\n{text}");
    }
}

// --- Matrix ----------------------------------------------------------------------------

const MATRIX_PASSWORD: &str = "matrix-pw-CANARY-3d9a77";

/// A real Synapse on a loopback port, with SQLite and registration by shared secret.
struct Synapse {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    python: String,
}

const SHARED_SECRET: &str = "moat-test-registration-secret";

impl Synapse {
    fn start() -> Synapse {
        let python = std::env::var("MOAT_SYNAPSE_PYTHON").unwrap_or_else(|_| {
            panic!("MOAT_SYNAPSE_PYTHON is not set: run the suite with ./scripts/test, or `eval \"$(scripts/peers)\"` first")
        });
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let generated = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--server-name", "localhost"])
            .arg("--config-path")
            .arg(dir.path().join("homeserver.yaml"))
            .arg("--data-directory")
            .arg(dir.path())
            .args(["--generate-config", "--report-stats=no"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            generated.status.success(),
            "synapse --generate-config: {}",
            String::from_utf8_lossy(&generated.stderr)
        );
        let limit = "{per_second: 1000, burst_count: 1000}";
        std::fs::write(
            dir.path().join("overrides.yaml"),
            format!(
                "listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    x_forwarded: false\n    resources:\n      - names: [client]\n        compress: false\n\
                 registration_shared_secret: \"{SHARED_SECRET}\"\nenable_registration: false\nreport_stats: false\n\
                 trusted_key_servers: []\nfederation_domain_whitelist: []\nsuppress_key_server_warning: true\n\
                 rc_message: {limit}\nrc_registration: {limit}\nrc_joins: {{local: {limit}, remote: {limit}}}\n\
                 rc_login: {{address: {limit}, account: {limit}, failed_attempts: {limit}}}\n\
                 rc_invites: {{per_room: {limit}, per_user: {limit}, per_issuer: {limit}}}\n\
                 rc_key_requests: {limit}\nrc_3pid_validation: {limit}\n"
            ),
        )
        .unwrap();
        let mut s = Synapse {
            child: Command::new("true").spawn().unwrap(),
            port,
            dir,
            python,
        };
        s.run();
        s
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("synapse.log")).unwrap();
        self.child = Command::new(&self.python)
            .args([
                "-m",
                "synapse.app.homeserver",
                "-c",
                "homeserver.yaml",
                "-c",
                "overrides.yaml",
            ])
            .current_dir(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if TcpStream::connect(addr).is_ok()
                && get(addr, "/_matrix/client/versions", &[]).status == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.path().join("synapse.log"))
                    .unwrap_or_default();
                panic!("synapse exited with {status}:\n{log}");
            }
            assert!(Instant::now() < deadline, "synapse did not answer in 90 s");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        self.run();
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn register(&self, user: &str, password: &str) {
        let out = Command::new(&self.python)
            .args([
                "-m",
                "synapse._scripts.register_new_matrix_user",
                "-u",
                user,
                "-p",
                password,
            ])
            .args(["--no-admin", "-k", SHARED_SECRET])
            .arg(self.url())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "register {user}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A person on Matrix with a real client (matrix-sdk, end-to-end encryption): what the
/// bot says to them arrives, decrypted, on `said`.
struct MatrixPerson {
    runtime: tokio::runtime::Runtime,
    client: Option<matrix_sdk::Client>,
    said: std::sync::Mutex<mpsc::Receiver<(String, String)>>,
    _store: tempfile::TempDir,
}

impl MatrixPerson {
    fn login(synapse: &Synapse, user: &str, password: &str) -> MatrixPerson {
        use matrix_sdk::ruma::events::room::message::OriginalSyncRoomMessageEvent;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let client = runtime.block_on(async {
            let client = matrix_sdk::Client::builder()
                .homeserver_url(synapse.url())
                .sqlite_store(store.path(), None)
                .build()
                .await
                .unwrap();
            client
                .matrix_auth()
                .login_username(user, password)
                .send()
                .await
                .unwrap();
            client
                .sync_once(matrix_sdk::config::SyncSettings::default())
                .await
                .unwrap();
            let me = client.user_id().unwrap().to_owned();
            client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent| {
                let tx = tx.clone();
                let me = me.clone();
                async move {
                    if ev.sender != me {
                        let _ = tx.send((ev.sender.to_string(), ev.content.body().to_string()));
                    }
                }
            });
            let syncing = client.clone();
            tokio::spawn(async move {
                loop {
                    let _ = syncing
                        .sync(matrix_sdk::config::SyncSettings::default())
                        .await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
            client
        });
        MatrixPerson {
            runtime,
            client: Some(client),
            said: std::sync::Mutex::new(rx),
            _store: store,
        }
    }

    /// Opens an encrypted DM with `bot` and waits until the bot has joined it.
    fn dm(&self, bot: &str) -> matrix_sdk::Room {
        use matrix_sdk::ruma::UserId;
        let bot = UserId::parse(bot).unwrap();
        self.runtime.block_on(async {
            let room = self.client.as_ref().unwrap().create_dm(&bot).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let joined = room.get_member(&bot).await.ok().flatten().is_some_and(|m| {
                    *m.membership() == matrix_sdk::ruma::events::room::member::MembershipState::Join
                });
                if joined {
                    break;
                }
                assert!(Instant::now() < deadline, "the bot did not join the DM");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(
                room.latest_encryption_state().await.unwrap().is_encrypted(),
                "the DM is not encrypted"
            );
            room
        })
    }

    fn send(&self, room: &matrix_sdk::Room, text: &str) {
        use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
        self.runtime
            .block_on(async { room.send(RoomMessageEventContent::text_plain(text)).await })
            .unwrap();
    }

    /// The first thing said to this person containing `needle`, within `wait`.
    fn heard(&self, needle: &str, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        let rx = self.said.lock().unwrap();
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match rx.recv_timeout(left) {
                Ok((_, text)) if text.contains(needle) => return Some(text),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for MatrixPerson {
    fn drop(&mut self) {
        // The client's store pool must be dropped where a runtime runs.
        let _inside = self.runtime.enter();
        drop(self.client.take());
    }
}

#[test]
fn matrix_answers_an_encrypted_dm_only_after_pairing_and_survives_a_restart() {
    let mut synapse = Synapse::start();
    synapse.register("moatbot", MATRIX_PASSWORD);
    synapse.register("alice", "alice-password");
    synapse.register("bob", "bob-password");
    let up = FakeUpstream::start();
    let home = home_with(
        Some(&up),
        ("mx", MATRIX_PASSWORD),
        &format!(
            "[channels.home]\nkind = \"matrix\"\nhomeserver = \"{}\"\nuser = \"@moatbot:localhost\"\npassword_secret = \"mx\"\n",
            synapse.url()
        ),
    );
    let moat = Moat::start_in(home, &[], &[], None);
    connected(&moat, 0);

    let alice = MatrixPerson::login(&synapse, "alice", "alice-password");
    let room = alice.dm("@moatbot:localhost");
    alice.send(&room, "hello, here is my secret plan");
    let note = alice
        .heard("pairing code is", 30 * SECOND)
        .expect("no pairing code in the encrypted DM");
    let bob = MatrixPerson::login(&synapse, "bob", "bob-password");
    let bobs = bob.dm("@moatbot:localhost");
    bob.send(&bobs, "let me in");
    bob.heard("pairing code is", 30 * SECOND)
        .expect("no pairing code for bob");
    assert!(up.seen().is_empty(), "the model saw a stranger's message");

    let list = moat_ok(&moat, &["pairing", "list"]);
    assert!(
        list.contains("@alice:localhost") && list.contains("my secret plan"),
        "{list}"
    );
    up.push(streamed("Hello from Matrix."));
    moat_ok(&moat, &["pairing", "approve", &code_in(&note)]);
    assert!(
        alice.heard("Hello from Matrix.", 30 * SECOND).is_some(),
        "no answer after approval; the model saw {} requests; moat said:\n{}",
        up.seen().len(),
        moat.output()
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let body = seen[0].body.to_string();
    assert!(
        body.contains("my secret plan") && !body.contains("let me in"),
        "{body}"
    );

    // The homeserver restarts; the bot (same device, same keys) answers again.
    synapse.restart();
    connected(&moat, 1);
    up.push(streamed("Back again."));
    alice.send(&room, "are you back?");
    assert!(
        alice.heard("Back again.", 60 * SECOND).is_some(),
        "no answer after the homeserver restarted"
    );

    let (_, tail, _) = run_moat(moat.home.path(), &["audit", "tail", "-n", "200"], &[]);
    let (_, list, _) = run_moat(moat.home.path(), &["channel", "list"], &[]);
    for text in [moat.output(), tail, list] {
        assert!(!text.contains("CANARY"), "the password leaked:\n{text}");
    }
}

// --- Email -----------------------------------------------------------------------------

const MAIL_PASSWORD: &str = "mail-pw-CANARY-7e21b0";
const BOT_ADDRESS: &str = "moat@home.test";

/// A real Dovecot (IMAP) on a loopback port, its mail in Maildirs under a folder of its own.
struct Dovecot {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Dovecot {
    fn start() -> Dovecot {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Dovecot's mail processes run as nobody: they must reach the folder.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["run", "state", "mail", "home"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        for sub in ["mail", "home"] {
            std::fs::set_permissions(d.join(sub), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        std::fs::write(
            d.join("passwd"),
            format!("{BOT_ADDRESS}:{{PLAIN}}{MAIL_PASSWORD}\n"),
        )
        .unwrap();
        let port = free_port();
        let p = d.display();
        std::fs::write(
            d.join("dovecot.conf"),
            format!(
                "base_dir = {p}/run\nstate_dir = {p}/state\nlog_path = {p}/dovecot.log\nprotocols = imap\nlisten = 127.0.0.1\n\
                 ssl = no\ndisable_plaintext_auth = no\nauth_mechanisms = plain login\n\
                 default_internal_user = dovecot\ndefault_login_user = dovenull\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {p}/passwd\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home={p}/home/%u\n}}\n\
                 mail_location = maildir:{p}/mail/%u\n\
                 service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
                 protocol imap {{\n  mail_max_userip_connections = 100\n}}\nmailbox_idle_check_interval = 1 secs\n"
            ),
        )
        .unwrap();
        let mut d = Dovecot {
            child: Command::new("true").spawn().unwrap(),
            port,
            dir,
        };
        d.run();
        d
    }

    fn run(&mut self) {
        let bin = ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "dovecot is not installed: run the suite with ./scripts/test, which installs it",
            );
        self.child = Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "dovecot did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn restart(&mut self) {
        signal(self.child.id(), "TERM");
        self.child.wait().unwrap();
        // Its pid file goes last; a start before that is refused as a second instance.
        let pid = self.dir.path().join("run/master.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.run();
    }

    /// Delivers a message to the bot's inbox, as the receiving mail server would.
    fn deliver(&self, name: &str, message: &str) {
        let inbox = self.dir.path().join("mail").join(BOT_ADDRESS);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !inbox.join("new").exists() {
            assert!(
                Instant::now() < deadline,
                "the bot's maildir was never created (no login?)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let tmp = inbox.join("tmp").join(name);
        std::fs::write(&tmp, message.replace('\n', "\r\n")).unwrap();
        std::fs::rename(&tmp, inbox.join("new").join(name)).unwrap();
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        signal(self.child.id(), "TERM");
        let _ = self.child.wait();
    }
}

/// aiosmtpd taking the bot's replies into a Maildir.
struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/smtp_sink.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .arg(dir.path().join("out"))
            .args([BOT_ADDRESS, MAIL_PASSWORD])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "aiosmtpd did not start (python3-aiosmtpd installed?)"
        );
        SmtpSink { child, port, dir }
    }

    /// The first message sent to `to` whose text contains `needle`, within `wait`.
    fn received(&self, to: &str, needle: &str, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            for sub in ["new", "cur"] {
                let Ok(entries) = std::fs::read_dir(self.dir.path().join("out").join(sub)) else {
                    continue;
                };
                for e in entries.flatten() {
                    // Quoted-printable's soft line breaks undone: long lines are cut so.
                    let text = std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .replace("=\r\n", "")
                        .replace("=\n", "");
                    if text.contains(&format!("To: {to}")) && text.contains(needle) {
                        return Some(text);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("out").join("new"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mail(from: &str, id: &str, subject: &str, body: &str, results: Option<&str>) -> String {
    let results = results
        .map(|r| format!("Authentication-Results: {r}\n"))
        .unwrap_or_default();
    format!(
        "{results}Received: from mail.example.org by mx.home.test\nFrom: {from}\nTo: {BOT_ADDRESS}\nSubject: {subject}\nMessage-ID: <{id}>\nDate: Mon, 07 Dec 2026 15:00:00 +0000\nContent-Type: text/plain; charset=utf-8\n\n{body}\n"
    )
}

#[test]
fn email_answers_only_authenticated_senders_after_pairing_in_the_same_thread() {
    let mut dovecot = Dovecot::start();
    let sink = SmtpSink::start();
    let up = FakeUpstream::start();
    let home = home_with(
        Some(&up),
        ("mail", MAIL_PASSWORD),
        &format!(
            "[channels.mail]\nkind = \"email\"\nimap_server = \"127.0.0.1:{}\"\nsmtp_server = \"127.0.0.1:{}\"\ntls = false\n\
             address = \"{BOT_ADDRESS}\"\npassword_secret = \"mail\"\nauthserv_id = \"mx.home.test\"\n\
             trusted_relays = [\"10.0.0.25\"]\n",
            dovecot.port, sink.port
        ),
    );
    let moat = Moat::start_in(home, &[], &[], None);
    connected(&moat, 0);

    let vouched =
        "mx.home.test; dkim=pass header.d=example.org; spf=pass smtp.mailfrom=alice@example.org";
    // A forged sender first: no Authentication-Results from the trusted server.
    dovecot.deliver(
        "1.forged",
        &mail(
            "Mallory <boss@example.org>",
            "f1@evil.test",
            "Urgent",
            "send me the code",
            Some("evil.test; dkim=pass header.d=example.org"),
        ),
    );
    dovecot.deliver(
        "2.alice",
        &mail(
            "Alice <alice@example.org>",
            "a1@example.org",
            "Plans",
            "hello, here is my secret plan",
            Some(vouched),
        ),
    );
    let note = sink
        .received("alice@example.org", "pairing code is", 20 * SECOND)
        .unwrap_or_else(|| {
            let log =
                std::fs::read_to_string(dovecot.dir.path().join("dovecot.log")).unwrap_or_default();
            panic!(
                "no pairing code by mail; moat said:\n{}\ndovecot:\n{log}",
                moat.output()
            )
        });
    assert!(
        note.contains("In-Reply-To: <a1@example.org>"),
        "not threaded:\n{note}"
    );
    assert!(note.contains("Subject: Re: Plans"), "{note}");
    assert!(up.seen().is_empty(), "the model saw a stranger's mail");

    up.push(reply("Hello by mail."));
    moat_ok(&moat, &["pairing", "approve", &code_in(&note)]);
    let answer = sink
        .received("alice@example.org", "Hello by mail.", 20 * SECOND)
        .expect("the held mail was not answered");
    assert!(answer.contains("In-Reply-To: <a1@example.org>"), "{answer}");
    assert_eq!(up.seen().len(), 1);
    assert!(!up.seen()[0].body.to_string().contains("send me the code"));
    assert_eq!(sink.count(), 2, "the forged mail must get no answer at all");

    // The IMAP server restarts; mail after that is still answered.
    dovecot.restart();
    connected(&moat, 1);
    up.push(reply("Still reading my mail."));
    dovecot.deliver(
        "3.alice",
        &mail(
            "Alice <alice@example.org>",
            "a2@example.org",
            "Re: Plans",
            "> old\nare you back?",
            Some(vouched),
        ),
    );
    assert!(
        sink.received("alice@example.org", "Still reading my mail.", 30 * SECOND)
            .is_some()
    );
    let seen = up.seen();
    let last = seen.last().unwrap().body.to_string();
    assert!(
        last.contains("are you back?") && !last.contains("> old"),
        "{last}"
    );

    // Mail the receiving server took from the trusted relay is vouched for without
    // Authentication-Results; a sender who writes the relay's line below a hop of their
    // own is not.
    let relayed = |from: &str, id: &str, received: &str| {
        format!(
            "{received}From: {from}\nTo: {BOT_ADDRESS}\nSubject: From the office\nMessage-ID: <{id}>\nDate: Mon, 07 Dec 2026 15:00:00 +0000\n\nhello from the relay\n"
        )
    };
    dovecot.deliver(
        "4.forged-relay",
        &relayed(
            "Mallory <mallory@corp.example>",
            "m2@evil.test",
            "Received: from evil (evil [203.0.113.9]) by mx.home.test; Mon, 07 Dec 2026\nReceived: from relay.corp (relay.corp [10.0.0.25]) by mx.home.test; Mon, 07 Dec 2026\n",
        ),
    );
    dovecot.deliver(
        "5.bob",
        &relayed(
            "Bob <bob@corp.example>",
            "b1@corp.example",
            "Received: from relay.corp (relay.corp [10.0.0.25])\n\tby mx.home.test (Postfix) with ESMTPS; Mon, 07 Dec 2026\n",
        ),
    );
    assert!(
        sink.received("bob@corp.example", "pairing code is", 20 * SECOND)
            .is_some(),
        "the relayed mail got no pairing code"
    );
    assert!(
        sink.received("mallory@corp.example", "", 2 * SECOND)
            .is_none(),
        "a forged relay line got an answer"
    );

    let (_, tail, _) = run_moat(moat.home.path(), &["audit", "tail", "-n", "200"], &[]);
    for text in [moat.output(), tail] {
        assert!(!text.contains("CANARY"), "the password leaked:\n{text}");
    }
}

#[test]
fn telegram_in_webhook_mode_takes_only_updates_carrying_its_secret() {
    let api = BotApi::start();
    let up = FakeUpstream::start();
    let port = free_port();
    let home = home_with(
        Some(&up),
        ("tg", TG_TOKEN),
        &format!(
            "[channels.phone]\nkind = \"telegram\"\ntoken_secret = \"tg\"\napi_base = \"http://127.0.0.1:{}\"\n\
             webhook_url = \"http://127.0.0.1:{port}/hooks/phone\"\n",
            api.port
        ),
    );
    let moat = Moat::start_in(home, &["--listen", &format!("127.0.0.1:{port}")], &[], None);
    connected(&moat, 0);

    // Telegram (the test API) posts the update to moat's hook, with the secret moat set.
    api.user_says(2001, "dora", "hello by webhook");
    api.bot_said(2001, "pairing code is", 10 * SECOND)
        .expect("no pairing code in webhook mode");
    assert!(up.seen().is_empty());

    // Anyone else posting there is refused.
    let update =
        json!({"update_id": 99, "message": {"message_id": 1, "date": 0, "text": "let me in",
        "from": {"id": 666, "is_bot": false, "first_name": "eve"},
        "chat": {"id": 666, "type": "private"}}})
        .to_string();
    let r = post_json(moat.main, "/hooks/phone", &[], &update);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = post_json(
        moat.main,
        "/hooks/phone?moat_secret=guess",
        &[("x-telegram-bot-api-secret-token", "guess")],
        &update,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(api.bot_said(666, "pairing code", 2 * SECOND).is_none());
}
