//! moat-llm: the LLM gateway. Anthropic- and OpenAI-format endpoints in front of any
//! number of Anthropic and OpenAI-compatible backends, with routing by model name,
//! failover, and complete two-way translation, streaming and tool calls included.
//!
//! - [`routing`]: model name → ordered targets (exact, `BACKEND:MODEL`, globs, aliases);
//! - [`backend`]: one upstream: fixed URLs, credential, concurrency limit, health;
//! - [`proxy`]: one request through routing, translation, failover and streaming;
//! - [`translate`]: the wire-format translation, whole and event by event;
//! - [`sse`]: the server-sent-events parser and writer;
//! - [`errors`]: errors in the client's own API format.
//!
//! ```
//! use moat_llm::routing::Router;
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

pub mod backend;
pub mod errors;
pub mod proxy;
pub mod routing;
pub mod sse;
pub mod stored;
pub mod translate;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use moat_core::config::llm::LlmConfig;
use moat_core::secret::SecretString;
use moat_net::exposure::Exposure;
use moat_net::routes::RouteTable;
use serde_json::{Value, json};

use crate::backend::{Backend, InvalidBaseUrl};
use crate::errors::{ApiError, ApiFormat};
use crate::proxy::Op;
use crate::routing::Router;

/// The gateway: backends, the route table and the limits, shared by all requests.
#[derive(Debug)]
pub struct Gateway {
    backends: BTreeMap<String, Arc<Backend>>,
    router: Router,
    upstream_timeout: Duration,
    default_max_tokens: u32,
    responses: Option<Arc<stored::ResponseStore>>,
}

impl Gateway {
    /// A gateway for `llm` (validated), with each backend's resolved credential by name.
    pub fn new(
        llm: &LlmConfig,
        mut credentials: HashMap<String, SecretString>,
    ) -> Result<Self, InvalidBaseUrl> {
        let backends = llm
            .backends
            .iter()
            .map(|(name, cfg)| {
                let backend = Backend::new(name, cfg, credentials.remove(name))?;
                Ok((name.clone(), Arc::new(backend)))
            })
            .collect::<Result<_, InvalidBaseUrl>>()?;
        Ok(Self {
            backends,
            router: Router::new(llm),
            upstream_timeout: llm.upstream_timeout,
            default_max_tokens: llm.default_max_tokens,
            responses: None,
        })
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

    /// Adds the gateway's endpoints (exposure class `Api`) to `table`.
    pub fn routes(self: Arc<Self>, table: RouteTable) -> RouteTable {
        let op = |op: Op| {
            post(move |State(gw): State<Arc<Gateway>>, req: Request| handle(gw, op, req))
                .with_state(self.clone())
        };
        table
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
                "/v1/models",
                Exposure::Api,
                axum::routing::get(models).with_state(self.clone()),
            )
    }
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
        .get::<moat_net::routes::PathParams>()
        .and_then(|p| p.get("id"))
        .unwrap_or_default()
        .to_string()
}

fn store_failed(e: &rusqlite::Error) -> Response {
    tracing::error!(error = %e, "the response store failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the response store failed",
    )
    .response(ApiFormat::OpenAi)
}

fn no_such_response(id: &str) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, format!("no stored response {id:?}"))
        .response(ApiFormat::OpenAi)
}

/// `GET /v1/responses/{id}`: a stored response.
async fn get_response(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let id = response_id(&req);
    let Some(store) = &gw.responses else {
        return no_such_response(&id);
    };
    match store.get(&id) {
        Ok(Some(s)) => json_response(StatusCode::OK, s.response.to_string()),
        Ok(None) => no_such_response(&id),
        Err(e) => store_failed(&e),
    }
}

/// `DELETE /v1/responses/{id}`: forgets a stored response.
async fn delete_response(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let id = response_id(&req);
    let Some(store) = &gw.responses else {
        return no_such_response(&id);
    };
    match store.delete(&id) {
        Ok(true) => json_response(
            StatusCode::OK,
            serde_json::json!({"id": id, "object": "response", "deleted": true}).to_string(),
        ),
        Ok(false) => no_such_response(&id),
        Err(e) => store_failed(&e),
    }
}

/// `GET /v1/models`: the exact names the route table exposes, in Anthropic's shape when
/// the request carries `anthropic-version`, else OpenAI's.
async fn models(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let names = gw.router.model_names();
    let format = if headers.contains_key("anthropic-version") {
        ApiFormat::Anthropic
    } else {
        ApiFormat::OpenAi
    };
    let body = match format {
        ApiFormat::Anthropic => {
            let data: Vec<Value> = names
                .iter()
                .map(|n| {
                    json!({"type": "model", "id": n, "display_name": n,
                           "created_at": "1970-01-01T00:00:00Z"})
                })
                .collect();
            json!({
                "data": data,
                "has_more": false,
                "first_id": names.first(),
                "last_id": names.last(),
            })
        }
        ApiFormat::OpenAi => {
            let data: Vec<Value> = names
                .iter()
                .map(|n| json!({"id": n, "object": "model", "created": 0, "owned_by": "moat"}))
                .collect();
            json!({"object": "list", "data": data})
        }
    };
    json_response(StatusCode::OK, body.to_string())
}

/// A response with a JSON body.
pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
