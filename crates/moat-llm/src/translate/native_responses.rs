//! Backends that speak the Responses API themselves (`responses = "native"`): their
//! stream reaches the client byte for byte. [`NativeWatch`] only looks at it, to know
//! when it is complete, to keep the final response when moat stores it, and to end a
//! broken stream the way the Responses API ends one: an `error` event, then
//! `response.failed`, numbered after the last event the client saw.

use bytes::Bytes;
use serde_json::{Value, json};

use super::responses::OnFinish;
use crate::errors::{ApiError, openai_error_type};
use crate::sse::{SseEvent, encode};

/// Watches a native Responses stream on its way to the client.
#[derive(Default)]
pub struct NativeWatch {
    /// The `sequence_number` of the last event seen.
    last_seq: Option<u64>,
    /// The response object of `response.created`, the base of a `response.failed`.
    created: Option<Value>,
    /// A terminal event (`response.completed`, `.incomplete`, `.failed`) went by, or
    /// moat ended the stream itself.
    done: bool,
    /// The upstream ended the stream with `error` or `response.failed`.
    errored: bool,
    on_finish: Option<OnFinish>,
}

impl NativeWatch {
    /// A watcher that keeps nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `f` with the final response object (completed or incomplete, not failed).
    pub fn on_finish(mut self, f: OnFinish) -> Self {
        self.on_finish = Some(f);
        self
    }

    /// Whether the upstream ended the stream with `error` or `response.failed`.
    pub fn errored(&self) -> bool {
        self.errored
    }

    /// Looks at one event on its way through; true once the stream is complete.
    pub fn observe(&mut self, ev: &SseEvent) -> bool {
        if let Some(n) = sequence_number(&ev.data) {
            self.last_seq = Some(self.last_seq.map_or(n, |m| m.max(n)));
        }
        let parsed;
        let kind = match ev.event.as_deref() {
            Some(k) => k,
            // Servers that omit `event:` lines name the type inside the data.
            None => {
                parsed = serde_json::from_str::<Value>(&ev.data).unwrap_or(Value::Null);
                parsed["type"].as_str().unwrap_or_default()
            }
        };
        match kind {
            "response.created" => {
                self.created = serde_json::from_str::<Value>(&ev.data)
                    .ok()
                    .map(|mut v| v["response"].take())
                    .filter(Value::is_object);
            }
            "response.completed" | "response.incomplete" => {
                self.done = true;
                if let Some(f) = self.on_finish.take()
                    && let Ok(v) = serde_json::from_str::<Value>(&ev.data)
                    && v["response"]["id"]
                        .as_str()
                        .is_some_and(|id| !id.is_empty())
                {
                    f(&v["response"]);
                }
            }
            // OpenAI ends a stream after its `error` event (and sends no `[DONE]`):
            // waiting for more would hold the client until the upstream timeout.
            "response.failed" | "error" => {
                self.errored = true;
                self.done = true;
            }
            _ => {}
        }
        self.done
    }

    /// The upstream ended: an error unless the stream was complete.
    pub fn end(&mut self) -> Option<Bytes> {
        self.fail(&ApiError::upstream(
            "the model's backend ended the stream early",
        ))
    }

    /// The events that end a broken stream, unless it already ended.
    pub fn fail(&mut self, err: &ApiError) -> Option<Bytes> {
        if self.done || self.errored {
            return None;
        }
        self.done = true;
        let seq = self.last_seq.map_or(0, |n| n.saturating_add(1));
        let error = json!({
            "type": "error",
            "code": openai_error_type(err.status),
            "message": err.message,
            "param": null,
            "sequence_number": seq,
        });
        let mut response = self.created.take().unwrap_or_else(|| json!({}));
        response["object"] = json!("response");
        response["status"] = json!("failed");
        response["error"] = json!({"code": "server_error", "message": err.message});
        let failed = json!({
            "type": "response.failed",
            "sequence_number": seq.saturating_add(1),
            "response": response,
        });
        // The proxy holds back a half-sent upstream event: these follow a boundary.
        Some(Bytes::from(
            [
                encode(Some("error"), &error.to_string()),
                encode(Some("response.failed"), &failed.to_string()),
            ]
            .concat(),
        ))
    }
}

/// The event's `sequence_number`, found by a scan: the pass-through path must not parse
/// every delta. Only events carry the key (response objects inside them do not).
fn sequence_number(data: &str) -> Option<u64> {
    const KEY: &str = "\"sequence_number\"";
    let i = data.find(KEY)?;
    let rest = data[i + KEY.len()..].trim_start().strip_prefix(':')?;
    let rest = rest.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::sse::SseParser;

    fn events(raw: &str) -> Vec<SseEvent> {
        SseParser::new().feed(raw.as_bytes()).unwrap()
    }

    const CREATED: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_up\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-x\",\"output\":[]}}\n\n";
    const DELTA: &str = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\",\"sequence_number\": 4}\n\n";
    const COMPLETED: &str = "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":5,\"response\":{\"id\":\"resp_up\",\"object\":\"response\",\"status\":\"completed\",\"output\":[{\"type\":\"message\"}],\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n";

    #[test]
    fn a_complete_stream_is_left_alone_and_its_response_kept() {
        let kept = Arc::new(Mutex::new(None));
        let k = kept.clone();
        let mut w = NativeWatch::new().on_finish(Box::new(move |r| {
            *k.lock().unwrap() = Some(r.clone());
        }));
        let all = events(&format!("{CREATED}{DELTA}{COMPLETED}"));
        let done: Vec<bool> = all.iter().map(|e| w.observe(e)).collect();
        assert_eq!(done, [false, false, true]);
        assert_eq!(w.end(), None, "a complete stream gets nothing appended");
        let kept = kept.lock().unwrap().clone().expect("kept");
        assert_eq!(kept["id"], "resp_up");
        assert_eq!(kept["status"], "completed");
    }

    #[test]
    fn a_stream_cut_short_ends_with_error_and_failed_numbered_on() {
        let mut w = NativeWatch::new();
        for e in events(&format!("{CREATED}{DELTA}")) {
            assert!(!w.observe(&e));
        }
        let tail = w.end().expect("an ending");
        let tail = String::from_utf8(tail.to_vec()).unwrap();
        let out = events(&tail);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].event.as_deref(), Some("error"));
        let error: Value = serde_json::from_str(&out[0].data).unwrap();
        assert_eq!(error["sequence_number"], 5);
        assert_eq!(error["type"], "error");
        assert!(error["message"].as_str().unwrap().contains("early"));
        assert_eq!(out[1].event.as_deref(), Some("response.failed"));
        let failed: Value = serde_json::from_str(&out[1].data).unwrap();
        assert_eq!(failed["sequence_number"], 6);
        assert_eq!(failed["response"]["id"], "resp_up");
        assert_eq!(failed["response"]["status"], "failed");
        assert_eq!(w.fail(&ApiError::upstream("again")), None, "ends once");
    }

    #[test]
    fn an_upstream_error_event_is_its_own_ending() {
        let mut w = NativeWatch::new();
        let raw = "data: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\",\"sequence_number\":1}\n\n";
        let done: Vec<bool> = events(&format!("{CREATED}{raw}"))
            .iter()
            .map(|e| w.observe(e))
            .collect();
        assert_eq!(done, [false, true]);
        assert!(w.errored());
        assert_eq!(w.end(), None);
    }

    #[test]
    fn event_types_are_read_from_the_data_when_unnamed() {
        let kept = Arc::new(Mutex::new(0));
        let k = kept.clone();
        let mut w = NativeWatch::new().on_finish(Box::new(move |_| *k.lock().unwrap() += 1));
        let unnamed: String = COMPLETED
            .lines()
            .filter(|l| !l.starts_with("event:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(w.observe(&events(&format!("{unnamed}\n"))[0]));
        assert_eq!(*kept.lock().unwrap(), 1);
    }

    #[test]
    fn sequence_numbers_by_scan() {
        assert_eq!(sequence_number(r#"{"sequence_number":12,"x":1}"#), Some(12));
        assert_eq!(sequence_number(r#"{"sequence_number" : 7}"#), Some(7));
        assert_eq!(sequence_number(r#"{"sequence_number":"x"}"#), None);
        assert_eq!(sequence_number(r#"{"delta":"no"}"#), None);
    }
}
