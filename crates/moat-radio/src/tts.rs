//! Speech for the DJ: a text-to-speech trait, its engines (espeak-ng and Piper run as
//! subprocesses, never linked: both are GPL; an OpenAI-compatible `/audio/speech`
//! server over HTTP), and a cache of synthesised clips on disk.
//!
//! The cache is keyed by the voice's identity and a hash of the text, bounded by count
//! and by bytes with least-recently-used eviction (a hit refreshes), so the same
//! announcement is spoken once; concurrent requests for one clip share one synthesis;
//! every clip is written under a temporary name and renamed into place, so a reader never
//! sees half a file.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use moat_core::secret::SecretString;
use moat_net::egress::Egress;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::OnceCell;

/// Why speech could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TtsError {
    /// The engine could not be started.
    #[error("cannot run {engine}: {why}; {hint}")]
    Missing {
        /// The engine's binary.
        engine: String,
        /// The operating system's reason.
        why: String,
        /// How to get it.
        hint: &'static str,
    },
    /// The engine ran and failed, or wrote no audio.
    #[error("{engine} failed: {why}")]
    Failed {
        /// The engine.
        engine: String,
        /// What it said (bounded).
        why: String,
    },
    /// The engine took longer than allowed.
    #[error("{engine} took longer than {}s", .limit.as_secs())]
    Timeout {
        /// The engine.
        engine: String,
        /// The limit.
        limit: Duration,
    },
    /// The text is empty or too long.
    #[error("the text to speak must be 1 to {MAX_TEXT_CHARS} characters")]
    Text,
    /// The cache's folder could not be written.
    #[error("the speech cache: {0}")]
    Cache(String),
}

/// The longest text spoken at once.
pub const MAX_TEXT_CHARS: usize = 2000;

/// A future boxed for a trait object.
pub type SpeechFuture<'a> = Pin<Box<dyn Future<Output = Result<(), TtsError>> + Send + 'a>>;

/// A text-to-speech engine.
pub trait Speech: Send + Sync {
    /// The voice's identity (engine, voice, settings): part of every cache key, so a
    /// changed voice never reuses another's clips.
    fn voice_id(&self) -> String;
    /// Speaks `text` into a WAV file at `out`.
    fn synthesize<'a>(&'a self, text: &'a str, out: &'a Path) -> SpeechFuture<'a>;
}

/// espeak-ng, run as a subprocess: the text on stdin (never an argument), WAV to a file
/// (its `--stdout` header carries a bogus size).
#[derive(Debug, Clone)]
pub struct Espeak {
    /// The binary.
    pub binary: PathBuf,
    /// The voice (`en-us`, `de`, ...).
    pub voice: String,
    /// Speed in words per minute.
    pub words_per_minute: u32,
    /// The longest a synthesis may take.
    pub timeout: Duration,
}

impl Speech for Espeak {
    fn voice_id(&self) -> String {
        format!("espeak-ng/{}/{}", self.voice, self.words_per_minute)
    }

    fn synthesize<'a>(&'a self, text: &'a str, out: &'a Path) -> SpeechFuture<'a> {
        let args: Vec<OsString> = vec![
            "-v".into(),
            self.voice.clone().into(),
            "-s".into(),
            self.words_per_minute.to_string().into(),
            "-w".into(),
            out.into(),
            "--stdin".into(),
        ];
        Box::pin(run_engine(
            Engine {
                binary: &self.binary,
                args,
                timeout: self.timeout,
                hint: "install it (Debian: apt install espeak-ng) or set radio.tts.espeak",
            },
            text,
            out,
        ))
    }
}

/// Piper (PyPI `piper-tts`), run as a subprocess with a voice model (`.onnx`, its
/// `.onnx.json` beside it): neural speech, fully offline, a few hundred milliseconds a
/// sentence once the model is loaded (each synthesis loads it: about a second more).
#[derive(Debug, Clone)]
pub struct Piper {
    /// The `piper` binary.
    pub binary: PathBuf,
    /// The voice model.
    pub model: PathBuf,
    /// The speaker, for models with several.
    pub speaker: Option<u32>,
    /// Speed in words per minute (Piper's voices speak about 165 at length scale 1).
    pub words_per_minute: u32,
    /// The longest a synthesis may take.
    pub timeout: Duration,
}

/// The words per minute Piper's voices speak at length scale 1.
const PIPER_NATURAL_WPM: f64 = 165.0;

impl Speech for Piper {
    fn voice_id(&self) -> String {
        format!(
            "piper/{}/{}/{}",
            self.model.display(),
            self.speaker.unwrap_or(0),
            self.words_per_minute
        )
    }

    fn synthesize<'a>(&'a self, text: &'a str, out: &'a Path) -> SpeechFuture<'a> {
        let scale = PIPER_NATURAL_WPM / f64::from(self.words_per_minute.max(1));
        let mut args: Vec<OsString> = vec![
            "-m".into(),
            self.model.clone().into(),
            "-f".into(),
            out.into(),
            "--length-scale".into(),
            format!("{scale:.3}").into(),
        ];
        if let Some(speaker) = self.speaker {
            args.push("-s".into());
            args.push(speaker.to_string().into());
        }
        Box::pin(run_engine(
            Engine {
                binary: &self.binary,
                args,
                timeout: self.timeout,
                hint: "install it (pip install piper-tts, and a voice) or set radio.tts.piper",
            },
            text,
            out,
        ))
    }
}

/// A speech engine's command line.
struct Engine<'a> {
    binary: &'a Path,
    args: Vec<OsString>,
    timeout: Duration,
    hint: &'static str,
}

/// Runs an engine that reads the text on stdin (never an argument: it could start with
/// a dash, and the process list is readable) and writes a WAV file at `out`.
async fn run_engine(engine: Engine<'_>, text: &str, out: &Path) -> Result<(), TtsError> {
    let name = engine.binary.display().to_string();
    let mut child = Command::new(engine.binary)
        .args(&engine.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| TtsError::Missing {
            engine: name.clone(),
            why: e.to_string(),
            hint: engine.hint,
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let run = async {
        // One line: engines read a newline as the end of an utterance; the text ends
        // with one so the last sentence is spoken.
        let mut line = text.replace(['\r', '\n'], " ");
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        drop(stdin);
        let mut said = Vec::new();
        let _ = (&mut stderr).take(4096).read_to_end(&mut said).await;
        let status = child.wait().await.map_err(|e| e.to_string())?;
        if !status.success() {
            let said = String::from_utf8_lossy(&said);
            let last = said.trim().lines().last().unwrap_or("").to_string();
            return Err(format!("{status}: {last}"));
        }
        Ok(())
    };
    within(&name, engine.timeout, run).await?;
    match std::fs::metadata(out) {
        Ok(m) if m.len() > 44 => Ok(()),
        _ => Err(TtsError::Failed {
            engine: name,
            why: "it wrote no audio".into(),
        }),
    }
}

/// `work` within `limit`, its failure or lateness named after `engine`.
async fn within<T>(
    engine: &str,
    limit: Duration,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, TtsError> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| TtsError::Timeout {
            engine: engine.to_string(),
            limit,
        })?
        .map_err(|why| TtsError::Failed {
            engine: engine.to_string(),
            why,
        })
}

/// An OpenAI-compatible speech server (`POST {base}/audio/speech`), reached through a
/// client that reaches its origin only; the key, if any, from the vault.
#[derive(Debug, Clone)]
pub struct HttpSpeech {
    base: url::Url,
    model: String,
    voice: String,
    words_per_minute: u32,
    key: Option<SecretString>,
    timeout: Duration,
    egress: Egress,
}

/// The largest answer taken from a speech server.
const MAX_HTTP_AUDIO: usize = 32 * 1024 * 1024;

impl HttpSpeech {
    /// A server at `base` (the part before `/audio/speech`, e.g. `http://127.0.0.1:8880/v1`).
    pub fn new(
        base: url::Url,
        model: String,
        voice: String,
        words_per_minute: u32,
        key: Option<SecretString>,
        timeout: Duration,
    ) -> HttpSpeech {
        let egress = Egress::for_upstream(&base, Duration::from_secs(5));
        HttpSpeech {
            base,
            model,
            voice,
            words_per_minute,
            key,
            timeout,
            egress,
        }
    }

    fn engine(&self) -> String {
        // The origin names the server; a path or query could carry a token.
        format!(
            "the speech server at {}",
            self.base.origin().ascii_serialization()
        )
    }

    async fn fetch(&self, text: &str) -> Result<Bytes, String> {
        let mut url = self.base.clone();
        let path = format!("{}/audio/speech", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let speed = (f64::from(self.words_per_minute) / PIPER_NATURAL_WPM).clamp(0.25, 4.0);
        let body = serde_json::json!({
            "model": self.model,
            "voice": self.voice,
            "input": text,
            "response_format": "wav",
            "speed": speed,
        });
        let mut req = http::Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "audio/wav, audio/*");
        if let Some(key) = &self.key {
            req = req.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", key.expose()),
            );
        }
        let req = req
            .body(http_body_util::Full::new(Bytes::from(body.to_string())))
            .map_err(|_| "the request could not be built".to_string())?;
        let resp = self.egress.send(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = crate::body::read_limited(resp.into_body(), MAX_HTTP_AUDIO)
            .await
            .map_err(|_| "the answer broke off or was larger than 32 MiB".to_string())?;
        if !status.is_success() {
            // The server's own words, bounded and with no control characters: it may
            // say "invalid key", never the key itself (moat never sends it anywhere else).
            let said: String = String::from_utf8_lossy(&body)
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            return Err(format!("HTTP {status}: {said}"));
        }
        if !(content_type.starts_with("audio/") || content_type == "application/octet-stream") {
            return Err(format!("it answered {content_type:?}, not audio"));
        }
        Ok(body)
    }
}

impl Speech for HttpSpeech {
    fn voice_id(&self) -> String {
        format!(
            "http/{}/{}/{}/{}",
            self.base.origin().ascii_serialization(),
            self.model,
            self.voice,
            self.words_per_minute
        )
    }

    fn synthesize<'a>(&'a self, text: &'a str, out: &'a Path) -> SpeechFuture<'a> {
        Box::pin(async move {
            let engine = self.engine();
            let audio = within(&engine, self.timeout, self.fetch(text)).await?;
            if audio.len() <= 44 {
                return Err(TtsError::Failed {
                    engine,
                    why: "it sent no audio".into(),
                });
            }
            tokio::fs::write(out, &audio)
                .await
                .map_err(|e| TtsError::Cache(e.to_string()))
        })
    }
}

/// A clip in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    /// The WAV file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
}

/// The cache's bookkeeping: keys oldest first, with their sizes.
#[derive(Debug, Default)]
struct Index {
    order: VecDeque<String>,
    sizes: HashMap<String, u64>,
    bytes: u64,
}

impl Index {
    fn touch(&mut self, key: &str) {
        if let Some(pos) = self.order.iter().position(|k| k == key) {
            let k = self.order.remove(pos).expect("position is in range");
            self.order.push_back(k);
        }
    }

    fn insert(&mut self, key: String, size: u64) {
        if let Some(old) = self.sizes.insert(key.clone(), size) {
            self.bytes -= old;
            self.order.retain(|k| *k != key);
        }
        self.bytes += size;
        self.order.push_back(key);
    }

    fn remove(&mut self, key: &str) {
        if let Some(size) = self.sizes.remove(key) {
            self.bytes -= size;
            self.order.retain(|k| k != key);
        }
    }
}

type Pending = Arc<OnceCell<Result<Clip, TtsError>>>;

/// Synthesised clips on disk, bounded by count and bytes.
#[derive(Debug)]
pub struct SpeechCache {
    dir: PathBuf,
    max_clips: usize,
    max_bytes: u64,
    index: Mutex<Index>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl SpeechCache {
    /// The cache in `dir` (made 0700 if missing): the clips already there count, oldest
    /// first by modification time, and the bounds apply at once.
    pub fn open(dir: &Path, max_clips: usize, max_bytes: u64) -> Result<SpeechCache, TtsError> {
        let io = |e: std::io::Error| TtsError::Cache(format!("{}: {e}", dir.display()));
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            // Every folder made on the way is the owner's alone, as MOAT_HOME's are.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Ok(meta) = entry.metadata() else { continue };
            if name.starts_with(".tmp-") {
                // A synthesis cut short by a crash.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if let Some(key) = name.strip_suffix(".wav") {
                let when = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                found.push((when, key.to_string(), meta.len()));
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, key, size) in found {
            index.insert(key, size);
        }
        let cache = SpeechCache {
            dir: dir.to_path_buf(),
            max_clips: max_clips.max(1),
            max_bytes,
            index: Mutex::new(index),
            pending: Mutex::new(HashMap::new()),
        };
        cache.evict();
        Ok(cache)
    }

    /// How many clips and bytes the cache holds.
    pub fn usage(&self) -> (usize, u64) {
        let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        (index.order.len(), index.bytes)
    }

    /// `text` spoken by `speech`: from the cache (`true`) or synthesised now (`false`).
    pub async fn speak(&self, speech: &dyn Speech, text: &str) -> Result<(Clip, bool), TtsError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS {
            return Err(TtsError::Text);
        }
        let key = cache_key(&speech.voice_id(), text);
        let path = self.dir.join(format!("{key}.wav"));
        {
            let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(&bytes) = index.sizes.get(&key) {
                if path.exists() {
                    index.touch(&key);
                    return Ok((Clip { path, bytes }, true));
                }
                index.remove(&key);
            }
        }
        let cell = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        let mut made_here = false;
        let result = cell
            .get_or_init(|| {
                made_here = true;
                self.synthesize(speech, text, &key, &path)
            })
            .await
            .clone();
        if made_here {
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        }
        result.map(|clip| (clip, false))
    }

    async fn synthesize(
        &self,
        speech: &dyn Speech,
        text: &str,
        key: &str,
        path: &Path,
    ) -> Result<Clip, TtsError> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).expect("the operating system's random source works");
        let tmp = self
            .dir
            .join(format!(".tmp-{key}-{}.wav", hex::encode(nonce)));
        let made = speech.synthesize(text, &tmp).await;
        let placed = made.and_then(|()| {
            let io = |e: std::io::Error| TtsError::Cache(e.to_string());
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
            if let Ok(d) = std::fs::File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok(std::fs::metadata(path).map_err(io)?.len())
        });
        let bytes = match placed {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        self.index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_string(), bytes);
        self.evict();
        Ok(Clip {
            path: path.to_path_buf(),
            bytes,
        })
    }

    /// Drops the least recently used clips until both bounds hold.
    fn evict(&self) {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        while index.order.len() > self.max_clips
            || (index.bytes > self.max_bytes && index.order.len() > 1)
        {
            let Some(old) = index.order.front().cloned() else {
                break;
            };
            index.remove(&old);
            let _ = std::fs::remove_file(self.dir.join(format!("{old}.wav")));
        }
    }
}

fn cache_key(voice: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(voice.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The length of a PCM WAV file's audio, from its header.
pub fn wav_duration(bytes: &[u8]) -> Option<Duration> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " && body + 12 <= bytes.len() {
            byte_rate = Some(u32::from_le_bytes(
                bytes[body + 8..body + 12].try_into().ok()?,
            ));
        }
        if id == b"data" {
            // Engines that stream write a placeholder size: count what is there.
            let len = size.min(bytes.len() - body);
            return Some(Duration::from_secs_f64(
                len as f64 / f64::from(byte_rate.filter(|r| *r > 0)?),
            ));
        }
        at = body + size + (size & 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A voice that writes a WAV of `text.len() * 100` bytes and counts its work.
    struct Fake {
        runs: AtomicUsize,
        delay: Duration,
    }

    fn wav(data: usize) -> Vec<u8> {
        let mut w = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        w.extend(16u32.to_le_bytes());
        w.extend(1u16.to_le_bytes()); // PCM
        w.extend(1u16.to_le_bytes()); // mono
        w.extend(22_050u32.to_le_bytes());
        w.extend(44_100u32.to_le_bytes()); // byte rate
        w.extend(2u16.to_le_bytes());
        w.extend(16u16.to_le_bytes());
        w.extend(b"data");
        w.extend((data as u32).to_le_bytes());
        w.resize(w.len() + data, 0);
        w
    }

    impl Speech for Fake {
        fn voice_id(&self) -> String {
            "fake/1".into()
        }
        fn synthesize<'a>(&'a self, text: &'a str, out: &'a Path) -> SpeechFuture<'a> {
            Box::pin(async move {
                self.runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                std::fs::write(out, wav(text.len() * 100)).unwrap();
                Ok(())
            })
        }
    }

    fn fake(delay_ms: u64) -> Fake {
        Fake {
            runs: AtomicUsize::new(0),
            delay: Duration::from_millis(delay_ms),
        }
    }

    #[tokio::test]
    async fn a_clip_is_made_once_and_then_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SpeechCache::open(dir.path(), 10, 1 << 20).unwrap();
        let voice = fake(0);
        let (a, hit) = cache.speak(&voice, "hello there").await.unwrap();
        assert!(!hit);
        let (b, hit) = cache.speak(&voice, "  hello there ").await.unwrap();
        assert!(hit);
        assert_eq!(a, b);
        assert_eq!(voice.runs.load(Ordering::SeqCst), 1);
        assert_eq!(
            wav_duration(&std::fs::read(&a.path).unwrap()),
            Some(Duration::from_secs_f64(1100.0 / 44_100.0))
        );
        // A reopened cache knows its clips.
        drop(cache);
        let cache = SpeechCache::open(dir.path(), 10, 1 << 20).unwrap();
        assert!(cache.speak(&voice, "hello there").await.unwrap().1);
        assert!(matches!(
            cache.speak(&voice, " ").await,
            Err(TtsError::Text)
        ));
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_clip_share_one_synthesis() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(SpeechCache::open(dir.path(), 10, 1 << 20).unwrap());
        let voice = Arc::new(fake(50));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (cache, voice) = (cache.clone(), voice.clone());
            tasks.push(tokio::spawn(async move {
                let text = if i % 2 == 0 {
                    "the news"
                } else {
                    "the weather"
                };
                cache.speak(voice.as_ref(), text).await.unwrap().0
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().path.exists());
        }
        assert_eq!(voice.runs.load(Ordering::SeqCst), 2);
        // Nothing half-written is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| !n.starts_with(".tmp-")));
    }

    #[tokio::test]
    async fn the_least_recently_used_clips_go_first_by_count_and_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let voice = fake(0);
        let cache = SpeechCache::open(dir.path(), 3, 1 << 20).unwrap();
        for t in ["one", "two", "three"] {
            cache.speak(&voice, t).await.unwrap();
        }
        // A hit makes "one" the most recent; "two" is then the oldest.
        assert!(cache.speak(&voice, "one").await.unwrap().1);
        cache.speak(&voice, "four").await.unwrap();
        assert_eq!(cache.usage().0, 3);
        assert!(cache.speak(&voice, "one").await.unwrap().1);
        assert!(
            !cache.speak(&voice, "two").await.unwrap().1,
            "two was evicted"
        );
        // By bytes: each clip is ~44 + 100 per character.
        let dir = tempfile::tempdir().unwrap();
        let cache = SpeechCache::open(dir.path(), 100, 2_000).unwrap();
        for t in ["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"] {
            cache.speak(&voice, t).await.unwrap();
        }
        let (clips, bytes) = cache.usage();
        assert!(bytes <= 2_000, "{bytes}");
        assert_eq!(clips, 1);
        assert!(cache.speak(&voice, "cccccccccc").await.unwrap().1);
    }
}

#[cfg(test)]
mod http_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server: answers the first request with `status`, `content_type`
    /// and `body`, and hands back what it received.
    async fn serve_once(
        status: &'static str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> (url::Url, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Head, then as much body as Content-Length says.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if rest.len() >= len {
                        break;
                    }
                }
            }
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&body).await.unwrap();
            String::from_utf8_lossy(&got).to_string()
        });
        let url = url::Url::parse(&format!("http://{addr}/v1")).unwrap();
        (url, task)
    }

    fn silence_wav(seconds: u32) -> Vec<u8> {
        let data = 16_000 * 2 * seconds;
        let mut w = b"RIFF".to_vec();
        w.extend_from_slice(&(36 + data).to_le_bytes());
        w.extend_from_slice(b"WAVEfmt ");
        w.extend_from_slice(&16u32.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes());
        w.extend_from_slice(&16_000u32.to_le_bytes());
        w.extend_from_slice(&32_000u32.to_le_bytes());
        w.extend_from_slice(&2u16.to_le_bytes());
        w.extend_from_slice(&16u16.to_le_bytes());
        w.extend_from_slice(b"data");
        w.extend_from_slice(&data.to_le_bytes());
        w.resize(44 + data as usize, 0);
        w
    }

    const KEY: &str = "speech-key-CANARY-81c3";

    fn engine(url: url::Url) -> HttpSpeech {
        HttpSpeech::new(
            url,
            "tts-1".into(),
            "alloy".into(),
            165,
            Some(SecretString::new(KEY.to_string())),
            Duration::from_secs(5),
        )
    }

    #[tokio::test]
    async fn a_speech_server_is_asked_for_wav_with_the_key_and_its_audio_kept() {
        let (url, seen) = serve_once("200 OK", "audio/wav", silence_wav(2)).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("clip.wav");
        engine(url).synthesize("Good evening", &out).await.unwrap();
        assert_eq!(
            wav_duration(&std::fs::read(&out).unwrap()),
            Some(Duration::from_secs(2))
        );
        let request = seen.await.unwrap();
        assert!(
            request.starts_with("POST /v1/audio/speech HTTP/1.1"),
            "{request}"
        );
        assert!(
            request.contains(&format!("authorization: Bearer {KEY}")),
            "{request}"
        );
        let body: serde_json::Value =
            serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["input"], "Good evening");
        assert_eq!(body["response_format"], "wav");
        assert_eq!(
            (body["model"].as_str(), body["voice"].as_str()),
            (Some("tts-1"), Some("alloy"))
        );
    }

    #[tokio::test]
    async fn a_refusing_or_odd_server_fails_the_clip_and_never_echoes_the_key() {
        let (url, _) = serve_once(
            "401 Unauthorized",
            "application/json",
            br#"{"error":"invalid key"}"#.to_vec(),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("clip.wav");
        let e = engine(url).synthesize("hi", &out).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("401") && text.contains("invalid key"),
            "{text}"
        );
        assert!(!text.contains(KEY), "{text}");
        let (url, _) = serve_once("200 OK", "text/html", b"<html>login</html>".to_vec()).await;
        let e = engine(url).synthesize("hi", &out).await.unwrap_err();
        assert!(e.to_string().contains("not audio"), "{e}");
        assert!(!out.exists());
        // Nothing listening: a clear failure, not a hang.
        let closed = url::Url::parse("http://127.0.0.1:9/v1").unwrap();
        assert!(engine(closed).synthesize("hi", &out).await.is_err());
    }
}
