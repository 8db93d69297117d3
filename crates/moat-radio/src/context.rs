//! What the DJ knows of the world beyond the music, and when it must keep quiet: quiet
//! and silent hours from config, calendars (events to mention, or events that are quiet
//! or silent windows), and the weather.
//!
//! Every outside source is optional and fails soft: a calendar or weather service that
//! cannot be read keeps its last good answer (a calendar) or none (the weather, once
//! stale), its error is in [`Context::status`] (`moat radio status`), and nothing else
//! changes: the music plays and the DJ talks about what it does know. Calendars at a URL
//! and the weather are fetched through moat's egress policy ([`Fetcher`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Local, Timelike, Utc};
use moat_core::secret::SecretString;
use moat_net::egress::{FetchRequest, Fetcher};
use serde::Serialize;
use serde_json::{Value, json};

use crate::calendar::{self, Occurrence};
use crate::dj::is_quiet;
use crate::station::Station;

/// What a calendar's events mean: config's own words.
pub use moat_core::config::radio::CalendarUse as Purpose;

/// Where a calendar is read from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A file on this machine.
    File(PathBuf),
    /// A URL, fetched through the egress policy.
    Url(String),
}

/// One configured calendar.
#[derive(Debug, Clone)]
pub struct CalendarSource {
    /// Its name in config.
    pub name: String,
    /// Where it is.
    pub origin: Origin,
    /// What its events mean.
    pub purpose: Purpose,
    /// How often it is read again.
    pub refresh: Duration,
}

/// An OpenWeather-compatible current-weather service.
#[derive(Debug, Clone)]
pub struct WeatherSource {
    /// The API's base (`https://api.openweathermap.org/data/2.5`); `/weather` is added.
    pub url: String,
    /// The key, sent as `appid` (the API takes no other way).
    pub key: SecretString,
    /// Where.
    pub latitude: f64,
    /// Where.
    pub longitude: f64,
    /// `metric`, `imperial` or `standard`.
    pub units: String,
    /// How often it is asked.
    pub refresh: Duration,
}

/// What the time allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode", content = "why")]
pub enum Allowed {
    /// Music and talk.
    Everything,
    /// Music only: the DJ is quiet (and why).
    MusicOnly(String),
    /// Nothing: the station is silent (and why).
    Silence(String),
}

/// The weather now, as the DJ says it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Weather {
    /// E.g. "light rain".
    pub description: String,
    /// In the configured units.
    pub temperature: f64,
    /// `°C`, `°F` or `K`.
    pub unit: &'static str,
    /// The place the service names, if any.
    pub place: String,
}

#[derive(Debug)]
struct Loaded<T> {
    value: Option<T>,
    /// The last good answer.
    at: Option<DateTime<Utc>>,
    /// The last attempt.
    tried: Option<DateTime<Utc>>,
    error: Option<String>,
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Loaded {
            value: None,
            at: None,
            tried: None,
            error: None,
        }
    }
}

impl<T> Loaded<T> {
    fn record(&mut self, now: DateTime<Utc>, read: Result<T, String>) {
        self.tried = Some(now);
        match read {
            Ok(v) => {
                self.value = Some(v);
                self.at = Some(now);
                self.error = None;
            }
            Err(why) => self.error = Some(why),
        }
    }
}

/// Calendars read this far ahead.
const AHEAD: chrono::Duration = chrono::Duration::hours(48);
/// A calendar or weather answer is taken at most this large.
const MAX_WEATHER_BYTES: u64 = 64 * 1024;

/// The DJ's knowledge, shared by the DJ, the silence keeper and the status route.
pub struct Context {
    quiet_hours: Vec<(u32, u32)>,
    silent_hours: Vec<(u32, u32)>,
    calendars: Vec<(CalendarSource, Mutex<Loaded<Vec<Occurrence>>>)>,
    weather: Option<(WeatherSource, Mutex<Loaded<Weather>>)>,
    fetcher: Arc<Fetcher>,
    dj: Mutex<DjLog>,
    /// Integrations configured but turned off at start, and why (a missing key...).
    disabled: Vec<String>,
}

/// What the DJ did last, for `moat radio status`.
#[derive(Debug, Default, Clone)]
pub struct DjLog {
    /// Whether a DJ runs at all, and if not why.
    pub running: bool,
    /// Why not, when it does not.
    pub why_not: Option<String>,
    /// When it last talked, and what it said.
    pub last_talk: Option<(DateTime<Utc>, String)>,
    /// When it last skipped a segment, and why.
    pub last_skip: Option<(DateTime<Utc>, String)>,
    /// Segments aired since start.
    pub segments: u64,
    /// For the last segments made, milliseconds from due (the DJ decides to talk) to
    /// ready to air (written by the model, spoken, decoded), newest last.
    pub prepare_ms: std::collections::VecDeque<u64>,
}

impl DjLog {
    /// Notes one segment's preparation time (the last 100 are kept).
    pub fn prepared(&mut self, took: Duration) {
        if self.prepare_ms.len() == 100 {
            self.prepare_ms.pop_front();
        }
        self.prepare_ms
            .push_back(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
    }
}

impl Context {
    /// A context from config: `quiet_hours` (no talk) and `silent_hours` (no music) as
    /// minutes of the local day, calendars and the weather, fetched with `fetcher`.
    pub fn new(
        quiet_hours: Vec<(u32, u32)>,
        silent_hours: Vec<(u32, u32)>,
        calendars: Vec<CalendarSource>,
        weather: Option<WeatherSource>,
        fetcher: Arc<Fetcher>,
    ) -> Context {
        Context {
            quiet_hours,
            silent_hours,
            calendars: calendars
                .into_iter()
                .map(|c| (c, Mutex::new(Loaded::default())))
                .collect(),
            weather: weather.map(|w| (w, Mutex::new(Loaded::default()))),
            fetcher,
            dj: Mutex::new(DjLog::default()),
            disabled: Vec::new(),
        }
    }

    /// Says that an integration is configured but off, and why (`moat radio status`).
    pub fn disable(mut self, why: String) -> Context {
        tracing::warn!("the radio: {why}");
        self.disabled.push(why);
        self
    }

    /// What `now` allows, the most restrictive first.
    pub fn allowed(&self, now: DateTime<Local>) -> Allowed {
        let minute = now.hour() * 60 + now.minute();
        let utc = now.with_timezone(&Utc);
        let covering = |purpose: Purpose| {
            self.calendars
                .iter()
                .filter(|(c, _)| c.purpose == purpose)
                .find_map(|(c, loaded)| {
                    let loaded = loaded.lock().unwrap_or_else(PoisonError::into_inner);
                    loaded
                        .value
                        .as_ref()?
                        .iter()
                        .find(|o| o.covers(utc))
                        .map(|o| format!("calendar {}: {}", c.name, o.summary))
                })
        };
        if is_quiet(&self.silent_hours, minute) {
            return Allowed::Silence("silent hours (radio.dj.silence)".into());
        }
        if let Some(why) = covering(Purpose::Silence) {
            return Allowed::Silence(why);
        }
        if is_quiet(&self.quiet_hours, minute) {
            return Allowed::MusicOnly("quiet hours (radio.dj.quiet)".into());
        }
        if let Some(why) = covering(Purpose::Quiet) {
            return Allowed::MusicOnly(why);
        }
        Allowed::Everything
    }

    /// Timed events of the calendars to mention that start in `(now, now + within]`.
    pub fn upcoming(&self, now: DateTime<Utc>, within: Duration) -> Vec<Occurrence> {
        let until = now + chrono::Duration::from_std(within).unwrap_or(AHEAD);
        let mut all: Vec<Occurrence> = self
            .calendars
            .iter()
            .filter(|(c, _)| c.purpose == Purpose::Mention)
            .flat_map(|(_, loaded)| {
                let loaded = loaded.lock().unwrap_or_else(PoisonError::into_inner);
                loaded
                    .value
                    .iter()
                    .flatten()
                    .filter(|o| !o.all_day && o.start > now && o.start <= until)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by_key(|o| o.start);
        all
    }

    /// The weather, when an answer fresher than twice the refresh interval is at hand.
    pub fn weather(&self) -> Option<Weather> {
        let (source, loaded) = self.weather.as_ref()?;
        let loaded = loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = loaded.at.is_some_and(|at| {
            Utc::now() - at < chrono::Duration::from_std(source.refresh * 2).unwrap_or(AHEAD)
        });
        fresh.then(|| loaded.value.clone()).flatten()
    }

    /// Records what the DJ did.
    pub fn dj_log(&self, f: impl FnOnce(&mut DjLog)) {
        f(&mut self.dj.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Reads every source that is due, forever (every 30 s it looks).
    pub async fn run(self: Arc<Self>) {
        loop {
            self.refresh_due().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }

    /// Reads every source whose refresh interval has passed since it was last tried
    /// (or that was never tried). A failed source keeps its last good answer.
    pub async fn refresh_due(&self) {
        let now = Utc::now();
        let due = |tried: Option<DateTime<Utc>>, every: Duration| {
            tried.is_none_or(|t| now - t >= chrono::Duration::from_std(every).unwrap_or(AHEAD))
        };
        for (source, loaded) in &self.calendars {
            let tried = loaded.lock().unwrap_or_else(PoisonError::into_inner).tried;
            if !due(tried, source.refresh) {
                continue;
            }
            let read = self.read_calendar(source).await;
            if let Err(why) = &read {
                tracing::warn!(calendar = %source.name, "a radio calendar cannot be read: {why}");
            }
            loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(now, read);
        }
        if let Some((source, loaded)) = &self.weather {
            let tried = loaded.lock().unwrap_or_else(PoisonError::into_inner).tried;
            if due(tried, source.refresh) {
                let read = self.read_weather(source).await;
                if let Err(why) = &read {
                    tracing::warn!("the weather cannot be read: {why}");
                }
                loaded
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(now, read);
            }
        }
    }

    async fn read_calendar(&self, source: &CalendarSource) -> Result<Vec<Occurrence>, String> {
        let text = match &source.origin {
            Origin::File(path) => {
                let meta = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if meta.len() > calendar::MAX_ICS_BYTES as u64 {
                    return Err(format!("{} is too large to be a calendar", path.display()));
                }
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?
            }
            Origin::Url(url) => {
                let mut req = FetchRequest::get(url.clone());
                req.max_bytes = Some(calendar::MAX_ICS_BYTES as u64);
                let resp = self
                    .fetcher
                    .fetch("radio-calendar", req)
                    .await
                    .map_err(|e| e.to_string())?;
                if !resp.status.is_success() {
                    return Err(format!("its server answered HTTP {}", resp.status));
                }
                String::from_utf8(resp.body.to_vec()).map_err(|_| "it is not UTF-8 text")?
            }
        };
        let now = Utc::now();
        calendar::occurrences(&text, now - chrono::Duration::hours(1), now + AHEAD)
    }

    async fn read_weather(&self, source: &WeatherSource) -> Result<Weather, String> {
        let mut url = url::Url::parse(&format!("{}/weather", source.url.trim_end_matches('/')))
            .map_err(|e| format!("radio.weather.url: {e}"))?;
        url.query_pairs_mut()
            .append_pair("lat", &source.latitude.to_string())
            .append_pair("lon", &source.longitude.to_string())
            .append_pair("units", &source.units)
            .append_pair("appid", source.key.expose());
        let mut req = FetchRequest::get(url.to_string()).accept(&["application/json"]);
        req.max_bytes = Some(MAX_WEATHER_BYTES);
        // FetchError names the origin only, never the query that carries the key.
        let resp = self
            .fetcher
            .fetch("radio-weather", req)
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status.is_success() {
            return Err(match resp.status.as_u16() {
                401 => "the service refused the key (HTTP 401): check radio.weather.api_key_secret"
                    .into(),
                s => format!("the service answered HTTP {s}"),
            });
        }
        parse_weather(&resp.body, &source.units)
    }

    /// Every source and what the time allows, for `moat radio status`.
    pub fn status(&self) -> Value {
        let calendars: Vec<Value> = self
            .calendars
            .iter()
            .map(|(c, loaded)| {
                let l = loaded.lock().unwrap_or_else(PoisonError::into_inner);
                json!({
                    "name": c.name,
                    "use": c.purpose,
                    "read": l.value.is_some() && l.error.is_none(),
                    "events_ahead": l.value.as_ref().map(Vec::len),
                    "read_at": l.at.map(stamp),
                    "tried_at": l.tried.map(stamp),
                    "error": l.error,
                })
            })
            .collect();
        // Read before the lock below: `weather()` takes it too.
        let fresh = self.weather();
        let weather = self.weather.as_ref().map(|(_, loaded)| {
            let l = loaded.lock().unwrap_or_else(PoisonError::into_inner);
            json!({
                "now": fresh,
                "read_at": l.at.map(stamp),
                "tried_at": l.tried.map(stamp),
                "error": l.error,
            })
        });
        let dj = self
            .dj
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        json!({
            "allowed": self.allowed(Local::now()),
            "quiet_hours": self.quiet_hours.iter().map(|w| window_text(*w)).collect::<Vec<_>>(),
            "silent_hours": self.silent_hours.iter().map(|w| window_text(*w)).collect::<Vec<_>>(),
            "calendars": calendars,
            "weather": weather,
            "disabled": self.disabled,
            "dj": {
                "running": dj.running,
                "why_not": dj.why_not,
                "segments": dj.segments,
                "prepare_ms": dj.prepare_ms,
                "last_talk": dj.last_talk.map(|(t, s)| json!({"at": stamp(t), "words": s})),
                "last_skip": dj.last_skip.map(|(t, s)| json!({"at": stamp(t), "why": s})),
            },
        })
    }
}

/// A time as RFC 3339 in UTC, to the second.
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn window_text((a, b): (u32, u32)) -> String {
    format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60)
}

/// An OpenWeather `weather` answer.
fn parse_weather(body: &[u8], units: &str) -> Result<Weather, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "the answer is not JSON")?;
    let description = v["weather"][0]["description"]
        .as_str()
        .ok_or("the answer has no weather[0].description")?;
    let temperature = v["main"]["temp"]
        .as_f64()
        .filter(|t| t.is_finite())
        .ok_or("the answer has no main.temp")?;
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_control())
            .take(80)
            .collect::<String>()
            .trim()
            .to_string()
    };
    Ok(Weather {
        description: clean(description),
        temperature,
        unit: match units {
            "imperial" => "°F",
            "standard" => "K",
            _ => "°C",
        },
        place: clean(v["name"].as_str().unwrap_or("")),
    })
}

/// Keeps the station silent through silent windows: paused when one begins, resumed
/// when it ends (only if this paused it: a pause of the owner's stays).
pub async fn keep_silence(station: Station, context: Arc<Context>) {
    let mut paused_by_us = false;
    loop {
        let silent = matches!(context.allowed(Local::now()), Allowed::Silence(_));
        if silent && !paused_by_us && station.snapshot().state != "paused" {
            if station.pause(true).await.is_err() {
                return;
            }
            tracing::info!("the radio is silent: a silent window began");
            paused_by_us = true;
        } else if !silent && paused_by_us {
            if station.pause(false).await.is_err() {
                return;
            }
            tracing::info!("the radio plays again: the silent window ended");
            paused_by_us = false;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fetcher() -> Arc<Fetcher> {
        Arc::new(Fetcher::new(
            moat_net::egress::Policy::default(),
            moat_net::egress::fetch::FetchLimits::from_config(
                &moat_core::config::egress::EgressConfig::default(),
            ),
        ))
    }

    fn ics_file(dir: &std::path::Path, name: &str, start: DateTime<Utc>, minutes: i64) -> PathBuf {
        let f = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
        let text = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:{name}\r\nDTSTART:{}\r\nDTEND:{}\r\nSUMMARY:{name}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            f(start),
            f(start + chrono::Duration::minutes(minutes))
        );
        let path = dir.join(format!("{name}.ics"));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn calendars_and_hours_decide_what_the_time_allows() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let source = |name: &str, path: PathBuf, purpose| CalendarSource {
            name: name.into(),
            origin: Origin::File(path),
            purpose,
            refresh: Duration::from_secs(60),
        };
        let ctx = Context::new(
            vec![],
            vec![],
            vec![
                source(
                    "focus",
                    ics_file(
                        dir.path(),
                        "Deep work",
                        now - chrono::Duration::minutes(5),
                        30,
                    ),
                    Purpose::Quiet,
                ),
                source(
                    "work",
                    ics_file(
                        dir.path(),
                        "Team meeting",
                        now + chrono::Duration::minutes(50),
                        30,
                    ),
                    Purpose::Mention,
                ),
                source("broken", dir.path().join("missing.ics"), Purpose::Silence),
            ],
            None,
            fetcher(),
        );
        ctx.refresh_due().await;
        assert_eq!(
            ctx.allowed(Local::now()),
            Allowed::MusicOnly("calendar focus: Deep work".into())
        );
        let later = Local::now() + chrono::Duration::minutes(40);
        assert_eq!(ctx.allowed(later), Allowed::Everything);
        let up = ctx.upcoming(now, Duration::from_secs(3600));
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].summary, "Team meeting");
        assert!(ctx.upcoming(now, Duration::from_secs(600)).is_empty());
        // The missing calendar says why, and changes nothing else.
        let status = ctx.status();
        let broken = &status["calendars"][2];
        assert_eq!(broken["read"], false);
        assert!(
            broken["error"].as_str().unwrap().contains("missing.ics"),
            "{status}"
        );
        assert_eq!(status["calendars"][0]["read"], true);
    }

    #[test]
    fn silent_hours_come_before_quiet_ones() {
        let ctx = Context::new(
            vec![(0, 24 * 60 - 1)],
            vec![(120, 180)],
            vec![],
            None,
            fetcher(),
        );
        let at = |h: u32| Local.with_ymd_and_hms(2026, 12, 7, h, 30, 0).unwrap();
        assert!(matches!(ctx.allowed(at(2)), Allowed::Silence(_)));
        assert!(matches!(ctx.allowed(at(5)), Allowed::MusicOnly(_)));
    }

    #[test]
    fn an_openweather_answer_reads_and_a_strange_one_does_not() {
        let body = br#"{"weather":[{"main":"Rain","description":"light rain"}],"main":{"temp":7.4},"name":"Berlin"}"#;
        let w = parse_weather(body, "metric").unwrap();
        assert_eq!(
            (
                w.description.as_str(),
                w.temperature,
                w.unit,
                w.place.as_str()
            ),
            ("light rain", 7.4, "°C", "Berlin")
        );
        assert!(parse_weather(b"{}", "metric").is_err());
        assert!(parse_weather(b"<html>", "metric").is_err());
    }
}
