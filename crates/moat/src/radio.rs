//! The radio's routes.
//!
//! On both listeners (class `Lan`, read-only, no body read, no secret): the player page
//! and its assets (`/radio/`), the live stream (`/radio/live`, with ICY titles on
//! request), now playing (`/radio/now`), one track proxied from the library with `Range`
//! (`/radio/track/{id}`) and a song's cover (`/radio/cover/{id}`, resolved and fetched by
//! moat, images only, cached). Nothing there changes anything or reveals a credential:
//! the library is reached by moat, and its URLs (which carry credentials) never leave it.
//!
//! On the main listener only (class `Control`): `/radio/api/*` to skip, pause, resume,
//! queue, search, read the plan and change settings, cast to the speakers of the house
//! (`/radio/api/cast*`: they get the LAN listener's `/radio/live`), and a WebSocket of
//! state changes.
//! A page opened with the control token in its fragment trades it at
//! `/radio/api/session` for a cookie scoped to `/radio/api` ([`moat_net::session`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use moat_core::config::radio::Source;
use moat_core::secret::SecretString;
use moat_net::{Exposure, PathParams, RouteTable};
use moat_radio::Station;
use moat_radio::cast::{CastError, Caster};
use moat_radio::icy::{Interleaver, METAINT};
use serde::Deserialize;
use serde_json::{Value, json};

const PAGE: &str = include_str!("radio/index.html");
const SCRIPT: &str = include_str!("radio/player.js");
const STYLE: &str = include_str!("radio/player.css");
/// The page's own script, style, images, stream and socket; nothing inline, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; media-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// Covers kept in memory.
const COVER_CACHE_ENTRIES: usize = 64;
/// Cover bytes kept in memory at most.
const COVER_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// The cover size asked of the library, in pixels.
const COVER_SIZE: u32 = 600;
/// Live listeners at most.
const MAX_LISTENERS: usize = 500;
/// Covers fetched from the library at once, at most.
const COVER_FETCHES: usize = 4;

/// What the radio routes share.
pub(crate) struct Radio {
    /// The station, or why there is none.
    station: Result<Station, String>,
    /// Casting to speakers, or why there is none.
    caster: Result<Caster, String>,
    /// What the DJ knows, and when the station keeps quiet.
    context: Arc<moat_radio::context::Context>,
    control_token: SecretString,
    covers: Mutex<CoverCache>,
    /// Bounds the library calls covers cost: many requests for one cover wait for the
    /// first and find it cached.
    cover_fetches: tokio::sync::Semaphore,
}

impl Radio {
    pub(crate) fn new(
        station: Result<Station, String>,
        caster: Result<Caster, String>,
        context: Arc<moat_radio::context::Context>,
        control_token: SecretString,
    ) -> Radio {
        Radio {
            station,
            caster,
            context,
            control_token,
            covers: Mutex::new(CoverCache::default()),
            cover_fetches: tokio::sync::Semaphore::new(COVER_FETCHES),
        }
    }

    fn station(&self) -> Result<&Station, Unavailable<'_>> {
        self.station.as_ref().map_err(|why| Unavailable(why))
    }
}

/// Why the radio cannot answer: no station.
struct Unavailable<'a>(&'a str);

impl IntoResponse for Unavailable<'_> {
    fn into_response(self) -> Response {
        // The reason names config and vault entries: it is in moat's log (and `moat
        // doctor`), not in an answer the LAN can read.
        tracing::debug!(why = self.0, "a radio route answered 503");
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "radio_unavailable",
            "the radio is not playing; moat's log and `moat doctor` say why",
        )
    }
}

/// A body that is not what a route takes.
struct BadBody(String);

impl IntoResponse for BadBody {
    fn into_response(self) -> Response {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("the body is not the JSON this route takes: {}", self.0),
        )
    }
}

/// The radio's routes on `table`.
pub(crate) fn routes(table: RouteTable, radio: Arc<Radio>) -> RouteTable {
    table
        .route(
            "/radio",
            Exposure::Lan,
            get(|| async { redirect_to_player() }),
        )
        .route(
            "/radio/",
            Exposure::Lan,
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/radio/player.js",
            Exposure::Lan,
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/radio/player.css",
            Exposure::Lan,
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/radio/live",
            Exposure::Lan,
            get(live).with_state(radio.clone()),
        )
        .route(
            "/radio/now",
            Exposure::Lan,
            get(now).with_state(radio.clone()),
        )
        .route(
            "/radio/track/{id}",
            Exposure::Lan,
            get(track).with_state(radio.clone()),
        )
        .route(
            "/radio/cover/{id}",
            Exposure::Lan,
            get(cover).with_state(radio.clone()),
        )
        .route(
            "/radio/api/session",
            Exposure::Control,
            post(session).with_state(radio.clone()),
        )
        .route(
            "/radio/api/plan",
            Exposure::Control,
            get(plan).with_state(radio.clone()),
        )
        .route(
            "/radio/api/skip",
            Exposure::Control,
            post(skip).with_state(radio.clone()),
        )
        .route(
            "/radio/api/pause",
            Exposure::Control,
            post(pause).with_state(radio.clone()),
        )
        .route(
            "/radio/api/resume",
            Exposure::Control,
            post(resume).with_state(radio.clone()),
        )
        .route(
            "/radio/api/queue",
            Exposure::Control,
            post(queue).with_state(radio.clone()),
        )
        .route(
            "/radio/api/say",
            Exposure::Control,
            post(say).with_state(radio.clone()),
        )
        .route(
            "/radio/api/message",
            Exposure::Control,
            post(message).with_state(radio.clone()),
        )
        .route(
            "/radio/api/search",
            Exposure::Control,
            get(search).with_state(radio.clone()),
        )
        .route(
            "/radio/api/settings",
            Exposure::Control,
            get(settings).put(change_settings).with_state(radio.clone()),
        )
        .route(
            "/radio/api/status",
            Exposure::Control,
            get(status).with_state(radio.clone()),
        )
        .route(
            "/radio/api/cast",
            Exposure::Control,
            get(cast_list).with_state(radio.clone()),
        )
        .route(
            "/radio/api/cast/play",
            Exposure::Control,
            post(cast_play).with_state(radio.clone()),
        )
        .route(
            "/radio/api/cast/stop",
            Exposure::Control,
            post(cast_stop).with_state(radio.clone()),
        )
        .route(
            "/radio/api/cast/volume",
            Exposure::Control,
            post(cast_volume).with_state(radio.clone()),
        )
        .route(
            "/radio/api/events",
            Exposure::Control,
            get(events).with_state(radio),
        )
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    moat_net::error_response(status, code, message)
}

fn redirect_to_player() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("/radio/"))],
    )
        .into_response()
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    crate::app::page::asset(body, content_type, CSP)
}

/// `GET /radio/live`: the station's stream, from now on.
async fn live(State(radio): State<Arc<Radio>>, headers: HeaderMap) -> Response {
    let station = match radio.station() {
        Ok(s) => s.clone(),
        Err(r) => return r.into_response(),
    };
    // Streams never end by themselves: a bound keeps them from taking every connection
    // the server has (the per-IP and total caps are shared with the gateway).
    if station.snapshot().listeners >= MAX_LISTENERS {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_listeners",
            &format!("the station has {MAX_LISTENERS} listeners, its most; try again later"),
        );
    }
    let icy = headers
        .get("icy-metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "1");
    let feed = Feed {
        listener: station.listen(),
        watch: station.watch(),
    };
    let interleaver = icy.then(Interleaver::default);
    let body = Body::from_stream(futures_util::stream::unfold(
        (feed, interleaver),
        |(mut feed, mut interleaver)| async move {
            let (chunk, title) = feed.next().await?;
            let chunk = match &mut interleaver {
                Some(i) => i.interleave(&chunk, &title),
                None => chunk,
            };
            Some((Ok::<_, std::io::Error>(chunk), (feed, interleaver)))
        },
    ));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(station.content_type()),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("icy-name", HeaderValue::from_static("moat radio"));
    if icy {
        h.insert("icy-metaint", HeaderValue::from(METAINT));
    }
    resp
}

/// The live feed with the title on air at each chunk.
struct Feed {
    listener: moat_radio::broadcast::Listener,
    watch: tokio::sync::watch::Receiver<moat_radio::Snapshot>,
}

impl Feed {
    async fn next(&mut self) -> Option<(Bytes, String)> {
        match self.listener.next().await {
            Ok(chunk) => Some((chunk, title_of(&self.watch.borrow()))),
            Err(end) => {
                tracing::debug!(?end, "a radio listener's feed ended");
                None
            }
        }
    }
}

fn title_of(s: &moat_radio::Snapshot) -> String {
    match &s.now {
        Some(e) if e.artist.is_empty() => e.title.clone(),
        Some(e) => format!("{} - {}", e.artist, e.title),
        None => String::new(),
    }
}

/// `GET /radio/now`.
async fn now(State(radio): State<Arc<Radio>>) -> Response {
    match radio.station() {
        Ok(s) => no_store(Json(s.snapshot()).into_response()),
        Err(r) => r.into_response(),
    }
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One `bytes=` range (a suffix, an open end, or both ends); anything else, several
/// ranges included, is not passed on, and the whole track is served (RFC 9110 §14.2
/// lets a server ignore Range).
fn single_range(v: &HeaderValue) -> Option<HeaderValue> {
    let s = v.to_str().ok()?.trim();
    let spec = s.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let digits = |x: &str| x.len() <= 18 && x.bytes().all(|c| c.is_ascii_digit());
    let ok = match (a.is_empty(), b.is_empty()) {
        (false, true) => digits(a),
        (true, false) => digits(b),
        (false, false) => {
            digits(a) && digits(b) && a.parse::<u64>().ok()? <= b.parse::<u64>().ok()?
        }
        (true, true) => false,
    };
    ok.then(|| HeaderValue::from_str(s).ok()).flatten()
}

/// `GET /radio/track/{id}`: one track from the library, as stored, with `Range`.
async fn track(
    State(radio): State<Arc<Radio>>,
    Extension(params): Extension<PathParams>,
    headers: HeaderMap,
) -> Response {
    let station = match radio.station() {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let id = params.get("id").unwrap_or_default();
    let range = headers.get(header::RANGE).and_then(single_range);
    let upstream = match station.library().stream(id, range.as_ref()).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() => {
            return refuse(StatusCode::NOT_FOUND, "not_found", "no such track");
        }
        Err(e) => {
            tracing::warn!("a track could not be proxied: {e}");
            return refuse(
                StatusCode::BAD_GATEWAY,
                "library_error",
                "the music library did not give the track",
            );
        }
    };
    let status = upstream.status();
    let uh = upstream.headers();
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        if let Some(cr) = uh.get(header::CONTENT_RANGE) {
            resp.headers_mut().insert(header::CONTENT_RANGE, cr.clone());
        }
        return resp;
    }
    let content_type = uh
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !(content_type.starts_with("audio/") || content_type == "application/ogg") {
        tracing::warn!(
            content_type,
            "the library answered a track with something else than audio"
        );
        return refuse(
            StatusCode::BAD_GATEWAY,
            "library_error",
            "the music library answered with something else than audio",
        );
    }
    let mut out = Response::builder().status(if status == StatusCode::PARTIAL_CONTENT {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    });
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::ETAG,
        header::LAST_MODIFIED,
    ] {
        if let Some(v) = uh.get(&name) {
            out = out.header(name, v.clone());
        }
    }
    // The upstream body streams through; when the listener goes, the body is dropped
    // and with it the connection to the library.
    out.header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Body::new(upstream.into_body()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// Covers by song id, bounded in entries and bytes.
#[derive(Default)]
struct CoverCache {
    entries: HashMap<String, (String, Bytes)>,
    order: VecDeque<String>,
    bytes: usize,
}

impl CoverCache {
    fn get(&self, id: &str) -> Option<(String, Bytes)> {
        self.entries.get(id).cloned()
    }

    fn put(&mut self, id: String, ct: String, body: Bytes) {
        if self.entries.contains_key(&id) {
            return;
        }
        self.bytes += body.len();
        self.entries.insert(id.clone(), (ct, body));
        self.order.push_back(id);
        while self.order.len() > COVER_CACHE_ENTRIES || self.bytes > COVER_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, b)) = self.entries.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }
}

/// `GET /radio/cover/{id}`: the cover of song `id`, resolved by moat.
async fn cover(
    State(radio): State<Arc<Radio>>,
    Extension(params): Extension<PathParams>,
) -> Response {
    let station = match radio.station() {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let id = params.get("id").unwrap_or_default().to_string();
    let cached = radio
        .covers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&id);
    let (ct, body) = match cached {
        Some(c) => c,
        None => {
            let Ok(_permit) = radio.cover_fetches.acquire().await else {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            };
            // Someone else may have fetched it while this request waited.
            if let Some((ct, body)) = radio
                .covers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&id)
            {
                return cover_response(ct, body);
            }
            let fetched = async {
                let song = station.library().song(&id).await?;
                let Some(art) = song.cover_art else {
                    return Err(moat_radio::SubsonicError::NotFound {
                        call: "getCoverArt",
                    });
                };
                station.library().cover_art(&art, Some(COVER_SIZE)).await
            }
            .await;
            match fetched {
                // Scripts in an SVG would run on this origin: only raster images.
                Ok((ct, _)) if ct.starts_with("image/svg") => {
                    return refuse(StatusCode::NOT_FOUND, "not_found", "no usable cover");
                }
                Ok((ct, body)) => {
                    radio
                        .covers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .put(id, ct.clone(), body.clone());
                    (ct, body)
                }
                Err(e) if e.is_not_found() => {
                    return refuse(StatusCode::NOT_FOUND, "not_found", "no cover for this song");
                }
                Err(e) => {
                    tracing::warn!("a cover could not be fetched: {e}");
                    return refuse(
                        StatusCode::BAD_GATEWAY,
                        "library_error",
                        "the music library did not give the cover",
                    );
                }
            }
        }
    };
    cover_response(ct, body)
}

fn cover_response(ct: String, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ct) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    resp
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /radio/api/session`: the token for a cookie. The route's class admits a cookie
/// too; a session is minted only for the token itself, so a cookie cannot renew itself.
async fn session(State(radio): State<Arc<Radio>>, headers: HeaderMap) -> Response {
    use subtle::ConstantTimeEq;
    let given = headers
        .get(moat_net::CONTROL_TOKEN_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(radio.control_token.expose().as_bytes())) {
        return refuse(
            StatusCode::FORBIDDEN,
            "control_token_required",
            "a session is given for the control token itself, sent as X-Moat-Control-Token",
        );
    }
    let value = moat_net::session::mint(&radio.control_token, unix_now());
    let mut resp = Json(json!({"ok": true})).into_response();
    if let Ok(v) = HeaderValue::from_str(&moat_net::session::set_cookie(&value)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    no_store(resp)
}

fn source_text(s: &Source) -> String {
    match s {
        Source::Random => "random".into(),
        Source::Starred => "starred".into(),
        Source::Playlist(n) => format!("playlist:{n}"),
        Source::Genre(g) => format!("genre:{g}"),
    }
}

/// `GET /radio/api/plan`: now, what comes, and the source.
async fn plan(State(radio): State<Arc<Radio>>) -> Response {
    match radio.station() {
        Ok(s) => no_store(
            Json(json!({
                "station": s.snapshot(),
                "source": source_text(&s.source()),
            }))
            .into_response(),
        ),
        Err(r) => r.into_response(),
    }
}

fn done(result: Result<(), moat_radio::station::ControlError>) -> Response {
    match result {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "radio_unavailable",
            &e.to_string(),
        ),
    }
}

async fn skip(State(radio): State<Arc<Radio>>) -> Response {
    match radio.station() {
        Ok(s) => done(s.skip().await),
        Err(r) => r.into_response(),
    }
}

async fn pause(State(radio): State<Arc<Radio>>) -> Response {
    match radio.station() {
        Ok(s) => done(s.pause(true).await),
        Err(r) => r.into_response(),
    }
}

async fn resume(State(radio): State<Arc<Radio>>) -> Response {
    match radio.station() {
        Ok(s) => done(s.pause(false).await),
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueRequest {
    id: String,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, BadBody> {
    serde_json::from_slice(body).map_err(|e| BadBody(e.to_string()))
}

/// `POST /radio/api/queue` `{"id": SONG}`.
async fn queue(State(radio): State<Arc<Radio>>, body: Bytes) -> Response {
    let station = match radio.station() {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let req: QueueRequest = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match station.queue(&req.id).await {
        Ok(item) => {
            Json(json!({"ok": true, "seq": item.seq, "title": item.song.title})).into_response()
        }
        Err(moat_radio::station::ControlError::Library(e)) if e.is_not_found() => refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            "the library has no such song",
        ),
        Err(e) => refuse(StatusCode::BAD_GATEWAY, "library_error", &e.to_string()),
    }
}

/// `GET /radio/api/search?q=`.
async fn search(State(radio): State<Arc<Radio>>, uri: http::Uri) -> Response {
    let station = match radio.station() {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let q = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.into_owned());
    let Some(q) = q else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "say what to search for: ?q=TEXT",
        );
    };
    if q.trim().is_empty() || q.len() > 200 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the search text must be 1 to 200 characters",
        );
    }
    match station.library().search(q.trim(), 50).await {
        Ok(songs) => Json(json!({"songs": songs})).into_response(),
        Err(e) => refuse(StatusCode::BAD_GATEWAY, "library_error", &e.to_string()),
    }
}

async fn settings(State(radio): State<Arc<Radio>>) -> Response {
    match radio.station() {
        Ok(s) => Json(json!({"source": source_text(&s.source())})).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SayRequest {
    text: String,
}

/// `POST /radio/api/say` `{"text": ...}`: the DJ's voice over the music, now.
async fn say(State(radio): State<Arc<Radio>>, body: Bytes) -> Response {
    let station = match radio.station() {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let req: SayRequest = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    use moat_radio::station::ControlError;
    use moat_radio::tts::TtsError;
    match station.say(&req.text).await {
        Ok(said) => Json(json!({"ok": true, "seconds": said.seconds, "cached": said.cached}))
            .into_response(),
        Err(ControlError::Speech(TtsError::Text)) => refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &TtsError::Text.to_string(),
        ),
        Err(e) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "speech_unavailable",
            &e.to_string(),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRequest {
    text: String,
    #[serde(default)]
    from: String,
}

/// `POST /radio/api/message` `{"text", "from"?}`: a message for the DJ to read on air.
/// The guard screens it first: one that reads as instructions to a model (tier medium or
/// high) is refused, and no model ever sees it.
async fn message(State(radio): State<Arc<Radio>>, body: Bytes) -> Response {
    let station = match radio.station() {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let req: MessageRequest = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match leave_message(station, &req.from, &req.text) {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(r) => r.into_response(),
    }
}

/// A listener's message for the DJ, from the page or a channel: bounded, and screened by
/// the guard before it is left (one that reads as instructions to a model never is).
fn leave_message(station: &Station, from: &str, text: &str) -> Result<(), Refused> {
    let chars = text.trim().chars().count();
    if chars == 0 || chars > moat_radio::station::MAX_MESSAGE_CHARS {
        return Err(Refused::bad(format!(
            "a message is 1 to {} characters",
            moat_radio::station::MAX_MESSAGE_CHARS
        )));
    }
    let report = moat_guard::Scanner::global().scan(&format!("{from}\n{text}"));
    if report.tier >= moat_guard::Tier::Medium {
        tracing::warn!(
            tier = report.tier.as_str(),
            "a listener message was refused by the guard"
        );
        return Err(Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "message_flagged",
            message: format!(
                "the message reads as instructions to a model (guard tier {}); it was not passed on",
                report.tier.as_str()
            ),
        });
    }
    if !station.leave_message(from, text) {
        return Err(Refused {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_messages",
            message: "the DJ has enough messages waiting; try again after the next songs".into(),
        });
    }
    Ok(())
}

/// `/radio TEXT` from the people paired on the owner's channels, for the DJ.
pub(crate) struct ChannelInbox {
    pub(crate) station: Station,
}

impl moat_channels::RadioInbox for ChannelInbox {
    fn leave(&self, channel: &str, from: &str, text: &str) -> String {
        match leave_message(&self.station, from, text) {
            Ok(()) => {
                tracing::info!(channel, "a listener message arrived on a channel");
                "The DJ has your message.".into()
            }
            Err(r) => format!("Not passed on: {}.", r.message),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsChange {
    source: Option<String>,
    crossfade_ms: Option<u64>,
}

/// `PUT /radio/api/settings`: the source and the crossfade, until the next restart
/// (config.toml keeps what `moat serve` starts with).
async fn change_settings(State(radio): State<Arc<Radio>>, body: Bytes) -> Response {
    let station = match radio.station() {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let change: SettingsChange = match json_body(&body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let source = match change.source.as_deref().map(Source::parse).transpose() {
        Ok(s) => s,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, "invalid_request", &why),
    };
    if let Some(ms) = change.crossfade_ms {
        let max = moat_core::config::radio::MAX_CROSSFADE;
        if Duration::from_millis(ms) > max {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("crossfade_ms must be at most {}", max.as_millis()),
            );
        }
        if let Err(e) = station.set_crossfade(Duration::from_millis(ms)).await {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "radio_unavailable",
                &e.to_string(),
            );
        }
    }
    if let Some(s) = source {
        station.set_source(s);
    }
    Json(json!({"ok": true, "source": source_text(&station.source())})).into_response()
}

/// `GET /radio/api/status`: the station, the DJ and what it knows, quiet and silent
/// windows, each integration (working, failing and why, or off and why), casting.
async fn status(State(radio): State<Arc<Radio>>) -> Response {
    let (station, problem) = match &radio.station {
        Ok(s) => (Some(s.snapshot()), None),
        Err(why) => (None, Some(why.clone())),
    };
    let mut body = radio.context.status();
    body["station"] = json!(station);
    body["station_problem"] = json!(problem);
    body["voice"] = json!(radio.station.as_ref().ok().and_then(|s| s.voice_id()));
    body["cast"] = match &radio.caster {
        Ok(_) => json!({"available": true}),
        Err(why) => json!({"available": false, "why": why}),
    };
    no_store(Json(body).into_response())
}

/// A refusal built before the response: small to carry in a `Result`.
struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refused {
    fn bad(message: impl Into<String>) -> Refused {
        Refused {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: message.into(),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        refuse(self.status, self.code, &self.message)
    }
}

fn caster(radio: &Radio) -> Result<&Caster, Refused> {
    radio.caster.as_ref().map_err(|why| Refused {
        status: StatusCode::CONFLICT,
        code: "cast_unavailable",
        message: why.clone(),
    })
}

fn cast_refusal(e: &CastError) -> Response {
    let (status, code) = match e {
        CastError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        CastError::NoVolume(_) => (StatusCode::CONFLICT, "no_volume"),
        CastError::Search(_) => (StatusCode::SERVICE_UNAVAILABLE, "cast_unavailable"),
        _ => (StatusCode::BAD_GATEWAY, "speaker_error"),
    };
    refuse(status, code, &e.to_string())
}

/// `GET /radio/api/cast?wait=SECONDS`: the speakers that answer a search, each with its
/// transport state, volume, and whether it plays this station.
async fn cast_list(State(radio): State<Arc<Radio>>, uri: http::Uri) -> Response {
    let caster = match caster(&radio) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let wait = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "wait")
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .filter(|w| w.is_finite() && *w > 0.0)
        .map_or(Duration::from_secs(2), |w| {
            Duration::from_secs_f64(w.min(moat_radio::cast::MAX_WAIT.as_secs_f64()))
        });
    let found = match caster.discover(wait).await {
        Ok(f) => f,
        Err(e) => return cast_refusal(&e),
    };
    let rows = futures_util::future::join_all(found.iter().map(|r| async move {
        let state = r.state().await;
        let uri = r.current_uri().await;
        let volume = r.volume().await;
        // A stopped renderer still holds the last URI it was given.
        let moving = matches!(state.as_deref(), Ok("PLAYING" | "TRANSITIONING"));
        let ours = match &uri {
            Ok(uri) => moving && caster.stream_url(r).is_ok_and(|u| &u == uri),
            Err(_) => false,
        };
        let error = [
            state.as_ref().err(),
            uri.as_ref().err(),
            volume.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        .next()
        .map(|e| e.to_string());
        json!({
            "name": r.name,
            "udn": r.udn,
            "model": r.model,
            "address": r.address.to_string(),
            "state": state.as_ref().ok(),
            "volume": volume.ok().flatten(),
            "casting": ours,
            "error": error,
        })
    }))
    .await;
    no_store(Json(json!({"speakers": rows})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CastRequest {
    speaker: String,
    volume: Option<u8>,
}

fn cast_request(body: &Bytes) -> Result<CastRequest, Refused> {
    let req: CastRequest = json_body(body).map_err(|BadBody(why)| {
        Refused::bad(format!("the body is not the JSON this route takes: {why}"))
    })?;
    if req.speaker.trim().is_empty() || req.speaker.len() > 200 {
        return Err(Refused::bad(
            "name the speaker: 1 to 200 characters (its name or uuid)",
        ));
    }
    if req.volume.is_some_and(|v| v > 100) {
        return Err(Refused::bad("volume is 0 to 100"));
    }
    Ok(req)
}

/// `POST /radio/api/cast/play` `{"speaker", "volume"?}`: the speaker plays the station.
async fn cast_play(State(radio): State<Arc<Radio>>, body: Bytes) -> Response {
    let station = match radio.station() {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let (caster, req) = match (caster(&radio), cast_request(&body)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let played = async {
        let speaker = caster.find(&req.speaker).await?;
        let url = caster.stream_url(&speaker)?;
        if let Some(v) = req.volume {
            speaker.set_volume(v).await?;
        }
        speaker
            .play(&url, "moat radio", station.content_type())
            .await?;
        tracing::info!(speaker = %speaker.name, "casting the radio");
        Ok::<_, CastError>((speaker, url))
    }
    .await;
    match played {
        Ok((speaker, url)) => {
            Json(json!({"ok": true, "speaker": speaker.name, "url": url})).into_response()
        }
        Err(e) => cast_refusal(&e),
    }
}

/// `POST /radio/api/cast/stop` `{"speaker"}`.
async fn cast_stop(State(radio): State<Arc<Radio>>, body: Bytes) -> Response {
    let (caster, req) = match (caster(&radio), cast_request(&body)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let stopped = async {
        let speaker = caster.find(&req.speaker).await?;
        speaker.stop().await?;
        Ok::<_, CastError>(speaker)
    }
    .await;
    match stopped {
        Ok(speaker) => Json(json!({"ok": true, "speaker": speaker.name})).into_response(),
        Err(e) => cast_refusal(&e),
    }
}

/// `POST /radio/api/cast/volume` `{"speaker", "volume"}`.
async fn cast_volume(State(radio): State<Arc<Radio>>, body: Bytes) -> Response {
    let (caster, req) = match (caster(&radio), cast_request(&body)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let Some(volume) = req.volume else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "say the volume: {\"speaker\": NAME, \"volume\": 0-100}",
        );
    };
    let set = async {
        let speaker = caster.find(&req.speaker).await?;
        speaker.set_volume(volume).await?;
        Ok::<_, CastError>(speaker)
    }
    .await;
    match set {
        Ok(speaker) => {
            Json(json!({"ok": true, "speaker": speaker.name, "volume": volume})).into_response()
        }
        Err(e) => cast_refusal(&e),
    }
}

/// `GET /radio/api/events`: the station's state as JSON text frames, on every change.
async fn events(State(radio): State<Arc<Radio>>, ws: WebSocketUpgrade) -> Response {
    let station = match radio.station() {
        Ok(s) => s.clone(),
        Err(r) => return r.into_response(),
    };
    ws.max_message_size(4096)
        .on_upgrade(move |socket| send_events(socket, station))
}

async fn send_events(mut socket: WebSocket, station: Station) {
    let mut watch = station.watch();
    loop {
        let frame: Value = json!({"type": "station", "station": *watch.borrow_and_update()});
        if socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_well_formed_range_is_passed_on() {
        let ok = |s: &str| single_range(&HeaderValue::from_str(s).unwrap()).is_some();
        assert!(ok("bytes=0-99"));
        assert!(ok("bytes=100-"));
        assert!(ok("bytes=-100"));
        assert!(!ok("bytes=0-1,5-9"));
        assert!(!ok("bytes=9-1"));
        assert!(!ok("bytes=-"));
        assert!(!ok("items=0-1"));
        assert!(!ok("bytes=0-99999999999999999999999"));
    }

    #[test]
    fn the_cover_cache_is_bounded() {
        let mut c = CoverCache::default();
        for i in 0..(COVER_CACHE_ENTRIES + 5) {
            c.put(i.to_string(), "image/jpeg".into(), Bytes::from(vec![0; 10]));
        }
        assert_eq!(c.entries.len(), COVER_CACHE_ENTRIES);
        assert!(c.get("0").is_none());
        c.put(
            "big".into(),
            "image/jpeg".into(),
            Bytes::from(vec![0; COVER_CACHE_BYTES]),
        );
        assert!(c.bytes <= COVER_CACHE_BYTES);
    }
}
