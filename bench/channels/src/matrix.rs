//! The Matrix half: moat's Matrix channel (matrix-sdk, the bot's own device) against a
//! real Synapse, next to a plain echo client on the same server. People are raw
//! client-server API clients (registered by shared secret, unencrypted DMs, `/sync` long
//! polls): what is measured is moat's side, not a client library's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const SHARED_SECRET: &str = "moat-bench-registration-secret";

/// A Synapse (PyPI matrix-synapse, `MOAT_SYNAPSE_PYTHON`) on a free loopback port, with
/// SQLite, registration by shared secret and its rate limits out of the way.
pub(crate) struct Synapse {
    child: std::process::Child,
    pub(crate) url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Synapse {
    pub(crate) async fn start(python: &str) -> Synapse {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let generated = std::process::Command::new(python)
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
            "synapse --generate-config failed"
        );
        let limit = "{per_second: 100000, burst_count: 100000}";
        std::fs::write(
            dir.path().join("overrides.yaml"),
            format!(
                "listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    x_forwarded: false\n    resources:\n      - names: [client]\n        compress: false\n\
                 registration_shared_secret: \"{SHARED_SECRET}\"\nenable_registration: false\nreport_stats: false\n\
                 trusted_key_servers: []\nfederation_domain_whitelist: []\nsuppress_key_server_warning: true\n\
                 rc_message: {limit}\nrc_registration: {limit}\nrc_joins: {{local: {limit}, remote: {limit}}}\n\
                 rc_login: {{address: {limit}, account: {limit}, failed_attempts: {limit}}}\n\
                 rc_invites: {{per_room: {limit}, per_user: {limit}, per_issuer: {limit}}}\n\
                 rc_key_requests: {limit}\nrc_3pid_validation: {limit}\nrc_joins_per_room: {limit}\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("synapse.log")).unwrap();
        let child = std::process::Command::new(python)
            .args([
                "-m",
                "synapse.app.homeserver",
                "-c",
                "homeserver.yaml",
                "-c",
                "overrides.yaml",
            ])
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let synapse = Synapse {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let api = Api::new(&synapse.url);
        let deadline = Instant::now() + Duration::from_secs(120);
        while api
            .call("GET", "/_matrix/client/versions", None, None)
            .await
            .0
            != 200
        {
            assert!(Instant::now() < deadline, "synapse did not answer in 120 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        synapse
    }
}

/// The client-server API over one keep-alive HTTP client.
#[derive(Clone)]
pub(crate) struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: Arc<str>,
}

impl Api {
    pub(crate) fn new(base: &str) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: Arc::from(base),
        }
    }

    /// One call: the status and the JSON answer (Null when there is none).
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let Ok(resp) = self
            .client
            .request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
        else {
            return (0, Value::Null);
        };
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Registers `user` through the shared-secret admin API; its access token.
    pub(crate) async fn register(&self, user: &str, password: &str) -> String {
        use hmac::{KeyInit, Mac};
        let (_, nonce) = self
            .call("GET", "/_synapse/admin/v1/register", None, None)
            .await;
        let nonce = nonce["nonce"].as_str().expect("a registration nonce");
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).unwrap();
        mac.update(format!("{nonce}\0{user}\0{password}\0notadmin").as_bytes());
        let digest: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let (status, answer) = self
            .call(
                "POST",
                "/_synapse/admin/v1/register",
                None,
                Some(json!({"nonce": nonce, "username": user, "password": password, "admin": false, "mac": digest})),
            )
            .await;
        assert_eq!(status, 200, "registering {user}: {answer}");
        answer["access_token"].as_str().unwrap().to_string()
    }
}

/// A person on Matrix: one DM room, messages sent into it, the other side's answers read
/// from `/sync`.
pub(crate) struct Person {
    api: Api,
    token: String,
    user: String,
    pub(crate) room: String,
    since: String,
    txn: u64,
}

impl Person {
    /// Registers `name` and opens a DM with `peer`, waiting until the peer has joined.
    pub(crate) async fn with_dm(api: &Api, name: &str, peer: &str) -> Person {
        let token = api.register(name, &format!("{name}-password")).await;
        let (status, room) = api
            .call(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&token),
                Some(
                    json!({"invite": [peer], "is_direct": true, "preset": "trusted_private_chat"}),
                ),
            )
            .await;
        assert_eq!(status, 200, "createRoom: {room}");
        let room = room["room_id"].as_str().unwrap().to_string();
        let (_, first) = api
            .call(
                "GET",
                "/_matrix/client/v3/sync?timeout=0",
                Some(&token),
                None,
            )
            .await;
        let mut person = Person {
            api: api.clone(),
            token,
            user: format!("@{name}:localhost"),
            since: first["next_batch"].as_str().unwrap_or_default().to_string(),
            room,
            txn: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let path = format!(
                "/_matrix/client/v3/rooms/{}/joined_members",
                encode(&person.room)
            );
            let (_, members) = api.call("GET", &path, Some(&person.token), None).await;
            if members["joined"].get(peer).is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{peer} did not join {name}'s DM");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        person.catch_up().await;
        person
    }

    /// Skips what happened so far.
    async fn catch_up(&mut self) {
        let path = format!(
            "/_matrix/client/v3/sync?timeout=0&since={}",
            encode(&self.since)
        );
        let (_, answer) = self.api.call("GET", &path, Some(&self.token), None).await;
        if let Some(next) = answer["next_batch"].as_str() {
            self.since = next.to_string();
        }
    }

    pub(crate) async fn say(&mut self, text: &str) {
        self.txn += 1;
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/t{}",
            encode(&self.room),
            self.txn
        );
        let (status, answer) = self
            .api
            .call(
                "PUT",
                &path,
                Some(&self.token),
                Some(json!({"msgtype": "m.text", "body": text})),
            )
            .await;
        assert_eq!(status, 200, "send: {answer}");
    }

    /// The next message in the room from someone else, within `wait`.
    pub(crate) async fn answer(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let path = format!(
                "/_matrix/client/v3/sync?timeout=30000&since={}",
                encode(&self.since)
            );
            let (status, answer) = self.api.call("GET", &path, Some(&self.token), None).await;
            if status != 200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if let Some(next) = answer["next_batch"].as_str() {
                self.since = next.to_string();
            }
            let events = &answer["rooms"]["join"][&self.room]["timeline"]["events"];
            let found = events.as_array().into_iter().flatten().find(|e| {
                e["type"] == "m.room.message" && e["sender"].as_str() != Some(&self.user)
            });
            if let Some(e) = found {
                return Some(
                    e["content"]["body"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
        None
    }
}

/// An echo client: joins the rooms it is invited to and sends back every message.
pub(crate) async fn echo(api: Api, name: &str) -> String {
    let token = api.register(name, "echo-password").await;
    let me = format!("@{name}:localhost");
    let user = me.clone();
    tokio::spawn(async move {
        let mut since = String::new();
        let mut txn = 0u64;
        loop {
            let path = if since.is_empty() {
                "/_matrix/client/v3/sync?timeout=0".to_string()
            } else {
                format!(
                    "/_matrix/client/v3/sync?timeout=30000&since={}",
                    encode(&since)
                )
            };
            let (status, answer) = api.call("GET", &path, Some(&token), None).await;
            if status != 200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let first = since.is_empty();
            since = answer["next_batch"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some(invites) = answer["rooms"]["invite"].as_object() {
                for room in invites.keys() {
                    let path = format!("/_matrix/client/v3/join/{}", encode(room));
                    api.call("POST", &path, Some(&token), Some(json!({}))).await;
                }
            }
            if first {
                continue;
            }
            let Some(joined) = answer["rooms"]["join"].as_object() else {
                continue;
            };
            for (room, data) in joined {
                for e in data["timeline"]["events"].as_array().into_iter().flatten() {
                    if e["type"] != "m.room.message" || e["sender"].as_str() == Some(&user) {
                        continue;
                    }
                    txn += 1;
                    let path = format!(
                        "/_matrix/client/v3/rooms/{}/send/m.room.message/e{txn}",
                        encode(room)
                    );
                    api.call("PUT", &path, Some(&token), Some(e["content"].clone()))
                        .await;
                }
            }
        }
    });
    me
}

/// A path or query segment, percent-encoded.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
