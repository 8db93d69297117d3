//! The radio's pieces as `moat serve` and `moat radio` build them from config: the
//! library's password from the vault, its client, and the station.

use moat_core::config::radio::{LibraryConfig, RadioConfig, Source, TtsConfig};
use moat_core::home::Home;
use moat_core::secret::SecretString;
use moat_radio::context::Context;
use moat_radio::{Station, StationSettings, Subsonic};

/// Where the DJ's synthesised clips are kept.
pub(crate) fn speech_cache_dir(home: &Home) -> std::path::PathBuf {
    home.root().join("radio").join("speech")
}

/// The password of library `name`, from the vault.
pub(crate) fn password(
    vault: &moat_vault::Vault,
    name: &str,
    lib: &LibraryConfig,
) -> Result<SecretString, String> {
    vault_secret(
        vault,
        &lib.password_secret,
        &format!("radio.libraries.{name}.password_secret"),
    )
}

/// Secret `name` from the vault, for config key `key` (the reason as text: the radio
/// starts without what it cannot have).
fn vault_secret(vault: &moat_vault::Vault, name: &str, key: &str) -> Result<SecretString, String> {
    crate::app::secrets::resolve_secret(
        vault,
        &moat_core::secret::SecretRef::Vault(name.to_string()),
        key,
    )
    .map_err(|f| format!("{:#}", f.error()))
}

/// A client for library `name`.
pub(crate) fn client(
    name: &str,
    lib: &LibraryConfig,
    password: SecretString,
) -> Result<Subsonic, String> {
    let url = url::Url::parse(&lib.url)
        .map_err(|e| format!("radio.libraries.{name}.url is not a URL: {e}"))?;
    Ok(Subsonic::new(&url, &lib.user, password))
}

/// Starts the station on the configured library (inside the server's runtime).
pub(crate) async fn station(
    home: &Home,
    radio: &RadioConfig,
    password: Result<SecretString, String>,
    speech_key: Result<Option<SecretString>, String>,
    gateway: std::sync::Arc<moat_llm::Gateway>,
    context: &std::sync::Arc<Context>,
) -> Result<Station, String> {
    let Some((name, lib)) = radio.station_library() else {
        return Err(
            "no music library is configured; add one with `moat radio library add NAME --url URL --user USER --password-secret SECRET`"
                .into(),
        );
    };
    let library = client(name, lib, password?)?;
    moat_radio::ffmpeg::version(&radio.ffmpeg)
        .await
        .map_err(|e| {
            format!("{e}; install ffmpeg (Debian: apt install ffmpeg) or set radio.ffmpeg")
        })?;
    let db = moat_state::StateStore::open(&home.state_db()).map_err(|e| e.to_string())?;
    let programme = moat_radio::programme::Programme::open(db).map_err(|e| e.to_string())?;
    let settings = StationSettings {
        ffmpeg: radio.ffmpeg.clone(),
        format: radio.format,
        bitrate_kbps: radio.bitrate_kbps,
        crossfade: radio.crossfade,
        curve: radio.crossfade_curve,
        no_repeat: radio.no_repeat,
        horizon: radio.horizon,
        target_loudness_db: radio.target_loudness_db,
        source: Source::parse(&radio.source)?,
        duck: (
            radio.tts.duck_db,
            radio.tts.duck_attack,
            radio.tts.duck_release,
        ),
    };
    let cache = moat_radio::tts::SpeechCache::open(
        &speech_cache_dir(home),
        radio.tts.cache_max_clips,
        radio.tts.cache_max_bytes,
    )
    .map_err(|e| e.to_string());
    let voice = match (cache, speech_key.and_then(|key| speech(&radio.tts, key))) {
        (Ok(cache), Ok(speech)) => Some(moat_radio::Voice {
            speech,
            cache: std::sync::Arc::new(cache),
        }),
        (Err(why), _) | (_, Err(why)) => {
            tracing::warn!("the radio has no voice: {why}");
            None
        }
    };
    let has_voice = voice.is_some();
    let station = Station::start(library, programme, settings, voice);
    if radio.dj.enabled {
        if has_voice {
            let dj = &radio.dj;
            let settings = moat_radio::dj::DjSettings {
                persona: dj.persona.clone(),
                language: dj.language.clone(),
                words: dj.words,
                every: dj.every,
                talk_per_hour: dj.talk_per_hour,
                timeout: dj.timeout,
            };
            let writer = std::sync::Arc::new(Writer {
                gateway,
                model: dj.model.clone(),
                max_tokens: dj.words * 4,
            });
            tokio::spawn(moat_radio::dj::run(
                station.clone(),
                writer,
                settings,
                context.clone(),
            ));
        } else {
            tracing::warn!("the DJ is not talking: the station has no voice");
            context.dj_log(|l| {
                l.why_not = Some("the station has no voice (moat's log says why)".into());
            });
        }
    } else {
        context.dj_log(|l| {
            l.why_not = Some("radio.dj.enabled is false".into());
        });
    }
    tokio::spawn(context.clone().run());
    tokio::spawn(moat_radio::context::keep_silence(
        station.clone(),
        context.clone(),
    ));
    Ok(station)
}

/// The DJ's scriptwriter: a model call through moat's own router, in process.
struct Writer {
    gateway: std::sync::Arc<moat_llm::Gateway>,
    model: String,
    max_tokens: u32,
}

impl moat_radio::dj::Scriptwriter for Writer {
    fn write<'a>(&'a self, system: &'a str, prompt: &'a str) -> moat_radio::dj::ScriptFuture<'a> {
        Box::pin(async move {
            let body = serde_json::json!({
                "model": self.model,
                "max_tokens": self.max_tokens,
                "system": system,
                "messages": [{"role": "user", "content": prompt}],
            });
            let answer = self
                .gateway
                .messages(&body)
                .await
                .map_err(|e| format!("the model: {}", e.message))?;
            let text: String = answer["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            Ok(text)
        })
    }
}

/// The weather service's key, when `[radio.weather]` is configured.
pub(crate) fn weather_key(
    vault: &moat_vault::Vault,
    radio: &RadioConfig,
) -> Result<Option<SecretString>, String> {
    let Some(weather) = &radio.weather else {
        return Ok(None);
    };
    vault_secret(
        vault,
        &weather.api_key_secret,
        "radio.weather.api_key_secret",
    )
    .map(Some)
}

/// What the DJ knows and when the station keeps quiet, from config: hours, calendars
/// (files, or URLs through the egress policy) and the weather (with its key).
pub(crate) fn context(
    radio: &RadioConfig,
    egress: &moat_core::config::egress::EgressConfig,
    weather_key: Result<Option<SecretString>, String>,
) -> std::sync::Arc<Context> {
    use moat_core::config::radio::parse_window;
    use moat_radio::context::{CalendarSource, Origin, WeatherSource};
    let windows = |list: &[String]| -> Vec<(u32, u32)> {
        list.iter().filter_map(|w| parse_window(w).ok()).collect()
    };
    let fetcher = moat_net::egress::Policy::from_config(egress).map(|policy| {
        std::sync::Arc::new(
            moat_net::egress::Fetcher::builder(policy)
                .limits(moat_net::egress::fetch::FetchLimits::from_config(egress))
                .build(),
        )
    });
    let calendars: Vec<CalendarSource> = radio
        .calendars
        .iter()
        .map(|(name, c)| CalendarSource {
            name: name.clone(),
            origin: if c.source.starts_with("http://") || c.source.starts_with("https://") {
                Origin::Url(c.source.clone())
            } else {
                Origin::File(c.source.clone().into())
            },
            purpose: c.purpose,
            refresh: c.refresh,
        })
        .collect();
    let mut off = Vec::new();
    let weather = match (&radio.weather, weather_key) {
        (Some(w), Ok(Some(key))) => Some(WeatherSource {
            url: w.url.clone(),
            key,
            latitude: w.latitude,
            longitude: w.longitude,
            units: w.units.clone(),
            refresh: w.refresh,
        }),
        (Some(_), Err(why)) => {
            off.push(format!("the weather is off: {why}"));
            None
        }
        _ => None,
    };
    let (fetcher, calendars, weather) = match fetcher {
        Ok(f) => (f, calendars, weather),
        Err(e) => {
            // Without the owner's policy nothing is fetched: not under a default one.
            off.push(format!(
                "calendars at a URL and the weather are off: the egress policy: {e}"
            ));
            let files: Vec<CalendarSource> = calendars
                .into_iter()
                .filter(|c: &CalendarSource| matches!(c.origin, Origin::File(_)))
                .collect();
            let nothing = moat_net::egress::Policy::default().listed_only();
            let fetcher = std::sync::Arc::new(moat_net::egress::Fetcher::new(
                nothing,
                moat_net::egress::fetch::FetchLimits::from_config(egress),
            ));
            (fetcher, files, None)
        }
    };
    let mut context = Context::new(
        windows(&radio.dj.quiet),
        windows(&radio.dj.silence),
        calendars,
        weather,
        fetcher,
    );
    for why in off {
        context = context.disable(why);
    }
    std::sync::Arc::new(context)
}

/// The speech server's key, when `[radio.tts]` speaks over HTTP and names one.
pub(crate) fn speech_key(
    vault: &moat_vault::Vault,
    tts: &TtsConfig,
) -> Result<Option<SecretString>, String> {
    let Some(secret) = tts
        .api_key_secret
        .as_deref()
        .filter(|_| tts.engine == "http")
    else {
        return Ok(None);
    };
    vault_secret(vault, secret, "radio.tts.api_key_secret").map(Some)
}

/// The configured voice: espeak-ng, Piper, or a speech server (with `key`).
pub(crate) fn speech(
    tts: &TtsConfig,
    key: Option<SecretString>,
) -> Result<std::sync::Arc<dyn moat_radio::tts::Speech>, String> {
    use moat_radio::tts::{Espeak, HttpSpeech, Piper};
    Ok(match tts.engine.as_str() {
        "piper" => std::sync::Arc::new(Piper {
            binary: tts.piper.clone(),
            model: tts
                .piper_model
                .clone()
                .ok_or("radio.tts.piper_model is not set")?,
            speaker: tts.piper_speaker,
            words_per_minute: tts.words_per_minute,
            timeout: tts.timeout,
        }),
        "http" => {
            let raw = tts.url.as_deref().ok_or("radio.tts.url is not set")?;
            let url = url::Url::parse(raw).map_err(|e| format!("radio.tts.url: {e}"))?;
            std::sync::Arc::new(HttpSpeech::new(
                url,
                tts.model.clone(),
                tts.voice.clone(),
                tts.words_per_minute,
                key,
                tts.timeout,
            ))
        }
        _ => std::sync::Arc::new(Espeak {
            binary: tts.espeak.clone(),
            voice: tts.voice.clone(),
            words_per_minute: tts.words_per_minute,
            timeout: tts.timeout,
        }),
    })
}
