//! `POST /hooks/NAME`: a message for a channel that takes requests (a signed webhook, a
//! Telegram bot in webhook mode), handed to it. The route is of
//! the `hook` class (no moat credential: the signature is the credential), so every
//! refusal here says only what the caller must fix.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use moat_channels::webhook::{HookError, HookRequest};
use serde_json::json;

use crate::app::channels::Hooks;

pub(crate) async fn receive(State(hooks): State<Arc<Hooks>>, req: Request) -> Response {
    // The server's dispatcher matched `/hooks/{name}`; the name is the path's last part.
    let name = req
        .uri()
        .path()
        .strip_prefix("/hooks/")
        .unwrap_or_default()
        .to_string();
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    // The body was read and size-checked by the server's gate already.
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return refuse(StatusCode::BAD_REQUEST, "the body could not be read".into());
    };
    let Some(hook) = hooks.get(&name) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no channel takes requests at this name".into(),
        );
    };
    let request = HookRequest {
        headers: &headers,
        query: parts.uri.query(),
        body: &body,
    };
    match hook.receive(&request) {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({"accepted": true}))).into_response(),
        Err(e) => {
            let status = match e {
                HookError::Unsigned | HookError::BadSignature | HookError::Stale(_) => {
                    StatusCode::UNAUTHORIZED
                }
                HookError::Replayed => StatusCode::CONFLICT,
                HookError::BadBody(_) => StatusCode::BAD_REQUEST,
                HookError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            };
            tracing::info!(channel = %name, status = status.as_u16(), "a webhook request was refused: {e}");
            refuse(status, e.to_string())
        }
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"type": "webhook_refused", "message": message}})),
    )
        .into_response()
}
