//! moat-llm: the LLM gateway. Anthropic- and OpenAI-format endpoints in front of any
//! number of Anthropic and OpenAI-compatible backends, with routing by model name,
//! failover, and complete two-way translation, streaming and tool calls included.
//!
//! Its surface is [`Gateway`] (the routes and their handlers) and what the binary and the
//! tests need around it, re-exported here; four namespaces are public as well:
//!
//! - [`translate`]: the wire-format translation, whole and event by event;
//! - [`assemble`]: a Messages event stream folded back into the whole message;
//! - [`sse`]: the server-sent-events parser and writer;
//! - [`pool`]: the accounts behind a backend: headroom, stickiness, cooldowns;
//! - [`oauth`]: OAuth 2.0 login with PKCE, the loopback callback and token refresh.
//!
//! Behind them, private: routing (model name → ordered targets: exact, `BACKEND:MODEL`,
//! globs, aliases), the backend (fixed URLs, accounts, concurrency limit, health), the
//! proxy (one request through routing, translation, failover and streaming), usage and
//! analytics (recorded off the request path; `/accounts`, `/analytics`, `/metrics`),
//! stored responses, and errors in the client's own API format.
//!
//! ```
//! use moat_llm::Router;
//! use moat_core::config::llm::{BackendConfig, BackendKind, LlmConfig};
//! let mut llm = LlmConfig::default();
//! let mut local = BackendConfig::new(BackendKind::Openai, "http://127.0.0.1:8080/v1");
//! local.models = vec!["smollm2*".into()];
//! llm.backends.insert("local".into(), local);
//! let router = Router::new(&llm);
//! let d = router.resolve("smollm2-135m").unwrap();
//! assert_eq!(d.targets[0].backend, "local");
//! ```
#![deny(missing_docs)]

mod analytics;
pub mod assemble;
mod backend;
mod errors;
mod json_size;
pub mod oauth;
pub mod pool;
mod probe;
mod proxy;
mod routing;
pub mod sse;
mod stored;
pub mod translate;
mod usage;

pub use analytics::{Group, summarize as summarize_usage, total as usage_total};
pub use backend::{Backend, DEFAULT_ANTHROPIC_VERSION, Endpoint, Health, InvalidBaseUrl};
pub use errors::{ApiError, ApiFormat, upstream_message};
pub use probe::{ModelsAnswer, ProbeError, models as probe_models};
pub use routing::{Decision, RouteError, Router, Target};
pub use stored::{Holder, ResponseStore, StoreError, Stored};
pub use usage::{Recorder, TokenCounts, UsageRecord, now_ms};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use moat_core::config::llm::LlmConfig;
use moat_net::Exposure;
use moat_net::RouteTable;
use moat_state::StateStore;
use moat_state::rusqlite;
use serde_json::{Value, json};

use crate::pool::{Account, Credential, PoolEvents};
use crate::proxy::Op;

/// Each account's credential, by (backend, account); an account without one has none.
pub type Credentials = HashMap<(String, String), Credential>;

/// The gateway: backends, the route table and the limits, shared by all requests.
pub struct Gateway {
    backends: BTreeMap<String, Arc<Backend>>,
    router: Router,
    upstream_timeout: Duration,
    default_max_tokens: u32,
    responses: Option<Arc<stored::ResponseStore>>,
    usage: Option<Recorder>,
    analytics: Option<Mutex<StateStore>>,
    events: Option<Arc<dyn PoolEvents>>,
    /// Tools left out of translated requests, by (backend, tool type).
    dropped_tools: Mutex<BTreeMap<(String, String), u64>>,
    /// Each glob backend's own model list, as last asked (see `/v1/models`).
    listed: tokio::sync::Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway for `llm` (validated), with each account's credential.
    pub fn new(llm: &LlmConfig, mut credentials: Credentials) -> Result<Self, InvalidBaseUrl> {
        let backends = llm
            .backends
            .iter()
            .map(|(name, cfg)| {
                let accounts = cfg
                    .pool()
                    .into_iter()
                    .map(|a| {
                        let credential = credentials
                            .remove(&(name.clone(), a.name.clone()))
                            .unwrap_or(Credential::None);
                        Account::new(a.name, credential)
                    })
                    .collect();
                let backend = Backend::new(name, cfg, accounts, &llm.pools)?;
                Ok((name.clone(), Arc::new(backend)))
            })
            .collect::<Result<_, InvalidBaseUrl>>()?;
        Ok(Self {
            backends,
            router: Router::new(llm),
            upstream_timeout: llm.upstream_timeout,
            default_max_tokens: llm.default_max_tokens,
            responses: None,
            usage: None,
            analytics: None,
            dropped_tools: Mutex::default(),
            listed: tokio::sync::Mutex::default(),
            events: None,
        })
    }

    /// Records each request's usage with `recorder`, and reads totals back from
    /// `analytics` (a connection of its own to the same `state.db`), if given.
    pub fn with_usage(mut self, recorder: Recorder, analytics: Option<StateStore>) -> Self {
        self.usage = Some(recorder);
        self.analytics = analytics.map(Mutex::new);
        self
    }

    /// Reports account events (auth failures) to `events`.
    pub fn with_events(mut self, events: Arc<dyn PoolEvents>) -> Self {
        self.events = Some(events);
        self
    }

    /// The backends by name.
    pub fn backends(&self) -> &BTreeMap<String, Arc<Backend>> {
        &self.backends
    }

    /// Keeps Responses API answers in `store` (without one, `store` keeps nothing and
    /// `previous_response_id` finds nothing).
    pub fn with_response_store(mut self, store: stored::ResponseStore) -> Self {
        self.responses = Some(Arc::new(store));
        self
    }

    /// The route table.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Each backend's health and load, for `/status`.
    pub fn status(&self) -> Value {
        Value::Array(self.backends.values().map(|b| b.status()).collect())
    }

    /// Adds `/accounts`, `/analytics` and `/metrics` (exposure class `Control`) to `table`.
    pub fn control_routes(self: Arc<Self>, table: RouteTable) -> RouteTable {
        table
            .route(
                "/accounts",
                Exposure::Control,
                axum::routing::get(accounts).with_state(self.clone()),
            )
            .route(
                "/analytics",
                Exposure::Control,
                axum::routing::get(analytics_handler).with_state(self.clone()),
            )
            .route(
                "/metrics",
                Exposure::Control,
                axum::routing::get(metrics).with_state(self.clone()),
            )
    }

    /// Per account: status, headroom, cooldown, requests, last error class.
    pub fn accounts_json(&self) -> Value {
        let now = Instant::now();
        let backends: Vec<Value> = self
            .backends
            .values()
            .map(|b| {
                let accounts: Vec<Value> =
                    b.pool().accounts().iter().map(|a| a.status(now)).collect();
                json!({
                    "backend": b.name(),
                    "strategy": b.pool().strategy().as_str(),
                    "sticky_conversations": b.pool().sticky_len(),
                    "accounts": accounts,
                })
            })
            .collect();
        json!({ "backends": backends })
    }

    /// The totals of the last hour and of all time, and each account's burn rate with its
    /// estimated time to exhaustion. Waits for the usage writer to catch up first, so a
    /// request answered before this call is counted.
    pub fn analytics_json(&self) -> Result<Value, rusqlite::Error> {
        if let Some(r) = &self.usage {
            r.flush();
        }
        let Some(db) = &self.analytics else {
            return Ok(json!({
                "recording": false,
                "hint": "usage is not recorded: set llm.usage_retention above 0s",
            }));
        };
        let db = db.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let conn = db.connection();
        let now_ms = usage::now_ms();
        let hour_ago = now_ms - 3_600_000;
        let window = |since: Option<i64>| -> Result<Value, rusqlite::Error> {
            let groups = analytics::summarize(conn, since)?;
            Ok(json!({ "total": analytics::total(&groups), "groups": groups }))
        };
        let last_hour = window(Some(hour_ago))?;
        let all_time = window(None)?;
        let burn = analytics::tokens_by_account(conn, hour_ago)?;
        drop(db);
        let now = Instant::now();
        let mut accounts = Vec::new();
        for b in self.backends.values() {
            for a in b.pool().accounts() {
                let used = burn
                    .get(&(b.name().to_string(), a.name().to_string()))
                    .copied()
                    .unwrap_or(0);
                let per_minute = used as f64 / 60.0;
                let left = a.headroom().tokens_left(now);
                let exhaustion = match left {
                    Some((left, _)) if per_minute > 0.0 => Some(left as f64 / per_minute * 60.0),
                    _ => None,
                };
                let resets_in = left
                    .and_then(|(_, r)| r)
                    .map(|r| r.saturating_duration_since(now).as_secs_f64());
                accounts.push(json!({
                    "backend": b.name(),
                    "account": a.name(),
                    "tokens_last_hour": used,
                    "burn_tokens_per_minute": per_minute,
                    "tokens_left": left.map(|(l, _)| l),
                    "exhaustion_in_secs": exhaustion,
                    "limit_resets_in_secs": resets_in,
                    "resets_before_exhaustion": match (exhaustion, resets_in) {
                        (Some(e), Some(r)) => Some(r < e),
                        _ => None,
                    },
                }));
            }
        }
        Ok(json!({
            "recording": true,
            "last_hour": last_hour,
            "all_time": all_time,
            "accounts": accounts,
            "dropped_records": self.usage.as_ref().map_or(0, |u| u.metrics().dropped()),
        }))
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        let now = Instant::now();
        let gauges: Vec<analytics::AccountGauges> = self
            .backends
            .values()
            .flat_map(|b| {
                b.pool().accounts().iter().map(move |a| {
                    let (headroom, cooldown_secs, in_flight) = a.gauges(now);
                    analytics::AccountGauges {
                        backend: b.name().to_string(),
                        account: a.name().to_string(),
                        headroom,
                        cooldown_secs,
                        remaining: a
                            .headroom()
                            .dims()
                            .map(|(k, d)| (k.as_str(), d.remaining))
                            .collect(),
                        in_flight,
                    }
                })
            })
            .collect();
        let mut text = match &self.usage {
            Some(u) => {
                analytics::prometheus(&u.metrics().snapshot(), &gauges, u.metrics().dropped())
            }
            None => analytics::prometheus(&usage::Counters::default(), &gauges, 0),
        };
        let dropped = self
            .dropped_tools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        analytics::dropped_tools(&mut text, &dropped);
        text
    }

    /// Counts a tool left out of a request to `backend`.
    pub(crate) fn count_dropped_tool(&self, backend: &str, tool: &str) {
        let mut dropped = self
            .dropped_tools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Tool types come from clients: bounded, so odd names cannot grow this for ever.
        let key = (
            backend.to_string(),
            tool.chars().take(64).collect::<String>(),
        );
        if dropped.len() < 1024 || dropped.contains_key(&key) {
            *dropped.entry(key).or_default() += 1;
        }
    }

    /// Adds the gateway's endpoints (exposure class `Api`) to `table`.
    pub fn routes(self: Arc<Self>, table: RouteTable) -> RouteTable {
        let op = |op: Op| {
            post(move |State(gw): State<Arc<Gateway>>, req: Request| handle(gw, op, req))
                .with_state(self.clone())
        };
        table
            // Even the server's own refusals (413, 408, 405, 401, 403, 429) reach an
            // SDK in the shape it parses.
            .errors_under("/v1/messages", errors::anthropic_dialect)
            .errors_under("/v1/complete", errors::anthropic_dialect)
            .errors_under("/v1/chat/completions", errors::openai_dialect)
            .errors_under("/v1/responses", errors::openai_dialect)
            .route("/v1/messages", Exposure::Api, op(Op::Messages))
            .route(
                "/v1/messages/count_tokens",
                Exposure::Api,
                op(Op::CountTokens),
            )
            .route("/v1/complete", Exposure::Api, op(Op::Complete))
            .route("/v1/chat/completions", Exposure::Api, op(Op::Chat))
            .route("/v1/responses", Exposure::Api, op(Op::Responses))
            .route(
                "/v1/responses/{id}",
                Exposure::Api,
                axum::routing::get(get_response)
                    .delete(delete_response)
                    .with_state(self.clone()),
            )
            .route(
                "/v1/responses/{id}/cancel",
                Exposure::Api,
                axum::routing::post(cancel_response).with_state(self.clone()),
            )
            .route(
                "/v1/responses/{id}/input_items",
                Exposure::Api,
                axum::routing::get(response_input_items).with_state(self.clone()),
            )
            .route(
                "/v1/models",
                Exposure::Api,
                axum::routing::get(models).with_state(self.clone()),
            )
            .route(
                "/v1/models/{*id}",
                Exposure::Api,
                axum::routing::get(model).with_state(self.clone()),
            )
    }
}

/// Why an in-process model call ([`Gateway::messages`]) failed: the status and the
/// message a client would have got.
#[derive(Debug, thiserror::Error)]
#[error("the model call failed ({status}): {message}")]
pub struct CallError {
    /// The HTTP status a client would have seen.
    pub status: u16,
    /// The error's message, redacted as every error body is.
    pub message: String,
}

impl Gateway {
    /// Sends an Anthropic Messages request (not streamed) through the router, in process:
    /// routing, pools, failover, translation and usage metering as for a client, with no
    /// HTTP hop. The answer is the Messages response, whatever the backend's kind.
    pub async fn messages(
        self: &Arc<Self>,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, CallError> {
        let headers = in_process_headers();
        let body = bytes::Bytes::from(body.to_string());
        let resp = proxy::handle(self.clone(), Op::Messages, headers, body).await;
        whole_answer(resp).await
    }

    /// The same call streamed: `on_text` gets the text as it arrives (whatever the
    /// backend's kind: a translated stream is Anthropic events here too), and the answer
    /// is the whole message, as [`Gateway::messages`] gives it.
    pub async fn messages_streamed(
        self: &Arc<Self>,
        body: &serde_json::Value,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<serde_json::Value, CallError> {
        let mut body = body.clone();
        body["stream"] = serde_json::Value::Bool(true);
        let headers = in_process_headers();
        let resp = proxy::handle(
            self.clone(),
            Op::Messages,
            headers,
            bytes::Bytes::from(body.to_string()),
        )
        .await;
        let broken = |message: String| CallError {
            status: 502,
            message,
        };
        let is_stream = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !resp.status().is_success() || !is_stream {
            // An error, or a backend that answered whole although asked to stream.
            return whole_answer(resp).await;
        }
        let mut stream = resp.into_body();
        let mut parser = sse::SseParser::new();
        let mut assembler = assemble::Assembler::new();
        while let Some(frame) = stream.frame().await {
            let frame = frame.map_err(|e| broken(format!("the answer could not be read: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let events = parser
                .feed(&data)
                .map_err(|e| broken(format!("the answer could not be read: {e}")))?;
            for event in events {
                let name = event.event.as_deref().unwrap_or("message");
                let data: serde_json::Value = serde_json::from_str(&event.data)
                    .map_err(|_| broken(format!("a {name} event is not JSON")))?;
                match assembler.event(name, &data) {
                    Ok(Some(text)) => on_text(&text),
                    Ok(None) => {}
                    Err(assemble::AssembleError::Failed { kind, message }) => {
                        return Err(CallError {
                            status: errors::status_of_error_type(&kind),
                            message,
                        });
                    }
                    Err(e) => return Err(broken(e.to_string())),
                }
            }
        }
        assembler.finish().map_err(|e| broken(e.to_string()))
    }
}

/// The headers of an in-process Messages call: the API version a client would send.
fn in_process_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "anthropic-version",
        http::HeaderValue::from_static("2023-06-01"),
    );
    headers
}

/// A whole Messages answer (or error) read from `resp`.
async fn whole_answer(resp: Response) -> Result<serde_json::Value, CallError> {
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| CallError {
            status: 502,
            message: format!("the answer could not be read: {e}"),
        })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| CallError {
        status: if status.is_success() {
            502
        } else {
            status.as_u16()
        },
        message: "the answer is not JSON".into(),
    })?;
    if !status.is_success() {
        return Err(CallError {
            status: status.as_u16(),
            message: value
                .pointer("/error/message")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("the model's backend failed")
                .to_string(),
        });
    }
    Ok(value)
}

async fn handle(gw: Arc<Gateway>, op: Op, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // moat-net has read the body under its limits already; this only takes it out.
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return ApiError::invalid("request body could not be read").response(op.format());
        }
    };
    proxy::handle(gw, op, parts.headers, body).await
}

fn response_id(req: &Request) -> String {
    req.extensions()
        .get::<moat_net::PathParams>()
        .and_then(|p| p.get("id"))
        .unwrap_or_default()
        .to_string()
}

fn store_failed(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "state.db failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "moat's state store failed; see the server log",
    )
    .response(ApiFormat::OpenAi)
}

/// The store and the stored response `id`, or the answer that says why not.
async fn find_stored<'a>(
    gw: &'a Gateway,
    id: &str,
) -> Result<(&'a stored::ResponseStore, stored::Stored), Box<Response>> {
    let store = gw
        .responses
        .as_deref()
        .ok_or_else(|| Box::new(no_such_response(id)))?;
    match store.get(id).await {
        Ok(Some(s)) => Ok((store, s)),
        Ok(None) => Err(Box::new(no_such_response(id))),
        Err(e) => Err(Box::new(store_failed(&e))),
    }
}

fn no_such_response(id: &str) -> Response {
    // Named back as far as an id of moat's could go: a path can be kilobytes long.
    let shown: String = id.chars().take(64).collect();
    let more = if shown.len() < id.len() { "…" } else { "" };
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no stored response {shown:?}{more}"),
    )
    .response(ApiFormat::OpenAi)
}

/// `GET /v1/responses/{id}`: a stored response. One still running at the native backend
/// that holds it (`background`) is asked for afresh, and kept once it is done.
async fn get_response(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let id = response_id(&req);
    let (store, stored) = match find_stored(&gw, &id).await {
        Ok(found) => found,
        Err(answer) => return *answer,
    };
    let running = matches!(
        stored.response["status"].as_str(),
        Some("queued" | "in_progress")
    );
    if let (true, Some(holder)) = (running, &stored.held_by) {
        return relay_from_holder(&gw, store, &stored, holder, &id, Method::GET).await;
    }
    let mut stream = false;
    let mut starting_after = None;
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "stream" => stream = v == "true",
            "starting_after" => match v.parse::<u64>() {
                Ok(n) => starting_after = Some(n),
                Err(_) => {
                    return ApiError::invalid("`starting_after` must be a sequence number")
                        .response(ApiFormat::OpenAi);
                }
            },
            _ => {}
        }
    }
    if !stream {
        return json_response(StatusCode::OK, stored.response.to_string());
    }
    // The stored answer replayed as its stream; every byte masked like any answer.
    let events: Vec<Bytes> = stored::replay(&stored.response, starting_after)
        .into_iter()
        .map(proxy::mask_known)
        .collect();
    let body =
        futures_util::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>));
    let mut resp = Response::new(axum::body::Body::from_stream(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    resp
}

/// `POST /v1/responses/{id}/cancel`: cancels a background response at the native backend
/// that runs it. moat's own responses are never in the background.
async fn cancel_response(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let id = response_id(&req);
    let (store, stored) = match find_stored(&gw, &id).await {
        Ok(found) => found,
        Err(answer) => return *answer,
    };
    match &stored.held_by {
        Some(holder) => relay_from_holder(&gw, store, &stored, holder, &id, Method::POST).await,
        None => {
            ApiError::invalid("only a background response can be cancelled; this one is complete")
                .response(ApiFormat::OpenAi)
        }
    }
}

/// Asks the holder of response `id` for it (`GET`) or to cancel it (`POST`), answers with
/// what it said, and keeps the newer copy.
async fn relay_from_holder(
    gw: &Gateway,
    store: &stored::ResponseStore,
    stored: &stored::Stored,
    holder: &stored::Holder,
    id: &str,
    method: Method,
) -> Response {
    let (status, body) = match ask_holder(gw, holder, method, id).await {
        Ok(Some(answer)) => answer,
        // The holder is gone from config: moat's copy is all there is.
        Ok(None) => return json_response(StatusCode::OK, stored.response.to_string()),
        Err(e) => return e.response(ApiFormat::OpenAi),
    };
    if !status.is_success() {
        let message = errors::upstream_message(&body)
            .unwrap_or_else(|| format!("backend {:?} answered {status}", holder.backend));
        return ApiError::new(status, message).response(ApiFormat::OpenAi);
    }
    let fresh = match json_size::parse(&body) {
        Ok(fresh) => fresh,
        Err(json_size::Refused::TooManyValues) => {
            return ApiError::upstream("the model's backend sent a response too large to keep")
                .response(ApiFormat::OpenAi);
        }
        Err(json_size::Refused::Invalid(_)) => serde_json::Value::Null,
    };
    if fresh["id"] != id {
        return ApiError::upstream("the model's backend sent a response that is not this one")
            .response(ApiFormat::OpenAi);
    }
    store.put(&stored.input, &fresh, Some(holder));
    json_response(StatusCode::OK, body)
}

/// `GET /v1/responses/{id}/input_items`: the input items of a stored response, paged
/// (`limit` 1 to 100, default 20; `order` `desc` (default) or `asc`; `after` an item id).
async fn response_input_items(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let id = response_id(&req);
    let mut limit = 20usize;
    let mut desc = true;
    let mut after = None;
    for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "limit" => match v.parse::<usize>() {
                Ok(n @ 1..=100) => limit = n,
                _ => {
                    return ApiError::invalid("`limit` must be a number from 1 to 100")
                        .response(ApiFormat::OpenAi);
                }
            },
            "order" => match v.as_ref() {
                "asc" => desc = false,
                "desc" => desc = true,
                _ => {
                    return ApiError::invalid("`order` must be \"asc\" or \"desc\"")
                        .response(ApiFormat::OpenAi);
                }
            },
            "after" => after = Some(v.into_owned()),
            // `include` asks for extra fields moat does not keep; the items come without them.
            _ => {}
        }
    }
    let Some(store) = &gw.responses else {
        return no_such_response(&id);
    };
    match store.get(&id).await {
        Ok(Some(s)) => {
            let items = stored::input_items(&id, &s.input);
            let page = stored::page(items, desc, after.as_deref(), limit);
            json_response(StatusCode::OK, page.to_string())
        }
        Ok(None) => no_such_response(&id),
        Err(e) => store_failed(&e),
    }
}

/// `DELETE /v1/responses/{id}`: forgets a stored response, at the native backend that
/// holds it too before moat's own copy (a failure there keeps both, to retry).
async fn delete_response(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let id = response_id(&req);
    let (store, stored) = match find_stored(&gw, &id).await {
        Ok(found) => found,
        Err(answer) => return *answer,
    };
    if let Some(holder) = &stored.held_by {
        match ask_holder(&gw, holder, Method::DELETE, &id).await {
            Ok(None) => {}
            // Gone there already is as good as deleted.
            Ok(Some((status, _))) if status.is_success() || status == StatusCode::NOT_FOUND => {}
            Ok(Some((status, _))) => {
                return ApiError::upstream(format!(
                    "backend {:?} answered {status} to the delete; moat kept its copy too, retry",
                    holder.backend
                ))
                .response(ApiFormat::OpenAi);
            }
            Err(e) => return e.response(ApiFormat::OpenAi),
        }
    }
    match store.delete(&id).await {
        Ok(_) => json_response(
            StatusCode::OK,
            serde_json::json!({"id": id, "object": "response", "deleted": true}).to_string(),
        ),
        Err(e) => store_failed(&e),
    }
}

/// Largest answer read from a holder about one response.
const MAX_HOLDER_ANSWER: usize = 64 * 1024 * 1024;

/// Sends `GET`/`DELETE /responses/{id}` (or `POST .../cancel` for `POST`) to the backend
/// account that holds response `id`: its status and body, or none when that account is
/// no longer configured with native Responses.
async fn ask_holder(
    gw: &Gateway,
    holder: &stored::Holder,
    method: Method,
    id: &str,
) -> Result<Option<(StatusCode, bytes::Bytes)>, ApiError> {
    let backend = gw
        .backends
        .get(&holder.backend)
        .filter(|b| b.native_responses());
    let account = backend.and_then(|b| {
        b.pool()
            .accounts()
            .iter()
            .find(|a| a.name() == holder.account)
    });
    let (Some(backend), Some(account)) = (backend, account) else {
        tracing::warn!(
            backend = %holder.backend,
            account = %holder.account,
            "the backend account that holds a stored response is no longer configured with native Responses; moat's copy is all there is"
        );
        return Ok(None);
    };
    let credential = account.credential(backend.auth()).await?;
    let cancel = method == Method::POST;
    let req = backend.response_request(method, id, cancel, credential.as_ref())?;
    drop(credential);
    let unreachable = |what: &str| {
        format!(
            "{what} backend {:?}, which holds the response; moat kept its copy, retry",
            holder.backend
        )
    };
    let exchange = async {
        let resp = backend.send(req).await.map_err(|e| {
            tracing::warn!(backend = %holder.backend, error = %e, "asking the holder of a response");
            ApiError::upstream(unreachable("cannot reach"))
        })?;
        let status = resp.status();
        account.observe(status, resp.headers(), std::time::Instant::now());
        let body = http_body_util::Limited::new(resp.into_body(), MAX_HOLDER_ANSWER)
            .collect()
            .await
            .map_err(|_| ApiError::upstream(unreachable("lost the answer of")))?
            .to_bytes();
        Ok::<_, ApiError>((status, body))
    };
    tokio::time::timeout(gw.upstream_timeout, exchange)
        .await
        .map_err(|_| ApiError::new(StatusCode::GATEWAY_TIMEOUT, unreachable("no answer from")))?
        .map(Some)
}

/// `GET /accounts`.
async fn accounts(State(gw): State<Arc<Gateway>>) -> Response {
    json_response(StatusCode::OK, gw.accounts_json().to_string())
}

/// `GET /analytics`.
async fn analytics_handler(State(gw): State<Arc<Gateway>>) -> Response {
    match tokio::task::spawn_blocking(move || gw.analytics_json()).await {
        Ok(Ok(v)) => json_response(StatusCode::OK, v.to_string()),
        Ok(Err(e)) => store_failed(&e),
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"analytics failed"}"#,
        ),
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut resp = Response::new(axum::body::Body::from(gw.metrics_text()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// The API a models request speaks: Anthropic's when it carries `anthropic-version`.
fn models_format(headers: &HeaderMap) -> ApiFormat {
    if headers.contains_key("anthropic-version") {
        ApiFormat::Anthropic
    } else {
        ApiFormat::OpenAi
    }
}

/// One model as `format` lists it.
fn model_object(format: ApiFormat, name: &str) -> Value {
    match format {
        ApiFormat::Anthropic => json!({"type": "model", "id": name, "display_name": name,
                                       "created_at": "1970-01-01T00:00:00Z"}),
        ApiFormat::OpenAi => {
            json!({"id": name, "object": "model", "created": 0, "owned_by": "moat"})
        }
    }
}

/// `GET /v1/models/{id}`: the model if the route table serves that name (by glob or
/// `BACKEND:MODEL` too, which the list cannot show), else 404 in the client's format.
async fn model(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let format = models_format(req.headers());
    let raw = req
        .extensions()
        .get::<moat_net::PathParams>()
        .and_then(|p| p.get("id"))
        .unwrap_or_default();
    // SDKs escape a `/` in a model's name (`vendor%2Fmodel`).
    let id = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    if gw.router.resolve(&id).is_ok() {
        return json_response(StatusCode::OK, model_object(format, &id).to_string());
    }
    let shown: String = id.chars().take(64).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("model {shown:?} is not served by this gateway"),
    )
    .response(format)
}

/// How long a backend's own model list is reused, and how long a failed ask waits.
const LISTED_FOR: Duration = Duration::from_secs(300);
const LIST_RETRY_AFTER: Duration = Duration::from_secs(30);
/// The most names taken from one backend's list.
const MAX_LISTED: usize = 2000;

impl Gateway {
    /// The names a glob backend serves under their own names: its own `/models`, asked
    /// at most every five minutes, filtered by its globs.
    async fn listed_by(&self, backend_name: &str) -> Vec<String> {
        let mut listed = self.listed.lock().await;
        if let Some((at, names)) = listed.get(backend_name) {
            let fresh = if names.is_empty() {
                LIST_RETRY_AFTER
            } else {
                LISTED_FOR
            };
            if at.elapsed() < fresh {
                return names.clone();
            }
        }
        let names = match self.backends.get(backend_name) {
            Some(backend) => self.ask_models(backend).await,
            None => Vec::new(),
        };
        listed.insert(backend_name.to_string(), (Instant::now(), names.clone()));
        names
    }

    async fn ask_models(&self, backend: &Backend) -> Vec<String> {
        let credential = match backend.pool().accounts().first() {
            Some(account) => account.credential(backend.auth()).await.ok().flatten(),
            None => None,
        };
        let wait = self.upstream_timeout.min(Duration::from_secs(10));
        match probe::models(backend, backend.name(), credential.as_ref(), wait).await {
            Ok(answer) if answer.status.is_success() => answer
                .model_ids()
                .into_iter()
                .filter(|id| self.router.serves_as_listed(backend.name(), id))
                .take(MAX_LISTED)
                .collect(),
            Ok(answer) => {
                tracing::warn!(backend = backend.name(), status = %answer.status, "the backend's model list was refused; /v1/models shows its exact names only");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(backend = backend.name(), error = %e, "cannot ask the backend for its models; /v1/models shows its exact names only");
                Vec::new()
            }
        }
    }
}

/// `GET /v1/models`: the exact names the table exposes, aliases, and what each glob
/// backend's own list offers under its globs; in Anthropic's shape when the request
/// carries `anthropic-version`, else OpenAI's.
async fn models(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let mut names = gw.router.model_names();
    for backend in gw.router.glob_backends() {
        names.extend(gw.listed_by(&backend).await);
    }
    names.sort();
    names.dedup();
    let format = models_format(&headers);
    let data: Vec<Value> = names.iter().map(|n| model_object(format, n)).collect();
    let body = match format {
        ApiFormat::Anthropic => {
            json!({
                "data": data,
                "has_more": false,
                "first_id": names.first(),
                "last_id": names.last(),
            })
        }
        ApiFormat::OpenAi => json!({"object": "list", "data": data}),
    };
    json_response(StatusCode::OK, body.to_string())
}

/// A response with a JSON body.
/// A JSON answer. Every byte of it is checked for the exact values moat holds: whole
/// answers from upstreams leave through here too.
pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let body = proxy::mask_known(body.into());
    let mut resp = Response::new(axum::body::Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
