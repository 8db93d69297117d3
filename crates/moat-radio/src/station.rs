//! The station: the playout loop (load, decode, mix, encode, in wall-clock time), the
//! refill loop (keeps the horizon planned from the source, no repeats inside the window),
//! and the handle the routes use (listen, now playing, skip, pause, queue, search).
//!
//! Playout runs on a 20 ms tick and produces exactly as much audio as wall-clock time
//! has passed, plus a small lead, so the stream is real-time for every listener without
//! anyone pulling it. A track is loaded into the next deck shortly before the playing one
//! ends; it goes on air only once enough of it is decoded to measure its loudness, so a
//! transition never waits on the network. What cannot play (a missing file, a download
//! that fails) is dropped from the plan and the next item is tried.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moat_core::config::radio::{CrossfadeCurve, Source, StreamFormat};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::broadcast::{Broadcast, Listener};
use crate::ffmpeg::{self, Decoder, Encoder};
use crate::mixer::{CHANNELS, Deck, Mixer, Overlay, RATE, normalising_gain, rms_db, to_s16le};
use crate::programme::{Item, ItemState, Origin, Programme};
use crate::subsonic::{Song, Subsonic, SubsonicError};
use crate::tts::{Speech, SpeechCache, TtsError};

/// How far ahead of wall-clock time the mixer runs.
const LEAD: Duration = Duration::from_millis(300);
/// The playout tick.
const TICK: Duration = Duration::from_millis(20);
/// Audio measured for loudness before a track airs.
const MEASURE: Duration = Duration::from_secs(5);
/// A track starts loading when this much of the playing one is left (plus the fade).
const PRELOAD: Duration = Duration::from_secs(15);
/// A skip fades out over at most this.
const SKIP_FADE: Duration = Duration::from_millis(800);
/// How often an empty plan is looked at again (the refiller fills it meanwhile).
const PLAN_LOOK: Duration = Duration::from_millis(250);
/// Planned items shown as "coming up".
const SHOWN_AHEAD: usize = 10;

/// What the station is set to.
#[derive(Debug, Clone)]
pub struct StationSettings {
    /// The ffmpeg binary.
    pub ffmpeg: PathBuf,
    /// The stream's encoding.
    pub format: StreamFormat,
    /// Its bitrate.
    pub bitrate_kbps: u32,
    /// The crossfade.
    pub crossfade: Duration,
    /// Its curve.
    pub curve: CrossfadeCurve,
    /// The no-repeat window.
    pub no_repeat: Duration,
    /// Planned air kept ahead.
    pub horizon: Duration,
    /// Gain normalisation target.
    pub target_loudness_db: f32,
    /// Where picks come from.
    pub source: Source,
    /// The music's level under the voice (dB), and how fast it ducks and comes back.
    pub duck: (f32, Duration, Duration),
}

/// The DJ's voice: an engine and its clip cache.
#[derive(Clone)]
pub struct Voice {
    /// The engine.
    pub speech: Arc<dyn Speech>,
    /// The clips.
    pub cache: Arc<SpeechCache>,
}

/// What `say` put on air.
#[derive(Debug, Clone, Serialize)]
pub struct Said {
    /// The clip's length.
    pub seconds: f64,
    /// Whether the clip came from the cache.
    pub cached: bool,
}

/// A listener's message for the DJ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who wrote it (as they gave it).
    pub from: String,
    /// What they wrote.
    pub text: String,
}

/// Messages waiting for the DJ at most.
const MAX_MESSAGES: usize = 20;
/// The longest message.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// The longest speech put on air at once.
const MAX_SPEECH: Duration = Duration::from_secs(120);

/// A planned or airing item as pages see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Entry {
    /// Place in the log.
    pub seq: i64,
    /// The library's song id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Artist.
    pub artist: String,
    /// Album.
    pub album: String,
    /// Whether a cover can be fetched (`/radio/cover/{id}` with the song's id).
    pub has_cover: bool,
    /// Length.
    pub duration_ms: u64,
    /// Queued by the owner or picked.
    pub origin: Origin,
    /// When it started (on air) or is planned to start, unix milliseconds.
    pub start_ms: u64,
}

/// The station's state, as the now-playing route and the event socket show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    /// `starting`, `playing`, `paused` or `waiting` (nothing to play yet).
    pub state: &'static str,
    /// On air.
    pub now: Option<Entry>,
    /// Coming up, in order.
    pub next: Vec<Entry>,
    /// Listeners connected.
    pub listeners: usize,
    /// The stream's MIME type.
    pub content_type: &'static str,
    /// What keeps the station from playing, if anything (the library unreachable...).
    pub problem: Option<String>,
    /// A voice is on air (the music ducked under it).
    pub speaking: bool,
    /// What the voice said last.
    pub last_talk: Option<String>,
}

enum Command {
    Skip,
    Pause(bool),
    Crossfade(Duration),
    /// Publish the state now (the plan changed), then answer.
    Refresh(oneshot::Sender<()>),
    /// A voice over the music, and its words.
    Speak(Deck, Option<String>),
}

/// A running station; cheap to clone.
#[derive(Clone)]
pub struct Station {
    shared: Arc<Shared>,
}

struct Shared {
    library: Arc<Subsonic>,
    programme: Arc<Programme>,
    broadcast: Arc<Broadcast>,
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Snapshot>,
    refill: Arc<Notify>,
    source: watch::Sender<Source>,
    format: StreamFormat,
    tasks: Vec<JoinHandle<()>>,
    voice: Option<Voice>,
    ffmpeg: PathBuf,
    target_loudness_db: f32,
    messages: std::sync::Mutex<std::collections::VecDeque<Message>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl std::fmt::Debug for Station {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Station").finish_non_exhaustive()
    }
}

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The library refused or failed.
    #[error(transparent)]
    Library(#[from] SubsonicError),
    /// The programme could not be written.
    #[error(transparent)]
    Log(#[from] crate::programme::LogError),
    /// The station has stopped.
    #[error("the station has stopped")]
    Stopped,
    /// Speech could not be made.
    #[error(transparent)]
    Speech(#[from] TtsError),
    /// The station has no voice.
    #[error("the station has no voice: {0}")]
    NoVoice(String),
}

impl Station {
    /// Starts playing `library` with `settings`, the programme in `programme`.
    pub fn start(
        library: Subsonic,
        programme: Programme,
        settings: StationSettings,
        voice: Option<Voice>,
    ) -> Station {
        let library = Arc::new(library);
        let programme = Arc::new(programme);
        // About a second of audio for a newcomer's player to start on.
        let burst = (settings.bitrate_kbps as usize * 1000 / 8).max(8 * 1024);
        let broadcast = Arc::new(Broadcast::new(burst));
        let encoder = Encoder::start(
            settings.ffmpeg.clone(),
            settings.format,
            settings.bitrate_kbps,
            broadcast.clone(),
        );
        let (commands, rx) = mpsc::channel(16);
        let first = Snapshot {
            state: "starting",
            now: None,
            next: Vec::new(),
            listeners: 0,
            content_type: settings.format.content_type(),
            problem: None,
            speaking: false,
            last_talk: None,
        };
        let (snap_tx, snapshot) = watch::channel(first);
        let (problem_tx, problem_rx) = watch::channel(None::<String>);
        let (source, source_rx) = watch::channel(settings.source.clone());
        let refill = Arc::new(Notify::new());
        let (remaining_tx, remaining_rx) = watch::channel(Duration::ZERO);
        let playout = Playout {
            mixer: Mixer::new(settings.curve, frames_of(settings.crossfade)),
            overlay: Overlay::new(
                settings.duck.0,
                frames_of(settings.duck.1),
                frames_of(settings.duck.2),
            ),
            last_talk: None,
            current: None,
            next: None,
            loading: None,
            paused: false,
            skip_pending: false,
            skipped: false,
            encoder,
            programme: programme.clone(),
            library: library.clone(),
            settings: settings.clone(),
            broadcast: broadcast.clone(),
            snapshot: snap_tx,
            problem: problem_rx,
            remaining: remaining_tx,
            refill: refill.clone(),
            failed_loads: 0,
            last_plan_look: Instant::now() - PLAN_LOOK,
        };
        let refiller = Refiller {
            library: library.clone(),
            programme: programme.clone(),
            settings: settings.clone(),
            source: source_rx,
            remaining: remaining_rx,
            problem: problem_tx,
            wake: refill.clone(),
        };
        let tasks = vec![tokio::spawn(playout.run(rx)), tokio::spawn(refiller.run())];
        Station {
            shared: Arc::new(Shared {
                library,
                programme,
                broadcast,
                commands,
                snapshot,
                refill,
                source,
                format: settings.format,
                tasks,
                voice,
                ffmpeg: settings.ffmpeg.clone(),
                target_loudness_db: settings.target_loudness_db,
                messages: std::sync::Mutex::new(std::collections::VecDeque::new()),
            }),
        }
    }

    /// Stops the station: every listener's stream ends (the server is shutting down).
    pub fn stop(&self) {
        self.shared.broadcast.close();
        for t in &self.shared.tasks {
            t.abort();
        }
    }

    /// A new listener of the live stream.
    pub fn listen(&self) -> Listener {
        self.shared.broadcast.subscribe()
    }

    /// The voice's identity (engine, voice, speed), when the station has one.
    pub fn voice_id(&self) -> Option<String> {
        self.shared.voice.as_ref().map(|v| v.speech.voice_id())
    }

    /// The stream's MIME type.
    pub fn content_type(&self) -> &'static str {
        self.shared.format.content_type()
    }

    /// The state now.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot.borrow().clone()
    }

    /// Changes of state, for the event socket.
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.shared.snapshot.clone()
    }

    /// The library the station plays.
    pub fn library(&self) -> &Subsonic {
        &self.shared.library
    }

    /// Fades to the next item.
    pub async fn skip(&self) -> Result<(), ControlError> {
        self.send(Command::Skip).await
    }

    /// Pauses (the stream carries silence) or resumes.
    pub async fn pause(&self, paused: bool) -> Result<(), ControlError> {
        self.send(Command::Pause(paused)).await
    }

    /// Changes the crossfade from the next transition on.
    pub async fn set_crossfade(&self, fade: Duration) -> Result<(), ControlError> {
        self.send(Command::Crossfade(fade)).await
    }

    /// Changes the source of picks from the next refill on.
    pub fn set_source(&self, source: Source) {
        self.shared.source.send_replace(source);
        self.shared.refill.notify_one();
    }

    /// The source picks come from.
    pub fn source(&self) -> Source {
        self.shared.source.borrow().clone()
    }

    /// Speaks `text` over the music (the music ducked under it); returns once the voice
    /// is on air. Synthesis and decoding happen here, never in the playout loop.
    pub async fn say(&self, text: &str) -> Result<Said, ControlError> {
        let (deck, said) = self.prepare_speech(text).await?;
        self.air(deck, Some(text.trim().to_string())).await?;
        Ok(said)
    }

    /// Puts a prepared voice on air now, over the music.
    pub async fn air(&self, voice: Deck, words: Option<String>) -> Result<(), ControlError> {
        self.send(Command::Speak(voice, words)).await
    }

    /// `text` spoken, decoded and brought to the station's loudness, ready to air:
    /// everything slow happens here, outside the playout loop.
    pub async fn prepare_speech(&self, text: &str) -> Result<(Deck, Said), ControlError> {
        let voice = self
            .shared
            .voice
            .as_ref()
            .ok_or_else(|| ControlError::NoVoice("radio.tts is not usable".into()))?;
        let (clip, cached) = voice.cache.speak(voice.speech.as_ref(), text).await?;
        let bytes = tokio::fs::read(&clip.path)
            .await
            .map_err(|e| TtsError::Cache(e.to_string()))?;
        let body = http_body_util::Full::new(Bytes::from(bytes));
        let mut decoder =
            ffmpeg::decode(&self.shared.ffmpeg, body).map_err(|e| TtsError::Failed {
                engine: self.shared.ffmpeg.display().to_string(),
                why: e.to_string(),
            })?;
        let mut deck = Deck::new();
        while let Some(block) = decoder.pcm.recv().await {
            if deck.frames() > frames_of(MAX_SPEECH) {
                break;
            }
            deck.push(&block);
        }
        deck.finished = true;
        let head = deck.head(frames_of(MEASURE) * CHANNELS);
        deck.gain = normalising_gain(None, rms_db(&head), self.shared.target_loudness_db);
        let seconds = deck.frames() as f64 / f64::from(RATE);
        Ok((deck, Said { seconds, cached }))
    }

    /// Leaves a listener's message for the DJ (already screened by the caller); false
    /// when too many are waiting. Control characters go; the text is bounded.
    pub fn leave_message(&self, from: &str, text: &str) -> bool {
        let clean = |s: &str, n: usize| -> String {
            s.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(n)
                .collect::<String>()
                .trim()
                .to_string()
        };
        let mut waiting = self
            .shared
            .messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if waiting.len() >= MAX_MESSAGES {
            return false;
        }
        waiting.push_back(Message {
            from: clean(from, 60),
            text: clean(text, MAX_MESSAGE_CHARS),
        });
        true
    }

    /// The oldest waiting message, taken.
    pub fn take_message(&self) -> Option<Message> {
        self.shared
            .messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
    }

    /// Puts a message back first in line (its segment could not be made).
    pub fn return_message(&self, m: Message) {
        self.shared
            .messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_front(m);
    }

    /// Whether a message is waiting.
    pub fn has_message(&self) -> bool {
        !self
            .shared
            .messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// Queues a song to play after the other queued ones.
    pub async fn queue(&self, id: &str) -> Result<Item, ControlError> {
        let song = self.shared.library.song(id).await?;
        let item = self.shared.programme.add(&song, Origin::Queued)?;
        self.shared.refill.notify_one();
        self.refresh().await?;
        Ok(item)
    }

    /// Sends a command; returns once it is applied and the state published, so whoever
    /// asked sees its effect from then on.
    async fn send(&self, c: Command) -> Result<(), ControlError> {
        self.shared
            .commands
            .send(c)
            .await
            .map_err(|_| ControlError::Stopped)?;
        self.refresh().await
    }

    async fn refresh(&self) -> Result<(), ControlError> {
        let (done, published) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Refresh(done))
            .await
            .map_err(|_| ControlError::Stopped)?;
        published.await.map_err(|_| ControlError::Stopped)
    }
}

fn frames_of(d: Duration) -> usize {
    (d.as_secs_f64() * f64::from(RATE)) as usize
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_now() -> i64 {
    (unix_ms(SystemTime::now()) / 1000) as i64
}

/// A track in a deck.
struct Loaded {
    item: Item,
    deck: Deck,
    decoder: Option<Decoder>,
    on_air_at: Option<SystemTime>,
    gain_set: bool,
}

impl Loaded {
    /// Moves decoded audio into the deck, keeping `lookahead` frames buffered.
    fn drain(&mut self, lookahead: usize) {
        let Some(decoder) = &mut self.decoder else {
            return;
        };
        while self.deck.frames() < lookahead {
            match decoder.pcm.try_recv() {
                Ok(block) => self.deck.push(&block),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.deck.finished = true;
                    self.decoder = None;
                    return;
                }
            }
        }
    }

    /// Enough decoded to measure and air.
    fn ready(&self) -> bool {
        self.deck.finished || self.deck.frames() >= frames_of(MEASURE)
    }

    /// Frames left of the track, by its stated length where the decoder has not finished.
    fn remaining(&self) -> Duration {
        if self.deck.finished {
            return Duration::from_secs_f64(self.deck.frames() as f64 / f64::from(RATE));
        }
        let played = Duration::from_secs_f64(self.deck.played as f64 / f64::from(RATE));
        Duration::from_millis(self.item.song.duration_ms).saturating_sub(played)
    }
}

struct Playout {
    mixer: Mixer,
    overlay: Overlay,
    last_talk: Option<String>,
    current: Option<Loaded>,
    next: Option<Loaded>,
    loading: Option<JoinHandle<Result<Loaded, String>>>,
    paused: bool,
    skip_pending: bool,
    /// The item on air was cut short (logged as skipped when it goes off air).
    skipped: bool,
    encoder: Encoder,
    programme: Arc<Programme>,
    library: Arc<Subsonic>,
    settings: StationSettings,
    broadcast: Arc<Broadcast>,
    snapshot: watch::Sender<Snapshot>,
    problem: watch::Receiver<Option<String>>,
    remaining: watch::Sender<Duration>,
    refill: Arc<Notify>,
    failed_loads: u32,
    last_plan_look: Instant,
}

impl Playout {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let start = Instant::now();
        let mut produced: u64 = 0;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_snapshot = Instant::now() - Duration::from_secs(10);
        let mut out = Vec::new();
        let mut pcm = Vec::new();
        loop {
            tokio::select! {
                c = commands.recv() => match c {
                    Some(c) => { self.command(c); continue; }
                    None => return,
                },
                _ = tick.tick() => {}
            }
            let mut changed = self.poll_loading();
            let lookahead =
                self.mixer.fade_frames() + frames_of(MEASURE) + frames_of(Duration::from_secs(1));
            for l in [&mut self.current, &mut self.next].into_iter().flatten() {
                l.drain(lookahead);
            }
            changed |= self.drop_empty_load();
            self.set_gains();
            changed |= self.advance_plan();

            let due = (start.elapsed() + LEAD).as_secs_f64() * f64::from(RATE);
            while (produced as f64) < due {
                let frames = ((due - produced as f64) as usize).clamp(1, 4096);
                out.clear();
                changed |= self.produce(frames, &mut out);
                changed |= self.overlay.process(&mut out);
                produced += (out.len() / CHANNELS) as u64;
                pcm.clear();
                to_s16le(&out, &mut pcm);
                if !self.encoder.send(Bytes::copy_from_slice(&pcm)) {
                    tracing::debug!("the radio encoder is backed up; a block was dropped");
                }
            }
            if changed || last_snapshot.elapsed() >= Duration::from_secs(1) {
                self.publish();
                last_snapshot = Instant::now();
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Skip => {
                if self.current.is_some() {
                    self.skip_pending = true;
                }
            }
            Command::Pause(p) => self.paused = p,
            Command::Crossfade(d) => {
                self.mixer.set_fade_frames(frames_of(d));
                self.settings.crossfade = d;
            }
            Command::Speak(deck, words) => {
                self.overlay.speak(deck);
                if words.is_some() {
                    self.last_talk = words;
                }
            }
            Command::Refresh(done) => {
                self.publish();
                let _ = done.send(());
                return;
            }
        }
        self.publish();
    }

    /// Takes a finished load into the next deck.
    fn poll_loading(&mut self) -> bool {
        if !self.loading.as_ref().is_some_and(JoinHandle::is_finished) {
            return false;
        }
        let handle = self.loading.take().expect("checked above");
        match futures_util::FutureExt::now_or_never(handle) {
            Some(Ok(Ok(loaded))) => {
                self.failed_loads = 0;
                self.next = Some(loaded);
            }
            // The loader logged why and dropped the item; the next one is tried.
            _ => self.failed_loads += 1,
        }
        true
    }

    /// A loaded track that decoded to (almost) nothing: not audio, or a format ffmpeg
    /// cannot read from a pipe. It is dropped as a failed load, never aired or scrobbled.
    fn drop_empty_load(&mut self) -> bool {
        let empty = self.next.as_ref().is_some_and(|n| {
            n.deck.finished
                && n.deck.played == 0
                && n.deck.frames() < frames_of(Duration::from_secs(1))
        });
        if empty && let Some(n) = self.next.take() {
            tracing::warn!(track = %n.item.song.id, "a planned track decoded to no audio and is dropped");
            if let Err(e) = self.programme.drop_planned(n.item.seq) {
                tracing::error!("{e}");
            }
            self.failed_loads += 1;
            return true;
        }
        false
    }

    fn set_gains(&mut self) {
        let target = self.settings.target_loudness_db;
        for l in [&mut self.current, &mut self.next].into_iter().flatten() {
            if !l.gain_set && l.ready() {
                let head = l.deck.head(frames_of(MEASURE) * CHANNELS);
                l.deck.gain = normalising_gain(l.item.song.track_gain_db, rms_db(&head), target);
                l.gain_set = true;
            }
        }
    }

    /// Starts loading what comes next when it is time; promotes a ready next deck when
    /// nothing is on air.
    fn advance_plan(&mut self) -> bool {
        let mut changed = false;
        if self.current.is_none() && self.next.as_ref().is_some_and(Loaded::ready) && !self.paused {
            let mut l = self.next.take().expect("checked above");
            self.on_air(&mut l);
            self.current = Some(l);
            changed = true;
        }
        let due = match &self.current {
            None => true,
            Some(c) => self.skip_pending || c.remaining() <= self.settings.crossfade + PRELOAD,
        };
        if due
            && self.next.is_none()
            && self.loading.is_none()
            && self.last_plan_look.elapsed() >= PLAN_LOOK
        {
            self.last_plan_look = Instant::now();
            let taken: Vec<i64> = self.current.iter().map(|c| c.item.seq).collect();
            match self.programme.planned() {
                Ok(planned) => {
                    if let Some(item) = planned.into_iter().find(|i| !taken.contains(&i.seq)) {
                        self.load(item);
                    } else {
                        self.refill.notify_one();
                    }
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
        if let Some(c) = &self.current {
            self.remaining.send_replace(c.remaining());
        } else {
            self.remaining.send_replace(Duration::ZERO);
        }
        changed
    }

    fn load(&mut self, item: Item) {
        let library = self.library.clone();
        let ffmpeg = self.settings.ffmpeg.clone();
        let programme = self.programme.clone();
        // After failures in a row, wait a little before the next try: a library that is
        // down should not be hammered, nor a plan of missing files burnt through at once.
        let pause = Duration::from_millis(250 * u64::from(self.failed_loads.min(20)));
        self.loading = Some(tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            let result = async {
                let resp = library
                    .stream(&item.song.id, None)
                    .await
                    .map_err(|e| e.to_string())?;
                let decoder = ffmpeg::decode(&ffmpeg, resp.into_body())
                    .map_err(|e| format!("cannot start {}: {e}", ffmpeg.display()))?;
                Ok::<_, String>(decoder)
            }
            .await;
            match result {
                Ok(decoder) => Ok(Loaded {
                    item,
                    deck: Deck::new(),
                    decoder: Some(decoder),
                    on_air_at: None,
                    gain_set: false,
                }),
                Err(why) => {
                    tracing::warn!(track = %item.song.id, "a planned track cannot be played and is dropped: {why}");
                    if let Err(e) = programme.drop_planned(item.seq) {
                        tracing::error!("{e}");
                    }
                    Err(why)
                }
            }
        }));
    }

    fn on_air(&mut self, l: &mut Loaded) {
        l.on_air_at = Some(SystemTime::now());
        if let Err(e) = self
            .programme
            .mark(l.item.seq, ItemState::OnAir, unix_now())
        {
            tracing::error!("{e}");
        }
        tracing::info!(track = %l.item.song.id, title = %l.item.song.title, "on air");
        let library = self.library.clone();
        let id = l.item.song.id.clone();
        tokio::spawn(async move {
            if let Err(e) = library.scrobble(&id, false).await {
                tracing::debug!("now-playing not sent to the library: {e}");
            }
        });
        self.refill.notify_one();
    }

    fn off_air(&mut self, l: Loaded, skipped: bool) {
        let state = if skipped {
            ItemState::Skipped
        } else {
            ItemState::Aired
        };
        if let Err(e) = self.programme.mark(l.item.seq, state, unix_now()) {
            tracing::error!("{e}");
        }
        if !skipped {
            let library = self.library.clone();
            let id = l.item.song.id;
            tokio::spawn(async move {
                if let Err(e) = library.scrobble(&id, true).await {
                    tracing::debug!("the play was not recorded by the library: {e}");
                }
            });
        }
    }

    /// Mixes `frames` frames into `out`; true if what is on air changed.
    fn produce(&mut self, frames: usize, out: &mut Vec<f32>) -> bool {
        if self.paused || self.current.is_none() {
            self.mixer.silence(frames, out);
            return false;
        }
        let mut changed = false;
        let next_ready = self.next.as_ref().is_some_and(Loaded::ready);
        if self.skip_pending && next_ready {
            if let Some(c) = &mut self.current {
                c.deck
                    .cut_after(frames_of(SKIP_FADE.min(self.settings.crossfade)));
                c.decoder = None;
            }
            self.skip_pending = false;
            self.skipped = true;
        }
        let mut left = frames;
        while left > 0 {
            let before = out.len();
            let current = self.current.as_mut().expect("checked above");
            let next = if next_ready {
                self.next.as_mut().map(|n| &mut n.deck)
            } else {
                None
            };
            let report = self.mixer.mix(&mut current.deck, next, left, out);
            left -= (out.len() - before) / CHANNELS;
            if report.fade_started {
                if let Some(mut n) = self.next.take() {
                    self.on_air(&mut n);
                    self.next = Some(n);
                }
                changed = true;
            }
            if report.switched {
                let old = self.current.take().expect("checked above");
                let skipped = std::mem::take(&mut self.skipped);
                self.off_air(old, skipped);
                self.current = self.next.take();
                changed = true;
                if self.current.is_none() {
                    self.mixer.silence(left, out);
                    break;
                }
                continue;
            }
            // The track ended with nothing ready after it.
            let current = self.current.as_ref().expect("checked above");
            if current.deck.finished && current.deck.frames() == 0 && !self.mixer.fading() {
                let old = self.current.take().expect("checked above");
                let skipped = std::mem::take(&mut self.skipped);
                self.off_air(old, skipped);
                changed = true;
                self.mixer.silence(left, out);
                break;
            }
            if report.underrun > 0 {
                break;
            }
        }
        changed
    }

    fn publish(&mut self) {
        let fade = self.settings.crossfade;
        let now = self
            .current
            .as_ref()
            .map(|c| entry(&c.item, c.on_air_at.map_or(0, unix_ms)));
        let mut start = match &self.current {
            Some(c) => SystemTime::now() + c.remaining().saturating_sub(fade),
            None => SystemTime::now(),
        };
        let mut next = Vec::new();
        let loaded = self.next.as_ref().map(|n| n.item.clone());
        let planned = self.programme.planned().unwrap_or_default();
        let on_air = self.current.as_ref().map(|c| c.item.seq);
        for item in loaded.into_iter().chain(planned.into_iter().filter(|i| {
            Some(i.seq) != on_air && self.next.as_ref().is_none_or(|n| n.item.seq != i.seq)
        })) {
            if next.len() >= SHOWN_AHEAD {
                break;
            }
            next.push(entry(&item, unix_ms(start)));
            start += Duration::from_millis(item.song.duration_ms).saturating_sub(fade);
        }
        let state = if self.paused {
            "paused"
        } else if self.current.is_some() {
            "playing"
        } else if next.is_empty() {
            "waiting"
        } else {
            "starting"
        };
        let snap = Snapshot {
            state,
            now,
            next,
            listeners: self.broadcast.listeners(),
            content_type: self.settings.format.content_type(),
            problem: self.problem.borrow().clone(),
            speaking: self.overlay.speaking(),
            last_talk: self.last_talk.clone(),
        };
        self.snapshot.send_if_modified(|s| {
            if *s == snap {
                false
            } else {
                *s = snap;
                true
            }
        });
    }
}

fn entry(item: &Item, start_ms: u64) -> Entry {
    Entry {
        seq: item.seq,
        id: item.song.id.clone(),
        title: item.song.title.clone(),
        artist: item.song.artist.clone(),
        album: item.song.album.clone(),
        has_cover: item.song.cover_art.is_some(),
        duration_ms: item.song.duration_ms,
        origin: item.origin,
        start_ms,
    }
}

/// Keeps the horizon planned.
struct Refiller {
    library: Arc<Subsonic>,
    programme: Arc<Programme>,
    settings: StationSettings,
    source: watch::Receiver<Source>,
    remaining: watch::Receiver<Duration>,
    problem: watch::Sender<Option<String>>,
    wake: Arc<Notify>,
}

impl Refiller {
    async fn run(mut self) {
        let mut backoff = Duration::from_secs(2);
        loop {
            match self.refill().await {
                Ok(()) => {
                    self.problem.send_replace(None);
                    backoff = Duration::from_secs(2);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                        _ = self.source.changed() => {}
                    }
                }
                Err(why) => {
                    tracing::warn!("the radio cannot plan ahead: {why}");
                    self.problem.send_replace(Some(why));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    async fn refill(&mut self) -> Result<(), String> {
        let fade = self.settings.crossfade;
        let planned = self.programme.planned().map_err(|e| e.to_string())?;
        let mut ahead = *self.remaining.borrow()
            + planned
                .iter()
                .map(|i| air_of(i.song.duration_ms, fade))
                .sum::<Duration>();
        if planned.len() >= MAX_PLANNED {
            return Ok(());
        }
        let mut rounds = 0;
        while ahead < self.settings.horizon && rounds < 8 {
            rounds += 1;
            let source = self.source.borrow().clone();
            let candidates = self.candidates(&source).await?;
            if candidates.is_empty() {
                return Err(format!(
                    "the library has no songs for the source {source:?}"
                ));
            }
            let window = self.settings.no_repeat.as_secs() as i64;
            let recent = self
                .programme
                .recent_ids(unix_now() - window)
                .map_err(|e| e.to_string())?;
            let mut fresh: Vec<&Song> = candidates
                .iter()
                .filter(|s| !recent.contains(&s.id))
                .collect();
            if fresh.is_empty() {
                // The window holds the whole source: the least recently aired goes next,
                // never one already planned.
                let planned_ids: Vec<String> = self
                    .programme
                    .planned()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|i| i.song.id)
                    .collect();
                let mut oldest: Option<(&Song, i64)> = None;
                for s in candidates.iter().filter(|s| !planned_ids.contains(&s.id)) {
                    let at = self
                        .programme
                        .last_aired(&s.id)
                        .map_err(|e| e.to_string())?
                        .unwrap_or(0);
                    if oldest.is_none_or(|(_, t)| at < t) {
                        oldest = Some((s, at));
                    }
                }
                match oldest {
                    Some((s, _)) => fresh.push(s),
                    None => return Ok(()), // everything is planned already
                }
            }
            for song in fresh {
                if ahead >= self.settings.horizon {
                    break;
                }
                self.programme
                    .add(song, Origin::Picked)
                    .map_err(|e| e.to_string())?;
                ahead += air_of(song.duration_ms, fade);
            }
        }
        Ok(())
    }

    async fn candidates(&self, source: &Source) -> Result<Vec<Song>, String> {
        let songs = match source {
            Source::Random => self.library.random_songs(50, None).await,
            Source::Genre(g) => self.library.random_songs(50, Some(g)).await,
            Source::Starred => self.library.starred_songs().await.map(shuffled),
            Source::Playlist(name) => {
                let lists = self.library.playlists().await.map_err(|e| e.to_string())?;
                let Some(list) = lists.iter().find(|p| p.name.eq_ignore_ascii_case(name)) else {
                    return Err(format!("the library has no playlist named {name:?}"));
                };
                self.library.playlist(&list.id).await
            }
        };
        songs.map_err(|e| e.to_string())
    }
}

/// The air a song is counted for when planning: its length less the fade, and at least
/// half a minute, so songs of unknown length (0) or shorter than the fade cannot make the
/// plan grow without end.
fn air_of(duration_ms: u64, fade: Duration) -> Duration {
    Duration::from_millis(duration_ms)
        .saturating_sub(fade)
        .max(Duration::from_secs(30))
}

/// Planned items kept at most.
const MAX_PLANNED: usize = 200;

/// `v` in random order.
fn shuffled<T>(mut v: Vec<T>) -> Vec<T> {
    for i in (1..v.len()).rev() {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).expect("the operating system's random source works");
        let j = (u32::from_le_bytes(b) as usize) % (i + 1);
        v.swap(i, j);
    }
    v
}
