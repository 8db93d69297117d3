//! One client request through the gateway: parse, route, translate, send with failover,
//! and stream the answer back in the client's format.
//!
//! Each target's backend picks one of its accounts ([`crate::pool`]). A 429, 401 or 403
//! cools that account and the request moves to another account of the same backend;
//! a connect failure, a full queue, an upstream 5xx, or a pool with no usable account
//! moves it to the next target. All of it happens before anything reached the client:
//! the response head is only sent once an upstream answered 2xx (or the last attempt
//! failed), so a byte that reached the client is never followed by another answer.
//! Attempts are bounded ([`MAX_ATTEMPTS`]).
//!
//! Every request leaves one [`UsageRecord`] (the last attempt's backend and account),
//! written when its response ends, however it ends.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use moat_core::config::llm::BackendKind;
use moat_net::egress::EgressError;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::backend::{Backend, Endpoint, Slot};
use crate::errors::{ApiError, ApiFormat, upstream_message};
use crate::json_size;
use crate::pool::{AccountEvent, InUse, Verdict};
use crate::routing::{RouteError, Target};
use crate::sse::SseParser;
use crate::stored::Holder;
use crate::translate::{native_responses, request, response, responses, stream};
use crate::usage::{Recorder, StreamMeter, TokenCounts, UsageRecord};
use crate::{Gateway, json_response};

/// Most upstream attempts (accounts and targets together) for one request.
pub(crate) const MAX_ATTEMPTS: usize = 8;
/// Most targets tried for one request.
pub(crate) const MAX_TARGETS: usize = 4;
/// Largest non-streaming upstream response read into memory.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest upstream error body read (the message is all that is kept).
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// What the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// Anthropic legacy `POST /v1/complete`.
    Complete,
    /// OpenAI `POST /v1/chat/completions`.
    Chat,
    /// OpenAI `POST /v1/responses`.
    Responses,
}

impl Op {
    /// The API the client speaks.
    pub(crate) fn format(self) -> ApiFormat {
        match self {
            Op::Chat | Op::Responses => ApiFormat::OpenAi,
            _ => ApiFormat::Anthropic,
        }
    }
}

/// Why one attempt did not produce a response.
struct Failed {
    error: ApiError,
    /// Whether the next target may be tried.
    retry: bool,
    /// The account is cooling down: another account of the same backend may serve.
    verdict: Verdict,
    /// For the usage record.
    class: &'static str,
}

impl From<ApiError> for Failed {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            retry: false,
            verdict: Verdict::Fine,
            class: "invalid_request",
        }
    }
}

impl Failed {
    fn new(error: ApiError, class: &'static str) -> Self {
        Self {
            error,
            retry: false,
            verdict: Verdict::Fine,
            class,
        }
    }

    fn retry(mut self) -> Self {
        self.retry = true;
        self
    }
}

/// One request's usage record, written when it is dropped: at the end of the handler,
/// or, for a stream, when the stream ends or the client goes away.
pub(crate) struct Meter {
    recorder: Option<Recorder>,
    started: Instant,
    record: UsageRecord,
    stream: Option<StreamMeter>,
}

impl Meter {
    fn new(recorder: Option<Recorder>) -> Self {
        Self {
            recorder,
            started: Instant::now(),
            record: UsageRecord {
                at_ms: crate::usage::now_ms(),
                // Until an answer is on its way: a client that goes away while the
                // request waits is recorded as such (nginx's 499).
                status: 499,
                error_class: Some("client_closed"),
                ..UsageRecord::default()
            },
            stream: None,
        }
    }

    fn answered(&mut self) {
        self.record.status = 200;
        self.record.error_class = None;
    }

    /// Moves the duty to record into a new meter (which the stream then owns).
    fn detach(&mut self) -> Meter {
        Meter {
            recorder: self.recorder.take(),
            started: self.started,
            record: self.record.clone(),
            stream: self.stream.take(),
        }
    }

    fn failed(&mut self, status: StatusCode, class: &'static str) {
        self.record.status = status.as_u16();
        self.record.error_class = Some(class);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            if let Some(s) = &self.stream {
                self.record.tokens = s.tokens;
            }
            self.record.total = self.started.elapsed();
            recorder.record(std::mem::take(&mut self.record));
        }
    }
}

/// Runs one request; every failure becomes an error in the client's format.
pub(crate) async fn handle(gw: Arc<Gateway>, op: Op, headers: HeaderMap, body: Bytes) -> Response {
    let mut meter = Meter::new(gw.usage.clone());
    match run(&gw, op, &headers, body, &mut meter).await {
        Ok(resp) => resp,
        Err(f) => {
            meter.failed(f.error.status, f.class);
            let mut resp = f.error.response(op.format());
            if f.error.local_limit {
                resp = moat_net::refused(resp, "limit.busy", "overloaded");
            }
            resp
        }
    }
}

/// The fields routing needs, read without building the whole document: the rest is
/// skipped over, and these two stay text until they are checked (either could be a
/// megabytes-deep array).
#[derive(serde::Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
}

/// A client's request body, parsed into a JSON value only when translation needs it.
struct ClientBody {
    raw: Bytes,
    value: std::sync::OnceLock<Result<Value, ApiError>>,
}

impl ClientBody {
    fn new(raw: Bytes) -> Self {
        Self {
            raw,
            value: std::sync::OnceLock::new(),
        }
    }

    /// A body already parsed (and perhaps changed): `raw` must be `value`'s bytes.
    fn parsed(raw: Bytes, value: Value) -> Self {
        let body = Self::new(raw);
        let _ = body.value.set(Ok(value));
        body
    }

    fn value(&self) -> Result<&Value, ApiError> {
        self.value
            .get_or_init(|| json_size::parse(&self.raw).map_err(refused_body))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// A client body that cannot be parsed for translation.
fn refused_body(why: json_size::Refused) -> ApiError {
    match why {
        json_size::Refused::TooManyValues => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request has more than {} JSON values, more than moat translates in one request",
                json_size::MAX_VALUES
            ),
        ),
        json_size::Refused::Invalid(e) => bad_json(&e),
    }
}

fn bad_json(e: &serde_json::Error) -> ApiError {
    // serde's message can quote the input; give the position only (and the one reason
    // that is not the input's fault).
    if e.to_string().starts_with("recursion limit exceeded") {
        return ApiError::invalid(format!(
            "request body nests JSON more than {} levels deep (line {}, column {})",
            json_size::MAX_DEPTH,
            e.line(),
            e.column()
        ));
    }
    ApiError::invalid(format!(
        "request body is not valid JSON (line {}, column {})",
        e.line(),
        e.column()
    ))
}

async fn run(
    gw: &Gateway,
    op: Op,
    headers: &HeaderMap,
    body: Bytes,
    meter: &mut Meter,
) -> Result<Response, Failed> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid("request body must be a JSON object").into());
    }
    let probe: Probe = serde_json::from_slice(&body).map_err(|e| bad_json(&e))?;
    // Checked for every request, forwarded as it is or not (see `json_size::MAX_DEPTH`).
    if let Some(at) = json_size::nested_deeper_than(&body, json_size::MAX_DEPTH) {
        return Err(ApiError::invalid(format!(
            "request body nests JSON more than {} levels deep (at byte {at})",
            json_size::MAX_DEPTH
        ))
        .into());
    }
    let model: String = match probe.model.map(RawValue::get) {
        Some(raw) if raw.starts_with('"') => serde_json::from_str(raw).map_err(|e| bad_json(&e))?,
        _ => return Err(ApiError::invalid("`model` is missing or not a string").into()),
    };
    let model = model.as_str();
    meter.record.model = model.chars().take(256).collect();
    let decision = gw.router.resolve(model).map_err(|e| match e {
        RouteError::Invalid(_) => Failed::new(ApiError::invalid(e.to_string()), "invalid_request"),
        RouteError::NoRoute(_) => Failed::new(
            ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            "no_route",
        ),
    })?;
    // Anything but a boolean would be read one way here and perhaps another upstream
    // (moat waiting for JSON while the upstream streams).
    let streaming = match probe.stream.map(RawValue::get) {
        None | Some("null" | "false") => false,
        Some("true") => op != Op::CountTokens,
        Some(_) => return Err(ApiError::invalid("`stream` must be true or false").into()),
    };
    let (req, conversation) = match op {
        Op::Responses => {
            let (req, c) = responses_conversation(gw, body).await?;
            (req, Some(c))
        }
        _ => (ClientBody::new(body), None),
    };
    let deadline = tokio::time::Instant::now() + gw.upstream_timeout;
    let targets: Vec<(&Target, &Arc<Backend>)> = decision
        .targets
        .iter()
        .filter_map(|t| gw.backends.get(&t.backend).map(|b| (t, b)))
        .take(MAX_TARGETS)
        .collect();
    let mut last: Option<Failed> = None;
    let mut attempts = 0;
    'targets: for (i, &(target, backend)) in targets.iter().enumerate() {
        let last_target = i + 1 == targets.len();
        if !backend.native_responses()
            && let Some(refused) = conversation.as_ref().and_then(Conversation::needs_native)
        {
            // A real upstream failure says more than this refusal.
            last.get_or_insert(refused);
            continue;
        }
        let pool = backend.pool();
        // Only a shared pool needs the conversation (and so the parsed body). A chained
        // Responses request is keyed by its whole conversation, so every turn shares the
        // first turn's key (and account, which holds the previous response natively).
        let sticky_key = if pool.is_shared() {
            conversation
                .as_ref()
                .and_then(|c| c.expanded.as_ref())
                .unwrap_or(&req)
                .value()
                .ok()
                .and_then(crate::pool::sticky::conversation_key)
        } else {
            None
        };
        meter.record.backend = backend.name().to_string();
        meter.record.model = target.model.clone();
        let mut tried = Vec::new();
        loop {
            if attempts == MAX_ATTEMPTS {
                break 'targets;
            }
            // Waiting for an account to come back is for requests that find the last
            // target's pool spent; one that just got its own 429 (or 401) from the
            // upstream passes that answer on, as the API itself would.
            let may_wait = last_target && tried.is_empty();
            let (index, account) = match pool.pick(sticky_key, &tried, may_wait).await {
                Ok(picked) => picked,
                Err(exhausted) => {
                    if tried.is_empty() {
                        let error = exhausted.error(backend.name(), std::time::Instant::now());
                        last = Some(Failed::new(error, "exhausted").retry());
                    }
                    tracing::info!(
                        backend = backend.name(),
                        "no account of the backend is usable"
                    );
                    break;
                }
            };
            attempts += 1;
            tried.push(index);
            meter.record.account = account.name().to_string();
            let attempt = Attempt {
                gw,
                op,
                conversation: conversation.as_ref(),
                req: &req,
                requested: model,
                target,
                backend,
                account: &account,
                headers,
                streaming,
                deadline,
            };
            match attempt.run(meter).await {
                Ok(resp) => return Ok(resp),
                Err(f) => {
                    let other_account = f.verdict == Verdict::TryAnother;
                    tracing::warn!(
                        backend = backend.name(),
                        account = account.name(),
                        model = %target.model,
                        status = f.error.status.as_u16(),
                        class = f.class,
                        "upstream attempt failed"
                    );
                    let retry = f.retry;
                    last = Some(f);
                    if other_account {
                        continue;
                    }
                    if !retry {
                        break 'targets;
                    }
                    break;
                }
            }
        }
        if last.as_ref().is_some_and(|l| !l.retry) {
            break;
        }
    }
    Err(last.unwrap_or_else(|| {
        Failed::new(
            ApiError::upstream("no backend could take the request"),
            "no_backend",
        )
    }))
}

/// A Responses request's conversation: everything said so far (the stored history of
/// `previous_response_id`, then this request's input) and whether to keep the answer.
struct Conversation {
    input: Vec<Value>,
    previous: Option<String>,
    /// `previous_response_id` named a response moat does not hold: only a backend with
    /// native Responses (which may hold it) can take the request, as it came.
    previous_unknown: bool,
    /// The request with the stored conversation in its `input` and no
    /// `previous_response_id`, when moat holds the previous response.
    expanded: Option<ClientBody>,
    /// The native-Responses backend account that holds the previous response too.
    held_by: Option<Holder>,
    /// The request names an upstream `conversation` (OpenAI's Conversations API): its
    /// history lives with the backend, which only a native one can read.
    upstream_conversation: bool,
    store: bool,
}

impl Conversation {
    /// Whether the answer is kept. Not when the conversation's start is unknown to
    /// moat: a stored answer would carry half the history, and `previous_response_id`
    /// pointing at it must stay with the upstream that knows the rest.
    fn keeps(&self) -> bool {
        self.store && !self.previous_unknown && !self.upstream_conversation
    }

    /// Whether `account` of `backend` holds the previous response itself, so that the
    /// request goes to it as it came (with the upstream's own state, reasoning included).
    /// Another account of the same backend (another organisation) would not find it.
    fn held_by(&self, backend: &Backend, account: &str) -> bool {
        backend.native_responses()
            && self
                .held_by
                .as_ref()
                .is_some_and(|h| h.backend == backend.name() && h.account == account)
    }

    /// The refusal for a translated backend, which cannot know history that only an
    /// upstream holds (an unknown `previous_response_id`, a `conversation`).
    fn needs_native(&self) -> Option<Failed> {
        let error = if let Some(id) = self.previous.as_deref().filter(|_| self.previous_unknown) {
            // OpenAI's answer for an unknown id: a 400 the SDKs raise as BadRequestError.
            ApiError::invalid(format!(
                "Previous response with id {id:?} not found (moat keeps responses for llm.responses_retention)"
            ))
            .with_code(
                Some("previous_response_not_found".into()),
                Some("previous_response_id".into()),
            )
        } else if self.upstream_conversation {
            ApiError::invalid(
                "`conversation` needs a backend with native Responses (responses = \"native\"); send the history in `input` or use `previous_response_id`",
            )
        } else {
            return None;
        };
        // A later target with native Responses may still serve it.
        Some(Failed::new(error, "invalid_request").retry())
    }
}

/// Expands `previous_response_id` into the stored conversation; the request that goes on
/// carries the whole input and no id. An id moat does not hold stays in the request.
async fn responses_conversation(
    gw: &Gateway,
    body: Bytes,
) -> Result<(ClientBody, Conversation), ApiError> {
    let req: Value = json_size::parse(&body).map_err(refused_body)?;
    let mut input = match req.get("input") {
        Some(Value::String(s)) => vec![json!({"role": "user", "content": s})],
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    let previous = req
        .get("previous_response_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let stored = match (&previous, &gw.responses) {
        (Some(id), Some(store)) => store.get(id).await.map_err(|e| {
            tracing::error!(error = %e, "reading a stored response");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the response store failed",
            )
        })?,
        _ => None,
    };
    let previous_unknown = previous.is_some() && stored.is_none();
    let (mut expanded, mut held_by) = (None, None);
    if let Some(stored) = stored {
        let mut history = stored.input;
        history.extend(
            stored.response["output"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|item| {
                    matches!(
                        item["type"].as_str(),
                        Some("message" | "function_call" | "custom_tool_call")
                    )
                })
                .map(|item| {
                    // Without its id: OpenAI refuses an output item it made whose
                    // reasoning item (not carried over) is missing, and ids mean
                    // nothing to another backend.
                    let mut item = item.clone();
                    if let Some(obj) = item.as_object_mut() {
                        obj.remove("id");
                    }
                    item
                }),
        );
        history.extend(input);
        input = history;
        let mut full = req.clone();
        if let Some(obj) = full.as_object_mut() {
            obj.remove("previous_response_id");
            obj.insert("input".into(), Value::Array(input.clone()));
        }
        let full_bytes = to_bytes(&full);
        // What is stored is read back whole on the next turn: it stays within what moat
        // parses for one request.
        if full_bytes.len() > json_size::MAX_CONVERSATION_BYTES
            || json_size::more_values_than(&full_bytes, json_size::MAX_VALUES)
        {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "with its earlier turns the conversation would pass moat's bound for one ({} MiB or {} JSON values): start a new conversation (without previous_response_id)",
                    json_size::MAX_CONVERSATION_BYTES >> 20,
                    json_size::MAX_VALUES
                ),
            ));
        }
        expanded = Some(ClientBody::parsed(full_bytes, full));
        held_by = stored.held_by;
    }
    let store = gw.responses.is_some() && req.get("store") != Some(&Value::Bool(false));
    let upstream_conversation = req.get("conversation").is_some_and(|c| !c.is_null());
    Ok((
        ClientBody::parsed(body, req),
        Conversation {
            input,
            previous,
            previous_unknown,
            expanded,
            held_by,
            upstream_conversation,
            store,
        },
    ))
}

struct Attempt<'a> {
    gw: &'a Gateway,
    op: Op,
    conversation: Option<&'a Conversation>,
    req: &'a ClientBody,
    requested: &'a str,
    target: &'a Target,
    backend: &'a Arc<Backend>,
    account: &'a InUse,
    headers: &'a HeaderMap,
    streaming: bool,
    deadline: tokio::time::Instant,
}

/// How the upstream's answer is turned into the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Same,
    AnthropicClientOpenAiUpstream,
    OpenAiClientAnthropicUpstream,
    ResponsesClientOpenAiUpstream,
    ResponsesClientAnthropicUpstream,
    /// A Responses client and a backend with native Responses: passed through.
    NativeResponses,
}

/// What an attempt does: send to an endpoint in a shape, or answer without an upstream.
enum Planned {
    Send(Endpoint, Shape, Bytes),
    Answer(Response),
}

/// The header that names the tools a translation left out (`llm.backends.NAME.
/// unsupported_tools = "drop"`), so a client can see what its request lost.
pub(crate) const DROPPED_TOOLS_HEADER: &str = "moat-dropped-tools";

impl Shape {
    /// The upstream's bytes reach the client as they are.
    fn passes_through(self) -> bool {
        matches!(self, Shape::Same | Shape::NativeResponses)
    }
}

impl Attempt<'_> {
    async fn run(&self, meter: &mut Meter) -> Result<Response, Failed> {
        let mut dropped = Vec::new();
        let planned = self.plan(&mut dropped).map_err(|mut f| {
            // A request this backend cannot take: say which backend, as another may.
            if f.error.status == StatusCode::BAD_REQUEST {
                f.error.message = format!(
                    "{} (backend {:?}, {})",
                    f.error.message,
                    self.backend.name(),
                    self.backend.kind().as_str()
                );
            }
            f
        })?;
        let (endpoint, shape, body) = match planned {
            Planned::Send(endpoint, shape, body) => (endpoint, shape, body),
            Planned::Answer(resp) => {
                meter.answered();
                return Ok(resp);
            }
        };
        let credential = self.credential().await?;
        let slot = self.slot().await?;
        let upstream_req = self.backend.request(
            Method::POST,
            endpoint,
            body,
            self.headers,
            credential.as_ref(),
        )?;
        drop(credential);
        let resp = self.send(upstream_req).await?;
        meter.record.ttfb = Some(meter.started.elapsed());
        let status = resp.status();
        let verdict = self
            .account
            .observe(status, resp.headers(), std::time::Instant::now());
        if !status.is_success() {
            let mut failed = self.upstream_failure(resp).await;
            failed.verdict = verdict;
            return Err(failed);
        }
        let (parts, incoming) = resp.into_parts();
        let mut resp = if self.streaming {
            self.stream_response(shape, &parts.headers, incoming, slot, meter)?
        } else {
            self.whole_response(shape, &parts.headers, incoming, slot, meter)
                .await?
        };
        if !dropped.is_empty() {
            self.report_dropped(&dropped, &mut resp);
        }
        Ok(resp)
    }

    /// Names the tools the translation left out: in a header of the answer, in the log
    /// and in `/metrics`.
    fn report_dropped(&self, dropped: &[String], resp: &mut Response) {
        let names = dropped.join(", ");
        tracing::info!(
            backend = self.backend.name(),
            tools = %names,
            "left out tools this backend cannot run (llm.backends.{}.unsupported_tools = \"drop\")",
            self.backend.name()
        );
        if let Ok(value) = HeaderValue::from_str(&names) {
            resp.headers_mut().insert(DROPPED_TOOLS_HEADER, value);
        }
        for tool in dropped {
            self.gw.count_dropped_tool(self.backend.name(), tool);
        }
    }

    /// Which endpoint, in which shape, with which body; or the answer itself when no
    /// upstream is needed (or none can serve).
    fn plan(&self, dropped: &mut Vec<String>) -> Result<Planned, Failed> {
        let opts = self.backend.translation();
        Ok(match (self.op, self.backend.kind()) {
            (Op::Responses, BackendKind::Openai) if self.backend.native_responses() => {
                Planned::Send(
                    Endpoint::Responses,
                    Shape::NativeResponses,
                    self.same_format_body(self.responses_request())?,
                )
            }
            (Op::Messages, BackendKind::Anthropic) => Planned::Send(
                Endpoint::Generate,
                Shape::Same,
                self.same_format_body(self.req)?,
            ),
            (Op::Messages, BackendKind::Openai) => {
                let v = request::anthropic_to_openai_with(
                    self.req.value()?,
                    &self.target.model,
                    opts,
                    dropped,
                )?;
                Planned::Send(
                    Endpoint::Generate,
                    Shape::AnthropicClientOpenAiUpstream,
                    to_bytes(&v),
                )
            }
            (Op::Chat, BackendKind::Openai) => Planned::Send(
                Endpoint::Generate,
                Shape::Same,
                self.same_format_body(self.req)?,
            ),
            (Op::Chat, BackendKind::Anthropic) => {
                let v = request::openai_to_anthropic(
                    self.req.value()?,
                    &self.target.model,
                    self.gw.default_max_tokens,
                )?;
                Planned::Send(
                    Endpoint::Generate,
                    Shape::OpenAiClientAnthropicUpstream,
                    to_bytes(&v),
                )
            }
            (Op::Responses, BackendKind::Openai) => {
                let v = responses::to_chat_with(
                    self.responses_request().value()?,
                    &self.target.model,
                    opts,
                    dropped,
                )?;
                Planned::Send(
                    Endpoint::Generate,
                    Shape::ResponsesClientOpenAiUpstream,
                    to_bytes(&v),
                )
            }
            (Op::Responses, BackendKind::Anthropic) => {
                let chat = responses::to_chat_with(
                    self.responses_request().value()?,
                    &self.target.model,
                    opts,
                    dropped,
                )?;
                let v = request::openai_to_anthropic(
                    &chat,
                    &self.target.model,
                    self.gw.default_max_tokens,
                )?;
                Planned::Send(
                    Endpoint::Generate,
                    Shape::ResponsesClientAnthropicUpstream,
                    to_bytes(&v),
                )
            }
            (Op::CountTokens, BackendKind::Anthropic) => Planned::Send(
                Endpoint::CountTokens,
                Shape::Same,
                self.same_format_body(self.req)?,
            ),
            (Op::CountTokens, BackendKind::Openai) => {
                // OpenAI-compatible servers have no counting endpoint: an estimate.
                Planned::Answer(json_response(
                    StatusCode::OK,
                    to_bytes(&json!({"input_tokens": estimate_tokens(self.req.value()?)})),
                ))
            }
            (Op::Complete, BackendKind::Anthropic) => Planned::Send(
                Endpoint::Complete,
                Shape::Same,
                self.same_format_body(self.req)?,
            ),
            (Op::Complete, BackendKind::Openai) => {
                return Err(ApiError::invalid(
                    "the legacy /v1/complete API is served only by anthropic backends; use /v1/messages",
                )
                .into());
            }
        })
    }

    /// The account's credential, refreshing an OAuth token within the deadline.
    async fn credential(
        &self,
    ) -> Result<
        Option<(
            moat_core::secret::SecretString,
            moat_core::config::llm::AuthScheme,
        )>,
        Failed,
    > {
        match tokio::time::timeout_at(self.deadline, self.account.credential(self.backend.auth()))
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::upstream(
                    "the account's OAuth token could not be refreshed within llm.upstream_timeout",
                ))
            }) {
            Ok(c) => Ok(c),
            Err(error) => {
                self.audit_auth("account.oauth_refresh_failed", None);
                Err(Failed {
                    error,
                    retry: true,
                    verdict: Verdict::TryAnother,
                    class: "oauth_refresh",
                })
            }
        }
    }

    /// A place in the backend's queue.
    async fn slot(&self) -> Result<Slot, Failed> {
        // The wait in the backend's queue counts against the same deadline, and ends as
        // "busy" rather than as an upstream that never answered.
        match tokio::time::timeout_at(self.deadline, self.backend.acquire()).await {
            Ok(acquired) => acquired.map_err(|error| Failed::new(error, "busy").retry()),
            Err(_) => {
                Err(Failed::new(
                    ApiError::busy(
                        "this model's backend stayed at its concurrency limit until llm.upstream_timeout; retry shortly",
                    ),
                    "busy",
                )
                .retry())
            }
        }
    }

    /// Sends the request within the deadline; connection failures are classed for
    /// failover and health.
    async fn send(
        &self,
        upstream_req: http::Request<http_body_util::Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, Failed> {
        let started = Instant::now();
        let health = self.backend.health();
        let resp = match tokio::time::timeout_at(self.deadline, self.backend.send(upstream_req))
            .await
        {
            Err(_) => {
                health.failed("timeout");
                self.account.failed("timeout");
                return Err(Failed::new(
                    ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the model's backend did not answer within llm.upstream_timeout",
                    ),
                    "timeout",
                ));
            }
            Ok(Err(EgressError::Connect(e))) => {
                health.failed("connect");
                self.account.failed("connect");
                tracing::warn!(backend = self.backend.name(), error = %e, "cannot connect to backend");
                return Err(Failed::new(
                    ApiError::upstream("cannot reach the model's backend"),
                    "connect",
                )
                .retry());
            }
            Ok(Err(EgressError::Broken(e))) => {
                health.failed("broken");
                self.account.failed("broken");
                tracing::warn!(backend = self.backend.name(), error = %e, "backend broke the connection");
                return Err(Failed::new(
                    ApiError::upstream(
                        "the model's backend closed the connection before answering",
                    ),
                    "broken",
                ));
            }
            Ok(Ok(resp)) => resp,
        };
        if resp.status().is_success() {
            health.ok(started.elapsed());
        }
        Ok(resp)
    }

    /// The client's event stream: passed through, or translated event by event.
    fn stream_response(
        &self,
        shape: Shape,
        upstream_headers: &HeaderMap,
        incoming: hyper::body::Incoming,
        slot: Slot,
        meter: &mut Meter,
    ) -> Result<Response, Failed> {
        let mode = match shape {
            Shape::Same => Mode::Pass(stream::PassThrough::new(self.op.format())),
            Shape::AnthropicClientOpenAiUpstream => {
                let estimate = self.req.value().map_or(0, estimate_tokens);
                Mode::Translate(Box::new(
                    stream::OpenAiToAnthropic::new(self.requested).with_input_estimate(estimate),
                ))
            }
            Shape::OpenAiClientAnthropicUpstream => {
                let opts = request::openai_stream_options(self.req.value()?);
                Mode::Translate(Box::new(stream::AnthropicToOpenAi::new(
                    self.requested,
                    opts.include_usage,
                )))
            }
            Shape::ResponsesClientOpenAiUpstream => {
                Mode::Translate(Box::new(self.responses_stream()?))
            }
            Shape::ResponsesClientAnthropicUpstream => {
                Mode::Translate(Box::new(responses::Chain::new(
                    Box::new(
                        stream::AnthropicToOpenAi::new(self.requested, true).keeping_searches(),
                    ),
                    Box::new(self.responses_stream()?),
                )))
            }
            Shape::NativeResponses => Mode::Native(self.native_watch()),
        };
        meter.answered();
        meter.stream = Some(match shape {
            Shape::NativeResponses => StreamMeter::responses(),
            _ => StreamMeter::new(self.backend.kind()),
        });
        let state = StreamState {
            body: incoming,
            parser: SseParser::new(),
            tail: bytes::BytesMut::new(),
            mode,
            pending: VecDeque::new(),
            idle: self.gw.upstream_timeout,
            finished: false,
            backend: self.backend.name().to_string(),
            meter: meter.detach(),
            _slot: slot,
        };
        let mut resp = Response::new(stream_body(state));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Tell nginx-like proxies between moat and the client not to buffer.
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        if shape.passes_through() {
            copy_request_ids(upstream_headers, h);
        }
        Ok(resp)
    }

    /// The client's whole answer: the upstream's bytes, or their translation; a finished
    /// Responses answer is kept when the client asked for `store`.
    async fn whole_response(
        &self,
        shape: Shape,
        upstream_headers: &HeaderMap,
        incoming: hyper::body::Incoming,
        slot: Slot,
        meter: &mut Meter,
    ) -> Result<Response, Failed> {
        let bytes = read_limited(incoming, MAX_RESPONSE_BYTES, self.deadline)
            .await
            .map_err(|e| {
                let class = read_failure_class(&e);
                Failed::new(e, class)
            })?;
        drop(slot);
        meter.record.tokens = TokenCounts::from_body(&bytes);
        let out = match shape {
            Shape::Same => bytes,
            Shape::NativeResponses => {
                if self.conversation.is_some_and(Conversation::keeps) {
                    // Kept as the upstream made it; the client gets its exact bytes.
                    match json_size::parse(&bytes) {
                        Ok(r) => self.keep(&r, native_holder(&r, &self.holder())),
                        Err(_) => tracing::warn!(
                            backend = self.backend.name(),
                            "a native Responses answer is not JSON or too large to keep; not stored"
                        ),
                    }
                }
                bytes
            }
            Shape::AnthropicClientOpenAiUpstream => {
                to_bytes(&response::openai_to_anthropic(&parse_upstream(&bytes)?))
            }
            Shape::OpenAiClientAnthropicUpstream => {
                to_bytes(&response::anthropic_to_openai(&parse_upstream(&bytes)?))
            }
            Shape::ResponsesClientOpenAiUpstream => {
                let r = responses::from_chat(&parse_upstream(&bytes)?, &self.echo()?);
                self.keep(&r, None);
                to_bytes(&r)
            }
            Shape::ResponsesClientAnthropicUpstream => {
                let chat = response::anthropic_to_openai_keeping_searches(&parse_upstream(&bytes)?);
                let r = responses::from_chat(&chat, &self.echo()?);
                self.keep(&r, None);
                to_bytes(&r)
            }
        };
        meter.answered();
        meter.record.bytes = out.len() as u64;
        let mut resp = json_response(StatusCode::OK, out);
        if shape.passes_through() {
            copy_request_ids(upstream_headers, resp.headers_mut());
        }
        Ok(resp)
    }

    /// Reports an account's auth failure (audited by the server).
    fn audit_auth(&self, action: &'static str, status: Option<StatusCode>) {
        let Some(events) = &self.gw.events else {
            return;
        };
        let mut detail = vec![];
        if let Some(s) = status {
            detail.push(("status", json!(s.as_u16())));
        }
        if let Some(c) = self.account.auth_cooldown(std::time::Instant::now()) {
            detail.push(("cooldown_secs", json!(c.as_secs())));
        }
        events.account_event(AccountEvent {
            backend: self.backend.name().to_string(),
            account: self.account.name().to_string(),
            action,
            detail,
        });
    }

    /// What a Responses client's request asked for, to echo in the response object.
    fn echo(&self) -> Result<responses::Echo, Failed> {
        let echo = responses::Echo::new(self.req.value()?, self.requested);
        Ok(match self.conversation {
            Some(c) => echo.stored(c.store, c.previous.as_deref()),
            None => echo,
        })
    }

    /// This attempt's backend account, as the holder of a response it makes.
    fn holder(&self) -> Holder {
        Holder {
            backend: self.backend.name().to_string(),
            account: self.account.name().to_string(),
        }
    }

    /// The Responses request as this backend takes it: as it came when the backend
    /// holds the previous response itself, else with moat's stored conversation.
    fn responses_request(&self) -> &ClientBody {
        match self.conversation {
            Some(c) if !c.held_by(self.backend, self.account.name()) => {
                c.expanded.as_ref().unwrap_or(self.req)
            }
            _ => self.req,
        }
    }

    /// Keeps a finished response when the client asked for `store`; `held_by` names
    /// the native backend account that keeps it too.
    fn keep(&self, response: &Value, held_by: Option<&Holder>) {
        if let (Some(c), Some(store)) = (self.conversation, &self.gw.responses)
            && c.keeps()
            && response["id"].as_str().is_some_and(|id| !id.is_empty())
        {
            store.put(&c.input, response, held_by);
        }
    }

    /// The watcher of a native Responses stream, keeping the final response when asked.
    fn native_watch(&self) -> native_responses::NativeWatch {
        let w = native_responses::NativeWatch::new();
        match (self.conversation, &self.gw.responses) {
            (Some(c), Some(store)) if c.keeps() => {
                let (store, input) = (store.clone(), c.input.clone());
                let holder = self.holder();
                w.on_finish(Box::new(move |r| {
                    store.put(&input, r, native_holder(r, &holder));
                }))
            }
            _ => w,
        }
    }

    /// The Responses stream translator, keeping the final response when asked.
    fn responses_stream(&self) -> Result<responses::ChatToResponses, Failed> {
        let t = responses::ChatToResponses::new(self.echo()?);
        Ok(match (self.conversation, &self.gw.responses) {
            (Some(c), Some(store)) if c.keeps() => {
                let (store, input) = (store.clone(), c.input.clone());
                t.on_finish(Box::new(move |r| store.put(&input, r, None)))
            }
            _ => t,
        })
    }

    /// The request bytes for a same-format upstream: `req` untouched unless routing
    /// renamed the model.
    fn same_format_body(&self, req: &ClientBody) -> Result<Bytes, Failed> {
        if self.target.model == self.requested {
            return Ok(req.raw.clone());
        }
        let mut v = req.value()?.clone();
        v["model"] = json!(self.target.model);
        Ok(to_bytes(&v))
    }

    /// An upstream non-2xx as the client's error; 5xx and 429 allow failover.
    async fn upstream_failure(&self, resp: http::Response<hyper::body::Incoming>) -> Failed {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        let retry = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        let class = match status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "auth",
            s if s.is_server_error() => "upstream_5xx",
            _ => "upstream_4xx",
        };
        self.backend.health().failed(if retry {
            "upstream_5xx_or_429"
        } else {
            "upstream_4xx"
        });
        if class == "auth" {
            // A 401 refuses the token itself; a 403 only this request with it.
            if status == StatusCode::UNAUTHORIZED
                && let Some(source) = self.account.oauth()
            {
                source.invalidate();
            }
            self.audit_auth("account.auth_failed", Some(status));
        }
        let body = read_limited(resp.into_body(), MAX_ERROR_BYTES, self.deadline)
            .await
            .unwrap_or_default();
        let message = upstream_message(&body)
            .unwrap_or_else(|| format!("the model's backend answered {status}"));
        tracing::info!(
            backend = self.backend.name(),
            status = status.as_u16(),
            message = %moat_core::redact::global().redact(&message),
            "upstream error"
        );
        // Auth failures upstream are moat's configuration, not the client's credentials.
        let status = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StatusCode::BAD_GATEWAY,
            s => s,
        };
        let message = if class == "auth" {
            format!(
                "the model's backend refused moat's credential; check account {:?} of backend {:?} (`moat account check {}`)",
                self.account.name(),
                self.backend.name(),
                self.backend.name()
            )
        } else {
            message
        };
        // An auth code (`invalid_api_key`) would blame the client's key for moat's.
        let (code, param) = if class == "auth" {
            (None, None)
        } else {
            crate::errors::upstream_code(&body)
        };
        let mut error = ApiError::new(status, message).with_code(code, param);
        error.retry_after = retry_after;
        let backend_format = match self.backend.kind() {
            BackendKind::Anthropic => ApiFormat::Anthropic,
            BackendKind::Openai => ApiFormat::OpenAi,
        };
        if class != "auth" && backend_format != self.op.format() {
            crate::errors::cross_format(&mut error, self.op.format());
        }
        Failed {
            error,
            retry,
            verdict: Verdict::Fine,
            class,
        }
    }
}

/// The native backend account holding a response it made: only one that says it
/// stored it (some servers, and OpenAI for zero-retention organisations, keep nothing).
fn native_holder<'a>(response: &Value, holder: &'a Holder) -> Option<&'a Holder> {
    (response["store"] == Value::Bool(true)).then_some(holder)
}

fn parse_upstream(bytes: &[u8]) -> Result<Value, Failed> {
    json_size::parse(bytes).map_err(|why| {
        let error = match why {
            json_size::Refused::TooManyValues => {
                ApiError::upstream("the model's backend sent a response too large to translate")
            }
            json_size::Refused::Invalid(_) => {
                ApiError::upstream("the model's backend sent a response that is not JSON")
            }
        };
        error.into()
    })
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(v.to_string())
}

fn copy_request_ids(from: &HeaderMap, to: &mut HeaderMap) {
    for name in ["request-id", "x-request-id"] {
        if let Some(v) = from.get(name) {
            to.insert(name, v.clone());
        }
    }
}

/// A rough count for servers that can't count: about four bytes a token.
fn estimate_tokens(req: &Value) -> u64 {
    let bytes: usize = ["system", "messages", "tools"]
        .iter()
        .filter_map(|k| req.get(*k))
        .map(|v| v.to_string().len())
        .sum();
    (bytes as u64).div_ceil(4).max(1)
}

/// The usage class of a failure while reading an upstream body: the deadline passed
/// (504) or the upstream broke off.
fn read_failure_class(e: &ApiError) -> &'static str {
    if e.status == StatusCode::GATEWAY_TIMEOUT {
        "timeout"
    } else {
        "broken"
    }
}

async fn read_limited(
    body: hyper::body::Incoming,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the model's backend did not finish within llm.upstream_timeout",
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the upstream response");
            Err(ApiError::upstream(
                "the model's backend broke off its response",
            ))
        }
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

enum Mode {
    Pass(stream::PassThrough),
    Native(native_responses::NativeWatch),
    Translate(Box<dyn stream::StreamTranslator>),
}

/// A streaming exchange in progress. Dropping it (the client went away) drops the
/// upstream body, which closes that upstream connection at once.
struct StreamState {
    body: hyper::body::Incoming,
    parser: SseParser,
    /// Passed-through bytes of an event not yet whole: held back, so that a stream
    /// that breaks leaves the client at an event boundary, where moat's error event
    /// can follow.
    tail: bytes::BytesMut,
    mode: Mode,
    pending: VecDeque<Bytes>,
    /// The longest the upstream may stay silent mid-stream (`llm.upstream_timeout`): a
    /// long answer from a slow local model is not cut while it keeps coming.
    idle: Duration,
    finished: bool,
    backend: String,
    meter: Meter,
    _slot: Slot,
}

/// At most this many bytes are gathered into one write.
const COALESCE_BYTES: usize = 64 * 1024;

impl StreamState {
    /// Takes the upstream frames that have already arrived, without waiting for more.
    fn take_ready(&mut self) {
        use futures_util::FutureExt;
        while !self.finished && self.pending.iter().map(Bytes::len).sum::<usize>() < COALESCE_BYTES
        {
            match self.body.frame().now_or_never() {
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.feed(data);
                    }
                }
                Some(None) => return self.end(),
                Some(Some(Err(e))) => {
                    tracing::warn!(backend = %self.backend, error = %e, "upstream stream broke");
                    return self.fail(&ApiError::upstream(
                        "the connection to the model's backend broke mid-stream",
                    ));
                }
                None => return,
            }
        }
    }

    fn feed(&mut self, data: Bytes) {
        let events = match self.parser.feed(&data) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(backend = %self.backend, error = %e, "upstream stream refused");
                return self.fail(&ApiError::upstream(e.to_string()));
            }
        };
        if let Some(m) = &mut self.meter.stream {
            for ev in &events {
                m.observe(ev);
            }
        }
        match &mut self.mode {
            Mode::Pass(p) => {
                let was = p.errored();
                for ev in &events {
                    if p.observe(ev) {
                        self.finished = true;
                    }
                }
                let errored_now = !was && p.errored();
                if errored_now {
                    self.meter.record.error_class = Some("upstream_stream_error");
                }
                self.forward_whole_events(data, errored_now);
            }
            Mode::Native(w) => {
                let was = w.errored();
                for ev in &events {
                    if w.observe(ev) {
                        self.finished = true;
                    }
                }
                let errored_now = !was && w.errored();
                if errored_now {
                    self.meter.record.error_class = Some("upstream_stream_error");
                }
                self.forward_whole_events(data, errored_now);
            }
            Mode::Translate(t) => {
                for ev in events {
                    self.pending.extend(t.event(ev));
                    if t.done() {
                        self.finished = true;
                        break;
                    }
                }
            }
        }
    }

    /// Queues the passed-through bytes that complete events; the rest waits in `tail`.
    /// Events that carry the upstream's error pass the whole redactor, credential shapes
    /// included, as every error moat sends does (an upstream may quote the key it got).
    fn forward_whole_events(&mut self, data: Bytes, holds_error: bool) {
        let Some(b) = self.parser.last_boundary() else {
            self.tail.extend_from_slice(&data);
            return;
        };
        let mut whole = if self.tail.is_empty() {
            data.slice(..b)
        } else {
            self.tail.extend_from_slice(&data[..b]);
            self.tail.split().freeze()
        };
        if holds_error {
            let redacted = moat_core::redact::global().redact_bytes(&whole);
            whole = Bytes::from(redacted);
        }
        if !whole.is_empty() {
            self.pending.push_back(whole);
        }
        self.tail.extend_from_slice(&data[b..]);
    }

    fn end(&mut self) {
        self.finished = true;
        let ending = match &mut self.mode {
            Mode::Pass(p) => p.end(),
            Mode::Native(w) => w.end(),
            Mode::Translate(t) => {
                let out = t.end();
                self.pending.extend(out);
                return;
            }
        };
        match ending {
            Some(error) => {
                self.tail.clear();
                self.pending.push_back(error);
            }
            // A complete stream goes out whole, whatever followed its last event.
            None if !self.tail.is_empty() => {
                let rest = self.tail.split().freeze();
                self.pending.push_back(rest);
            }
            None => {}
        }
    }

    fn fail(&mut self, err: &ApiError) {
        self.finished = true;
        self.meter.record.error_class = Some(match read_failure_class(err) {
            "broken" => "stream_broken",
            class => class,
        });
        self.tail.clear();
        match &mut self.mode {
            Mode::Pass(p) => self.pending.extend(p.fail(err)),
            Mode::Native(w) => self.pending.extend(w.fail(err)),
            Mode::Translate(t) => self.pending.extend(t.fail(err)),
        }
    }
}

/// `bytes` with every exact value moat holds (vault entries, keys, tokens) masked: a
/// backend that echoes its own key in an answer does not hand it to the client.
pub(crate) fn mask_known(bytes: Bytes) -> Bytes {
    match moat_core::redact::global().mask_known(&bytes) {
        Some(masked) => Bytes::from(masked),
        None => bytes,
    }
}

fn stream_body(state: StreamState) -> Body {
    let s = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(b) = s.pending.pop_front() {
                // Whole events only (see `forward_whole_events`), so a value cannot be
                // split between two of these.
                let b = mask_known(b);
                s.meter.record.bytes += b.len() as u64;
                return Some((Ok::<_, Infallible>(b), s));
            }
            if s.finished {
                return None;
            }
            match tokio::time::timeout(s.idle, s.body.frame()).await {
                Err(_) => s.fail(&ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the model's backend sent nothing for llm.upstream_timeout mid-stream",
                )),
                Ok(None) => s.end(),
                Ok(Some(Err(e))) => {
                    tracing::warn!(backend = %s.backend, error = %e, "upstream stream broke");
                    s.fail(&ApiError::upstream(
                        "the connection to the model's backend broke mid-stream",
                    ));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        s.feed(data);
                    }
                    s.take_ready();
                    // One write for everything that was ready: a fast upstream's many
                    // small events cost one syscall instead of one each.
                    if s.pending.len() > 1 {
                        let size = s.pending.iter().map(Bytes::len).sum();
                        let mut joined = bytes::BytesMut::with_capacity(size);
                        for b in s.pending.drain(..) {
                            joined.extend_from_slice(&b);
                        }
                        s.pending.push_back(joined.freeze());
                    }
                }
            }
        }
    });
    Body::from_stream(s)
}
