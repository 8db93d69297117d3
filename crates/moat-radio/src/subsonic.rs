//! A Subsonic/OpenSubsonic client: the music library the station plays from.
//!
//! Authentication follows the server's API version, learnt from `ping`: from 1.13 on, a
//! token (`t = md5(password + salt)` with a fresh salt on every call), so the password
//! never crosses the wire; older servers (supysonic speaks 1.12) get `p=enc:HEX`, which
//! is only an encoding. The first `ping` always uses a token, so a server that is not
//! what it claims learns nothing; its answer (success or error 30/10/41) carries the
//! version that decides.
//!
//! Every URL here carries credentials, so none is ever logged, put in an error or handed
//! to anything else: errors say which call failed and why, never where.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use md5::{Digest, Md5};
use moat_core::secret::SecretString;
use moat_net::egress::Egress;
use serde::Serialize;
use serde_json::Value;

/// The protocol version moat speaks when the server allows tokens.
const TOKEN_API_VERSION: &str = "1.16.1";
/// The client name servers record.
const CLIENT: &str = "moat";
/// The largest JSON answer read (a search or a long playlist).
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// The largest cover image fetched.
pub const MAX_COVER_BYTES: usize = 8 * 1024 * 1024;
/// How long a JSON call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a library call failed. No variant holds a URL or a credential.
#[derive(Debug, thiserror::Error)]
pub enum SubsonicError {
    /// No connection, or it broke before an answer.
    #[error("{call}: cannot reach the library server ({why})")]
    Unreachable {
        /// The API call.
        call: &'static str,
        /// What the connection did.
        why: String,
    },
    /// The server took too long.
    #[error("{call}: the library server did not answer in {}s", CALL_TIMEOUT.as_secs())]
    Timeout {
        /// The API call.
        call: &'static str,
    },
    /// The user or password was refused.
    #[error(
        "{call}: the library server refused the user or password (Subsonic error {code}); check `user` and the vault secret"
    )]
    WrongCredentials {
        /// The API call.
        call: &'static str,
        /// 40 or 41.
        code: u32,
    },
    /// The item does not exist.
    #[error("{call}: not found on the library server")]
    NotFound {
        /// The API call.
        call: &'static str,
    },
    /// Another Subsonic error.
    #[error("{call}: the library server answered error {code}: {message}")]
    Api {
        /// The API call.
        call: &'static str,
        /// Subsonic's error code.
        code: u32,
        /// Its message, cleaned.
        message: String,
    },
    /// The answer was not a Subsonic answer.
    #[error("{call}: the library server's answer is not usable ({why})")]
    Protocol {
        /// The API call.
        call: &'static str,
        /// What was wrong with it.
        why: String,
    },
}

impl SubsonicError {
    /// Whether the item asked for is missing (a 404 for a proxied request).
    pub fn is_not_found(&self) -> bool {
        matches!(self, SubsonicError::NotFound { .. })
    }
}

/// How calls prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `t`/`s`: API 1.13 and later.
    Token,
    /// `p=enc:HEX`: older servers.
    Hex,
}

/// What `ping` learnt.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// The API version the server speaks.
    pub version: String,
    /// How moat authenticates to it.
    pub auth: AuthMode,
    /// `type` and `serverVersion` (OpenSubsonic), when given.
    pub server: Option<String>,
    /// Whether the server says it speaks OpenSubsonic.
    pub open_subsonic: bool,
}

/// A song, as the station needs it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Song {
    /// The server's id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Artist.
    pub artist: String,
    /// Album.
    pub album: String,
    /// Cover art id.
    pub cover_art: Option<String>,
    /// Length in milliseconds (whole seconds from most servers).
    pub duration_ms: u64,
    /// File suffix (`mp3`, `flac`...).
    pub suffix: String,
    /// Genre.
    pub genre: Option<String>,
    /// ReplayGain track gain in dB (OpenSubsonic `replayGain`), when the server has it.
    pub track_gain_db: Option<f32>,
}

impl Song {
    /// Reads a Subsonic `child` entry; `None` for a directory or an entry without an id.
    pub fn from_json(v: &Value) -> Option<Song> {
        if v["isDir"].as_bool() == Some(true) || v["isVideo"].as_bool() == Some(true) {
            return None;
        }
        let text = |k: &str| v[k].as_str().map(clean);
        let id = match &v["id"] {
            Value::String(s) if valid_id(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let cover_art = match &v["coverArt"] {
            Value::String(s) if valid_id(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let gain = v["replayGain"]["trackGain"].as_f64().map(|g| g as f32);
        Some(Song {
            title: text("title").unwrap_or_else(|| id.clone()),
            artist: text("artist").unwrap_or_default(),
            album: text("album").unwrap_or_default(),
            cover_art,
            duration_ms: v["duration"].as_u64().unwrap_or(0).saturating_mul(1000),
            suffix: text("suffix").unwrap_or_default(),
            genre: text("genre"),
            track_gain_db: gain.filter(|g| g.is_finite() && g.abs() < 60.0),
            id,
        })
    }
}

/// Control characters out, length bounded: server text reaches pages and logs.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Whether `id` may be sent to the server as an id: printable, short, no separators a
/// URL would care about (it is query-encoded anyway).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:~".contains(&b))
}

/// A playlist's name and id.
#[derive(Debug, Clone, Serialize)]
pub struct Playlist {
    /// The server's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// How many songs.
    pub song_count: u64,
}

/// A client for one library.
pub struct Subsonic {
    base: url::Url,
    user: String,
    password: SecretString,
    egress: Egress,
    auth: Mutex<Option<AuthMode>>,
}

impl std::fmt::Debug for Subsonic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subsonic")
            .field("base", &self.base.as_str())
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Subsonic {
    /// A client for the server at `base` (the part before `/rest/`).
    pub fn new(base: &url::Url, user: &str, password: SecretString) -> Subsonic {
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Subsonic {
            egress: Egress::for_upstream(&base, Duration::from_secs(5)),
            base,
            user: user.to_string(),
            password,
            auth: Mutex::new(None),
        }
    }

    /// The server's version and how moat signs in; also proves the credentials.
    pub async fn ping(&self) -> Result<ServerInfo, SubsonicError> {
        let version_of = |a: &Value| a["version"].as_str().unwrap_or("0").to_string();
        let (answer, auth) = match self.call_with("ping", &[], AuthMode::Token).await {
            // A server that took the token keeps getting tokens, whatever version it
            // claims: the password itself is never sent where a token works.
            Ok(a) => (a, AuthMode::Token),
            Err(Failed::Api(a, code)) => {
                // A server that takes tokens meant its error; one that does not (before
                // 1.13, or error 41: not for this user) is asked the old way.
                if version_at_least(&version_of(&a), 1, 13) && code != 41 {
                    return Err(api_error("ping", code, &a));
                }
                (self.hex_ping().await?, AuthMode::Hex)
            }
            Err(f) => return Err(f.into_error("ping")),
        };
        *self
            .auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(auth);
        let version = version_of(&answer);
        let server = match (answer["type"].as_str(), answer["serverVersion"].as_str()) {
            (Some(t), Some(v)) => Some(format!("{} {}", clean(t), clean(v))),
            (Some(t), None) => Some(clean(t)),
            _ => None,
        };
        Ok(ServerInfo {
            version: clean(&version),
            auth,
            server,
            open_subsonic: answer["openSubsonic"].as_bool() == Some(true),
        })
    }

    async fn hex_ping(&self) -> Result<Value, SubsonicError> {
        self.call_with("ping", &[], AuthMode::Hex)
            .await
            .map_err(|f| f.into_error("ping"))
    }

    /// Random songs, optionally of one genre.
    pub async fn random_songs(
        &self,
        size: u32,
        genre: Option<&str>,
    ) -> Result<Vec<Song>, SubsonicError> {
        let size = size.clamp(1, 500).to_string();
        let mut params = vec![("size", size.as_str())];
        if let Some(g) = genre {
            params.push(("genre", g));
        }
        let a = self.call("getRandomSongs", &params).await?;
        Ok(songs(&a["randomSongs"]["song"]))
    }

    /// One song.
    pub async fn song(&self, id: &str) -> Result<Song, SubsonicError> {
        check_id("getSong", id)?;
        let a = self.call("getSong", &[("id", id)]).await?;
        Song::from_json(&a["song"]).ok_or(SubsonicError::NotFound { call: "getSong" })
    }

    /// Songs matching `query` (at most `count`).
    pub async fn search(&self, query: &str, count: u32) -> Result<Vec<Song>, SubsonicError> {
        let count = count.clamp(1, 100).to_string();
        let a = self
            .call(
                "search3",
                &[
                    ("query", query),
                    ("songCount", &count),
                    ("artistCount", "0"),
                    ("albumCount", "0"),
                ],
            )
            .await?;
        Ok(songs(&a["searchResult3"]["song"]))
    }

    /// Album ids of a list (`random`, `newest`, `frequent`...).
    pub async fn album_list(&self, kind: &str, size: u32) -> Result<Vec<Value>, SubsonicError> {
        let size = size.clamp(1, 500).to_string();
        let a = self
            .call("getAlbumList2", &[("type", kind), ("size", &size)])
            .await?;
        Ok(list(&a["albumList2"]["album"]))
    }

    /// The user's starred songs.
    pub async fn starred_songs(&self) -> Result<Vec<Song>, SubsonicError> {
        let a = self.call("getStarred2", &[]).await?;
        Ok(songs(&a["starred2"]["song"]))
    }

    /// The playlists the user sees.
    pub async fn playlists(&self) -> Result<Vec<Playlist>, SubsonicError> {
        let a = self.call("getPlaylists", &[]).await?;
        Ok(list(&a["playlists"]["playlist"])
            .iter()
            .filter_map(|p| {
                let id = match &p["id"] {
                    Value::String(s) if valid_id(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some(Playlist {
                    id,
                    name: clean(p["name"].as_str().unwrap_or("")),
                    song_count: p["songCount"].as_u64().unwrap_or(0),
                })
            })
            .collect())
    }

    /// A playlist's songs.
    pub async fn playlist(&self, id: &str) -> Result<Vec<Song>, SubsonicError> {
        check_id("getPlaylist", id)?;
        let a = self.call("getPlaylist", &[("id", id)]).await?;
        Ok(songs(&a["playlist"]["entry"]))
    }

    /// Tells the server a song was played (`submission`) or is playing now.
    pub async fn scrobble(&self, id: &str, submission: bool) -> Result<(), SubsonicError> {
        check_id("scrobble", id)?;
        let sub = if submission { "true" } else { "false" };
        self.call("scrobble", &[("id", id), ("submission", sub)])
            .await
            .map(|_| ())
    }

    /// A cover image (`size` pixels when the server scales), with its content type; only
    /// `image/*` answers are accepted.
    pub async fn cover_art(
        &self,
        id: &str,
        size: Option<u32>,
    ) -> Result<(String, Bytes), SubsonicError> {
        const CALL: &str = "getCoverArt";
        check_id(CALL, id)?;
        let size = size.map(|s| s.clamp(16, 2048).to_string());
        let mut params = vec![("id", id)];
        if let Some(s) = &size {
            params.push(("size", s.as_str()));
        }
        let resp = self.raw(CALL, &params, HeaderMap::new()).await?;
        let ct = content_type(resp.headers());
        if !resp.status().is_success() {
            return Err(status_error(CALL, resp.status()));
        }
        if !ct.starts_with("image/") {
            // An error answer in JSON or XML (Subsonic answers 200 with an error body).
            let body = read_limited(CALL, resp.into_body(), 64 * 1024).await?;
            return Err(error_in_body(CALL, &body)
                .unwrap_or_else(|| protocol(CALL, "the answer is not an image")));
        }
        let body = read_limited(CALL, resp.into_body(), MAX_COVER_BYTES).await?;
        Ok((ct, body))
    }

    /// A song's file as stored (`format=raw`), with the caller's `Range`; the response's
    /// status and headers are the server's, the body streams. Dropping it closes the
    /// connection to the server.
    pub async fn stream(
        &self,
        id: &str,
        range: Option<&HeaderValue>,
    ) -> Result<http::Response<Incoming>, SubsonicError> {
        const CALL: &str = "stream";
        check_id(CALL, id)?;
        let mut headers = HeaderMap::new();
        if let Some(r) = range {
            headers.insert(header::RANGE, r.clone());
        }
        let resp = self
            .raw(CALL, &[("id", id), ("format", "raw")], headers)
            .await?;
        let status = resp.status();
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(SubsonicError::NotFound { call: CALL });
        }
        if !status.is_success() {
            return Err(status_error(CALL, status));
        }
        let ct = content_type(resp.headers());
        if ct.contains("json") || ct.contains("xml") {
            let body = read_limited(CALL, resp.into_body(), 64 * 1024).await?;
            return Err(error_in_body(CALL, &body)
                .unwrap_or_else(|| protocol(CALL, "the answer is not audio")));
        }
        Ok(resp)
    }

    async fn call(
        &self,
        call: &'static str,
        params: &[(&str, &str)],
    ) -> Result<Value, SubsonicError> {
        let mode = self.mode().await?;
        self.call_with(call, params, mode)
            .await
            .map_err(|f| f.into_error(call))
    }

    /// The auth mode, pinging first if no call has yet.
    async fn mode(&self) -> Result<AuthMode, SubsonicError> {
        if let Some(m) = *self
            .auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Ok(m);
        }
        Ok(self.ping().await?.auth)
    }

    async fn call_with(
        &self,
        call: &'static str,
        params: &[(&str, &str)],
        mode: AuthMode,
    ) -> Result<Value, Failed> {
        let exchange = async {
            let resp = self
                .send(call, params, mode, HeaderMap::new())
                .await
                .map_err(Failed::Error)?;
            let status = resp.status();
            let body = read_limited(call, resp.into_body(), MAX_ANSWER)
                .await
                .map_err(Failed::Error)?;
            let answer: Value = serde_json::from_slice(&body).map_err(|_| {
                Failed::Error(if status.is_success() {
                    protocol(call, "not JSON")
                } else {
                    status_error(call, status)
                })
            })?;
            let answer = answer["subsonic-response"].clone();
            match answer["status"].as_str() {
                Some("ok") => Ok(answer),
                Some("failed") => {
                    let code = answer["error"]["code"].as_u64().unwrap_or(0) as u32;
                    Err(Failed::Api(answer, code))
                }
                _ => Err(Failed::Error(protocol(call, "no subsonic-response status"))),
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| Failed::Error(SubsonicError::Timeout { call }))?
    }

    async fn raw(
        &self,
        call: &'static str,
        params: &[(&str, &str)],
        headers: HeaderMap,
    ) -> Result<http::Response<Incoming>, SubsonicError> {
        let mode = self.mode().await?;
        tokio::time::timeout(CALL_TIMEOUT, self.send(call, params, mode, headers))
            .await
            .map_err(|_| SubsonicError::Timeout { call })?
    }

    async fn send(
        &self,
        call: &'static str,
        params: &[(&str, &str)],
        mode: AuthMode,
        headers: HeaderMap,
    ) -> Result<http::Response<Incoming>, SubsonicError> {
        let mut url = self
            .base
            .join(&format!("rest/{call}.view"))
            .map_err(|_| protocol(call, "the library URL cannot carry a path"))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("u", &self.user);
            q.append_pair("c", CLIENT);
            q.append_pair("f", "json");
            match mode {
                AuthMode::Token => {
                    let mut salt = [0u8; 12];
                    getrandom::fill(&mut salt).expect("the operating system's random source works");
                    let salt = hex::encode(salt);
                    let mut md5 = Md5::new();
                    md5.update(self.password.expose().as_bytes());
                    md5.update(salt.as_bytes());
                    q.append_pair("v", TOKEN_API_VERSION);
                    q.append_pair("t", &hex::encode(md5.finalize()));
                    q.append_pair("s", &salt);
                }
                AuthMode::Hex => {
                    q.append_pair("v", "1.12.0");
                    let enc = format!("enc:{}", hex::encode(self.password.expose()));
                    q.append_pair("p", &enc);
                }
            }
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        let mut req = http::Request::get(url.as_str());
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let req = req
            .header(
                header::USER_AGENT,
                concat!("moat/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|_| protocol(call, "the request could not be built"))?;
        self.egress
            .send(req)
            .await
            .map_err(|e| SubsonicError::Unreachable {
                call,
                // EgressError's text names no URL; its sources may (hyper's do not).
                why: e.to_string(),
            })
    }
}

/// A call's failure before it is named.
enum Failed {
    Error(SubsonicError),
    /// A Subsonic error answer and its code.
    Api(Value, u32),
}

impl Failed {
    fn into_error(self, call: &'static str) -> SubsonicError {
        match self {
            Failed::Error(e) => e,
            Failed::Api(a, code) => api_error(call, code, &a),
        }
    }
}

fn api_error(call: &'static str, code: u32, answer: &Value) -> SubsonicError {
    match code {
        40 | 41 => SubsonicError::WrongCredentials { call, code },
        70 => SubsonicError::NotFound { call },
        // Servers answer a malformed id with a generic error (supysonic: 0, "badly formed
        // UUID") or a parameter error: for a call about one item, that item is not there.
        0 | 10 if matches!(call, "getSong" | "stream" | "getCoverArt" | "getPlaylist") => {
            SubsonicError::NotFound { call }
        }
        _ => SubsonicError::Api {
            call,
            code,
            message: clean(answer["error"]["message"].as_str().unwrap_or("no message")),
        },
    }
}

fn error_in_body(call: &'static str, body: &[u8]) -> Option<SubsonicError> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let a = &v["subsonic-response"];
    let code = a["error"]["code"].as_u64()? as u32;
    Some(api_error(call, code, a))
}

fn status_error(call: &'static str, status: StatusCode) -> SubsonicError {
    if status == StatusCode::NOT_FOUND {
        return SubsonicError::NotFound { call };
    }
    if status == StatusCode::UNAUTHORIZED {
        return SubsonicError::WrongCredentials { call, code: 401 };
    }
    protocol(call, &format!("HTTP {status}"))
}

fn protocol(call: &'static str, why: &str) -> SubsonicError {
    SubsonicError::Protocol {
        call,
        why: why.to_string(),
    }
}

fn check_id(call: &'static str, id: &str) -> Result<(), SubsonicError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(SubsonicError::NotFound { call })
    }
}

fn content_type(h: &HeaderMap) -> String {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

async fn read_limited(
    call: &'static str,
    body: Incoming,
    max: usize,
) -> Result<Bytes, SubsonicError> {
    crate::body::read_limited(body, max)
        .await
        .map_err(|e| match e {
            crate::body::BodyError::TooLarge => protocol(call, "the answer is too large"),
            crate::body::BodyError::BrokeOff => SubsonicError::Unreachable {
                call,
                why: "the answer broke off".into(),
            },
        })
}

/// `a` as a list: Subsonic's JSON gives one element as an object, none as absent.
fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(_) => vec![v.clone()],
        _ => Vec::new(),
    }
}

fn songs(v: &Value) -> Vec<Song> {
    list(v).iter().filter_map(Song::from_json).collect()
}

/// Whether `version` (`1.16.1`) is at least `major.minor`.
fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Subsonic server speaking `version`, taking tokens only from 1.13, that records
    /// each request line.
    async fn fake_server(
        version: &'static str,
        password: &'static str,
    ) -> (url::Url, std::sync::Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = sock.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    let line = String::from_utf8_lossy(&got)
                        .lines()
                        .next()
                        .unwrap()
                        .to_string();
                    log.lock().unwrap().push(line.clone());
                    let target = line.split(' ').nth(1).unwrap();
                    let q: std::collections::HashMap<String, String> =
                        url::Url::parse(&format!("http://x{target}"))
                            .unwrap()
                            .query_pairs()
                            .into_owned()
                            .collect();
                    let tokens = version_at_least(version, 1, 13);
                    let ok = match (q.get("t"), q.get("s"), q.get("p")) {
                        (Some(t), Some(s), None) if tokens => {
                            let mut m = Md5::new();
                            m.update(password.as_bytes());
                            m.update(s.as_bytes());
                            *t == hex::encode(m.finalize())
                        }
                        (None, None, Some(p)) => *p == format!("enc:{}", hex::encode(password)),
                        _ => false,
                    };
                    let body = if ok {
                        json!({"subsonic-response": {"status": "ok", "version": version,
                            "randomSongs": {"song": [{"id": "s1", "title": "One", "duration": 3}]}}})
                    } else if q.contains_key("t") && !tokens {
                        json!({"subsonic-response": {"status": "failed", "version": version,
                            "error": {"code": 10, "message": "Required parameter is missing."}}})
                    } else {
                        json!({"subsonic-response": {"status": "failed", "version": version,
                            "error": {"code": 40, "message": "Wrong username or password."}}})
                    }
                    .to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn a_new_server_gets_a_fresh_salted_token_and_an_old_one_the_hex_password() {
        const PW: &str = "pw-CANARY-31";
        let (url, seen) = fake_server("1.16.1", PW).await;
        let c = Subsonic::new(&url, "me", SecretString::new(PW.into()));
        assert_eq!(c.ping().await.unwrap().auth, AuthMode::Token);
        assert_eq!(c.random_songs(1, None).await.unwrap()[0].id, "s1");
        assert_eq!(c.random_songs(1, None).await.unwrap().len(), 1);
        let lines = seen.lock().unwrap().clone();
        let salts: Vec<String> = lines
            .iter()
            .filter_map(|l| {
                l.split("s=")
                    .nth(1)
                    .map(|s| s.split(['&', ' ']).next().unwrap().to_string())
            })
            .collect();
        assert_eq!(salts.len(), 3);
        assert!(
            salts[0] != salts[1] && salts[1] != salts[2],
            "a salt was reused: {salts:?}"
        );
        let hex_pw = hex::encode(PW);
        assert!(
            lines
                .iter()
                .all(|l| !l.contains(PW) && !l.contains(&hex_pw) && !l.contains("p="))
        );

        let (url, seen) = fake_server("1.12.0", PW).await;
        let c = Subsonic::new(&url, "me", SecretString::new(PW.into()));
        let info = c.ping().await.unwrap();
        assert_eq!(
            (info.auth, info.version.as_str()),
            (AuthMode::Hex, "1.12.0")
        );
        assert_eq!(c.random_songs(1, None).await.unwrap().len(), 1);
        // The first ping offered a token (which tells the server nothing); then hex.
        let lines = seen.lock().unwrap().clone();
        assert!(lines[0].contains("t=") && !lines[0].contains("p="));
        assert!(
            lines[1..]
                .iter()
                .all(|l| l.contains("p=enc%3A") || l.contains("p=enc:"))
        );

        let c = Subsonic::new(&url, "me", SecretString::new("wrong".into()));
        let err = c.ping().await.unwrap_err();
        assert!(
            matches!(err, SubsonicError::WrongCredentials { code: 40, .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("wrong") || err.to_string().contains("refused"));
        assert!(!err.to_string().contains("http://"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_without_its_url() {
        let url = url::Url::parse("http://127.0.0.1:9/").unwrap();
        let c = Subsonic::new(&url, "me", SecretString::new("pw-CANARY".into()));
        let err = c.ping().await.unwrap_err().to_string();
        assert!(err.contains("cannot reach the library server"), "{err}");
        assert!(
            !err.contains("127.0.0.1") && !err.contains("CANARY"),
            "{err}"
        );
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("1.13.0", 1, 13));
        assert!(version_at_least("1.16.1", 1, 13));
        assert!(!version_at_least("1.12.0", 1, 13));
        assert!(!version_at_least("1.9", 1, 13));
        assert!(!version_at_least("garbage", 1, 13));
    }

    #[test]
    fn songs_are_read_from_one_or_many() {
        let one = json!({"id": "a1", "title": "T\u{7}x", "duration": 7, "coverArt": "c1", "suffix": "mp3",
            "replayGain": {"trackGain": -6.5}});
        let s = songs(&one);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].title, "Tx");
        assert_eq!(s[0].duration_ms, 7000);
        assert_eq!(s[0].track_gain_db, Some(-6.5));
        let many = json!([{"id": 5, "isDir": false}, {"id": "d", "isDir": true}, {"id": "a/b?"}]);
        let s = songs(&many);
        assert_eq!(s.len(), 1, "directories and unusable ids are skipped");
        assert_eq!(s[0].id, "5");
    }

    #[test]
    fn ids_that_could_bend_a_url_are_refused() {
        assert!(valid_id("al-12_x.y:z~"));
        for bad in ["", "a/b", "a&b", "a b", "a?b", "a#b", "%2e"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
