//! An Anthropic Messages event stream folded back into the whole message, as the API
//! would have answered without `stream`: for in-process callers (the assistant) that show
//! the text as it comes and still need the message's blocks, tool inputs and usage.

use serde_json::{Map, Value, json};

/// Why a stream could not be folded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// The stream said it failed (`event: error`): its type and message.
    #[error("{kind}: {message}")]
    Failed {
        /// The error's `type` (`overloaded_error`, `api_error`...).
        kind: String,
        /// Its message.
        message: String,
    },
    /// An event is not what the Messages stream has at that point.
    #[error("the stream broke its format: {0}")]
    Malformed(String),
    /// The stream ended before `message_stop`.
    #[error("the answer stopped before its end")]
    Unfinished,
}

/// Folds events into a message; [`Assembler::event`] returns the text a text block
/// grew by, for showing it as it arrives.
#[derive(Debug, Default)]
pub struct Assembler {
    message: Option<Map<String, Value>>,
    blocks: Vec<Value>,
    /// Each `tool_use` block's input as JSON text so far.
    partial_json: Vec<String>,
    done: bool,
}

impl Assembler {
    /// An assembler at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one event (`event:` name and parsed `data`); the text it added, if any.
    pub fn event(&mut self, name: &str, data: &Value) -> Result<Option<String>, AssembleError> {
        let malformed = |what: &str| AssembleError::Malformed(format!("{name}: {what}"));
        match name {
            "message_start" => {
                let message = data["message"]
                    .as_object()
                    .ok_or_else(|| malformed("no message"))?;
                self.message = Some(message.clone());
            }
            "content_block_start" => {
                let index = self
                    .index(data, false)
                    .ok_or_else(|| malformed("bad index"))?;
                let block = data["content_block"].clone();
                if !block.is_object() {
                    return Err(malformed("no content_block"));
                }
                self.blocks.push(block);
                self.partial_json.push(String::new());
                debug_assert_eq!(index + 1, self.blocks.len());
            }
            "content_block_delta" => {
                let index = self
                    .index(data, true)
                    .ok_or_else(|| malformed("bad index"))?;
                let delta = &data["delta"];
                let block = &mut self.blocks[index];
                let append = |block: &mut Value, field: &str, add: &Value| {
                    let add = add.as_str().unwrap_or_default();
                    let grown = format!("{}{add}", block[field].as_str().unwrap_or_default());
                    block[field] = Value::String(grown);
                };
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        append(block, "text", &delta["text"]);
                        return Ok(delta["text"].as_str().map(str::to_string));
                    }
                    Some("input_json_delta") => {
                        self.partial_json[index]
                            .push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    Some("thinking_delta") => append(block, "thinking", &delta["thinking"]),
                    Some("signature_delta") => block["signature"] = delta["signature"].clone(),
                    Some("citations_delta") => {
                        if !block["citations"].is_array() {
                            block["citations"] = json!([]);
                        }
                        if let Some(list) = block["citations"].as_array_mut() {
                            list.push(delta["citation"].clone());
                        }
                    }
                    // A delta type newer than this code: the block keeps what it has.
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = self
                    .index(data, true)
                    .ok_or_else(|| malformed("bad index"))?;
                let json_text = std::mem::take(&mut self.partial_json[index]);
                if !json_text.is_empty() {
                    // Cut by max_tokens, or a small model's own: `{}`, as a whole answer
                    // translated from such arguments has it, so the tool says what is
                    // missing rather than the turn failing.
                    self.blocks[index]["input"] =
                        crate::translate::response::parse_arguments(&json_text);
                }
            }
            "message_delta" => {
                let message = self
                    .message
                    .as_mut()
                    .ok_or_else(|| malformed("before message_start"))?;
                if let Some(delta) = data["delta"].as_object() {
                    for (k, v) in delta {
                        message.insert(k.clone(), v.clone());
                    }
                }
                if let Some(usage) = data["usage"].as_object() {
                    let total = message
                        .entry("usage")
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .ok_or_else(|| malformed("usage is not an object"))?;
                    for (k, v) in usage {
                        if !v.is_null() {
                            total.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                return Err(AssembleError::Failed {
                    kind: data["error"]["type"]
                        .as_str()
                        .unwrap_or("api_error")
                        .to_string(),
                    message: data["error"]["message"]
                        .as_str()
                        .unwrap_or("the model's backend failed")
                        .to_string(),
                });
            }
            // `ping`, and event types newer than this code.
            _ => {}
        }
        Ok(None)
    }

    /// The whole message, once `message_stop` has come.
    pub fn finish(self) -> Result<Value, AssembleError> {
        let (Some(mut message), true) = (self.message, self.done) else {
            return Err(AssembleError::Unfinished);
        };
        message.insert("content".into(), Value::Array(self.blocks));
        Ok(Value::Object(message))
    }

    /// The event's block index: the next one for a start, an open one otherwise.
    fn index(&self, data: &Value, existing: bool) -> Option<usize> {
        let index = usize::try_from(data["index"].as_u64()?).ok()?;
        let fits = if existing {
            index < self.blocks.len()
        } else {
            index == self.blocks.len()
        };
        fits.then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(events: &[(&str, Value)]) -> (Result<Value, AssembleError>, String) {
        let mut a = Assembler::new();
        let mut shown = String::new();
        for (name, data) in events {
            match a.event(name, data) {
                Ok(Some(t)) => shown.push_str(&t),
                Ok(None) => {}
                Err(e) => return (Err(e), shown),
            }
        }
        (a.finish(), shown)
    }

    #[test]
    fn text_and_a_tool_call_fold_into_the_whole_message() {
        let (message, shown) = fold(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": null, "usage": {"input_tokens": 7, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({})),
            (
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
            ),
            (
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": "look."}}),
            ),
            ("content_block_stop", json!({"index": 0})),
            (
                "content_block_start",
                json!({"index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "files", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"op\": \"li"}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": "st\"}"}}),
            ),
            ("content_block_stop", json!({"index": 1})),
            (
                "message_delta",
                json!({"delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 12}}),
            ),
            ("message_stop", json!({})),
        ]);
        assert_eq!(shown, "Let me look.");
        let message = message.unwrap();
        assert_eq!(
            message["content"][0],
            json!({"type": "text", "text": "Let me look."})
        );
        assert_eq!(message["content"][1]["input"], json!({"op": "list"}));
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(
            message["usage"],
            json!({"input_tokens": 7, "output_tokens": 12})
        );
    }

    #[test]
    fn a_tool_call_without_input_keeps_its_empty_object() {
        let (message, _) = fold(&[
            (
                "message_start",
                json!({"message": {"id": "m", "content": []}}),
            ),
            (
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "x", "input": {}}}),
            ),
            ("content_block_stop", json!({"index": 0})),
            ("message_stop", json!({})),
        ]);
        assert_eq!(message.unwrap()["content"][0]["input"], json!({}));
    }

    #[test]
    fn failures_and_broken_streams_are_errors_not_panics() {
        let start = (
            "message_start",
            json!({"message": {"id": "m", "content": []}}),
        );
        let (r, _) = fold(&[
            start.clone(),
            (
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
        ]);
        assert_eq!(
            r.unwrap_err(),
            AssembleError::Failed {
                kind: "overloaded_error".into(),
                message: "Overloaded".into()
            }
        );
        let (r, _) = fold(std::slice::from_ref(&start));
        assert_eq!(r.unwrap_err(), AssembleError::Unfinished);
        for bad in [
            (
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": "x"}}),
            ),
            (
                "content_block_start",
                json!({"index": 3, "content_block": {"type": "text"}}),
            ),
            ("content_block_start", json!({"index": 0})),
            ("content_block_stop", json!({"index": "0"})),
        ] {
            let (r, _) = fold(&[start.clone(), bad.clone()]);
            assert!(matches!(r, Err(AssembleError::Malformed(_))), "{bad:?}");
        }
        let (r, _) = fold(&[
            start,
            (
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "tool_use", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\": "}}),
            ),
            ("content_block_stop", json!({"index": 0})),
            (
                "message_delta",
                json!({"delta": {"stop_reason": "max_tokens"}}),
            ),
            ("message_stop", json!({})),
        ]);
        // A tool input cut short (max_tokens) is `{}`, as in a whole translated answer.
        assert_eq!(r.unwrap()["content"][0]["input"], json!({}));
        let (r, _) = fold(&[("message_delta", json!({"delta": {}}))]);
        assert!(matches!(r, Err(AssembleError::Malformed(_))));
    }
}
