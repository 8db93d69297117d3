//! Responses kept for the OpenAI Responses API (`store`): the conversation so far (input
//! items) and the response object, in the `responses` table of `state.db`, for
//! `previous_response_id` and `GET`/`DELETE /v1/responses/{id}`. Kept for
//! `llm.responses_retention`; older ones are deleted as new ones arrive.

use std::sync::{Mutex, mpsc};
use std::time::Duration;

use moat_state::StateStore;
use moat_state::rusqlite;
use moat_state::rusqlite::{OptionalExtension, params};
use serde_json::Value;
use tokio::sync::oneshot;

/// A stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The input items of the whole conversation up to this response.
    pub input: Vec<Value>,
    /// The response object.
    pub response: Value,
    /// The native-Responses backend account that made the response and holds it too;
    /// none when moat made it.
    pub held_by: Option<Holder>,
}

/// A backend account that holds a response itself (native Responses, `store: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The backend's name.
    pub backend: String,
    /// The account's name in the backend's pool (responses belong to the account).
    pub account: String,
}

/// The responses table, kept by a thread of its own with its own connection to
/// `state.db`: SQLite never blocks an async worker, and since the thread takes requests
/// in order, a response kept before a chained request arrives is found by it.
#[derive(Debug)]
pub struct ResponseStore {
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("the response store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store's thread is gone (it panicked, or the server is stopping).
    #[error("the response store is not running")]
    Stopped,
}

type Row = (String, String, Option<String>, Option<String>);

enum Job {
    Put {
        id: String,
        input: String,
        response: String,
        held_by: Option<Holder>,
    },
    Get {
        id: String,
        reply: oneshot::Sender<rusqlite::Result<Option<Row>>>,
    },
    Delete {
        id: String,
        reply: oneshot::Sender<rusqlite::Result<bool>>,
    },
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl ResponseStore {
    /// Responses in `db`, kept for `retention`; starts the store's thread.
    pub fn new(db: StateStore, retention: Duration) -> Self {
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("moat-responses".into())
            .spawn(move || keeper(&db, retention, &rx));
        if let Err(e) = spawned {
            // Every call then answers `Stopped`: the gateway goes on without storing.
            tracing::error!(error = %e, "cannot start the response store's thread");
        }
        Self {
            jobs: Mutex::new(tx),
        }
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(job)
            .map_err(|_| StoreError::Stopped)
    }

    /// Keeps `response` (its `id` is the key) after `input`, made by moat or `held_by` a
    /// native-Responses backend; drops expired ones. Returns at once: the write is queued
    /// ahead of every later read, and a failure is logged.
    pub fn put(&self, input: &[Value], response: &Value, held_by: Option<&Holder>) {
        let job = Job::Put {
            id: response["id"].as_str().unwrap_or_default().to_string(),
            input: Value::Array(input.to_vec()).to_string(),
            response: response.to_string(),
            held_by: held_by.cloned(),
        };
        if let Err(e) = self.send(job) {
            tracing::error!(error = %e, "storing a response");
        }
    }

    /// The response `id`, unless it is unknown or expired.
    pub async fn get(&self, id: &str) -> Result<Option<Stored>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Get {
            id: id.to_string(),
            reply,
        })?;
        let row = answer.await.map_err(|_| StoreError::Stopped)??;
        Ok(row.map(|(input, response, backend, account)| Stored {
            input: serde_json::from_str::<Vec<Value>>(&input).unwrap_or_default(),
            response: serde_json::from_str(&response).unwrap_or(Value::Null),
            held_by: backend
                .zip(account)
                .map(|(backend, account)| Holder { backend, account }),
        }))
    }

    /// Forgets the response `id`; whether it was there.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Delete {
            id: id.to_string(),
            reply,
        })?;
        Ok(answer.await.map_err(|_| StoreError::Stopped)??)
    }
}

/// The store's thread: one job at a time, in the order they were queued, until every
/// handle is gone.
fn keeper(db: &StateStore, retention: Duration, jobs: &mpsc::Receiver<Job>) {
    let conn = db.connection();
    let cutoff = || now().saturating_sub(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX));
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Put {
                id,
                input,
                response,
                held_by,
            } => {
                let put = conn
                    .execute(
                        "DELETE FROM responses WHERE created_at < ?1",
                        params![cutoff()],
                    )
                    .and_then(|_| {
                        conn.execute(
                            "INSERT OR REPLACE INTO responses (id, created_at, input, response, backend, account) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![
                                id,
                                now(),
                                input,
                                response,
                                held_by.as_ref().map(|h| &h.backend),
                                held_by.as_ref().map(|h| &h.account)
                            ],
                        )
                    });
                if let Err(e) = put {
                    tracing::error!(error = %e, "storing a response");
                }
            }
            Job::Get { id, reply } => {
                let row = conn
                    .query_row(
                        "SELECT input, response, backend, account FROM responses WHERE id = ?1 AND created_at >= ?2",
                        params![id, cutoff()],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional();
                let _ = reply.send(row);
            }
            Job::Delete { id, reply } => {
                let n = conn.execute("DELETE FROM responses WHERE id = ?1", params![id]);
                let _ = reply.send(n.map(|n| n > 0));
            }
        }
    }
}

/// A stored response replayed as the stream that would have made it
/// (`GET /v1/responses/{id}?stream=true`): created, each item added, its content, done,
/// and the response's ending; events numbered from 0, those up to `starting_after` left
/// out (a client resuming a stream).
pub(crate) fn replay(response: &Value, starting_after: Option<u64>) -> Vec<bytes::Bytes> {
    let mut events: Vec<Value> = Vec::new();
    let mut opening = response.clone();
    opening["status"] = Value::from("in_progress");
    opening["output"] = Value::Array(Vec::new());
    events.push(serde_json::json!({"type": "response.created", "response": opening.clone()}));
    events.push(serde_json::json!({"type": "response.in_progress", "response": opening}));
    let output = response["output"].as_array().cloned().unwrap_or_default();
    for (i, item) in output.iter().enumerate() {
        let id = item["id"].clone();
        let mut added = item.clone();
        added["status"] = Value::from("in_progress");
        match item["type"].as_str() {
            Some("message") => added["content"] = Value::Array(Vec::new()),
            Some("function_call") => added["arguments"] = Value::from(""),
            Some("custom_tool_call") => added["input"] = Value::from(""),
            _ => {}
        }
        events.push(serde_json::json!({"type": "response.output_item.added", "output_index": i, "item": added}));
        match item["type"].as_str() {
            Some("message") => {
                for (c, part) in item["content"].as_array().into_iter().flatten().enumerate() {
                    let text = part["text"].clone();
                    let mut empty = part.clone();
                    empty["text"] = Value::from("");
                    events.push(serde_json::json!({"type": "response.content_part.added", "item_id": id, "output_index": i, "content_index": c, "part": empty}));
                    events.push(serde_json::json!({"type": "response.output_text.delta", "item_id": id, "output_index": i, "content_index": c, "delta": text, "logprobs": []}));
                    events.push(serde_json::json!({"type": "response.output_text.done", "item_id": id, "output_index": i, "content_index": c, "text": text, "logprobs": []}));
                    events.push(serde_json::json!({"type": "response.content_part.done", "item_id": id, "output_index": i, "content_index": c, "part": part}));
                }
            }
            Some("function_call") => {
                let arguments = item["arguments"].clone();
                events.push(serde_json::json!({"type": "response.function_call_arguments.delta", "item_id": id, "output_index": i, "delta": arguments}));
                events.push(serde_json::json!({"type": "response.function_call_arguments.done", "item_id": id, "output_index": i, "arguments": arguments}));
            }
            Some("custom_tool_call") => {
                let input = item["input"].clone();
                events.push(serde_json::json!({"type": "response.custom_tool_call_input.delta", "item_id": id, "output_index": i, "delta": input}));
                events.push(serde_json::json!({"type": "response.custom_tool_call_input.done", "item_id": id, "output_index": i, "input": input}));
            }
            _ => {}
        }
        events.push(serde_json::json!({"type": "response.output_item.done", "output_index": i, "item": item}));
    }
    let ending = match response["status"].as_str() {
        Some("incomplete") => "response.incomplete",
        Some("failed") => "response.failed",
        _ => "response.completed",
    };
    events.push(serde_json::json!({"type": ending, "response": response}));
    events
        .into_iter()
        .enumerate()
        .filter(|(seq, _)| starting_after.is_none_or(|after| *seq as u64 > after))
        .map(|(seq, mut event)| {
            event["sequence_number"] = Value::from(seq as u64);
            let name = event["type"].as_str().unwrap_or_default().to_string();
            crate::sse::encode(Some(&name), &event.to_string())
        })
        .collect()
}

/// The input items of a stored response as `GET /v1/responses/{id}/input_items` lists
/// them: each a typed item with an id (stable for the response, so `after` pages work),
/// message text as `input_text` parts (`output_text` for the assistant's).
pub(crate) fn input_items(response_id: &str, input: &[Value]) -> Vec<Value> {
    let stem = response_id.strip_prefix("resp_").unwrap_or(response_id);
    input
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let mut item = item.clone();
            let Some(obj) = item.as_object_mut() else {
                return item;
            };
            let kind = obj
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("message")
                .to_string();
            if kind == "message" {
                obj.insert("type".into(), "message".into());
                let part = if obj.get("role").and_then(Value::as_str) == Some("assistant") {
                    "output_text"
                } else {
                    "input_text"
                };
                if let Some(Value::String(text)) = obj.get("content") {
                    let text = text.clone();
                    obj.insert(
                        "content".into(),
                        serde_json::json!([{"type": part, "text": text}]),
                    );
                }
                obj.entry("status").or_insert("completed".into());
            }
            if !obj.contains_key("id") {
                let prefix = match kind.as_str() {
                    "message" => "msg",
                    "function_call" => "fc",
                    "function_call_output" => "fco",
                    _ => "item",
                };
                obj.insert("id".into(), format!("{prefix}_{stem}_{i:04}").into());
            }
            item
        })
        .collect()
}

/// One page of items: `order` `asc` or `desc`, after the item `after`, at most `limit`.
pub(crate) fn page(
    items: Vec<Value>,
    order_desc: bool,
    after: Option<&str>,
    limit: usize,
) -> Value {
    let mut items = items;
    if order_desc {
        items.reverse();
    }
    let start = after
        .and_then(|a| items.iter().position(|i| i["id"].as_str() == Some(a)))
        .map_or(0, |p| p + 1);
    let rest = &items[start.min(items.len())..];
    let data: Vec<Value> = rest.iter().take(limit).cloned().collect();
    serde_json::json!({
        "object": "list",
        "first_id": data.first().map(|i| i["id"].clone()),
        "last_id": data.last().map(|i| i["id"].clone()),
        "has_more": rest.len() > limit,
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_items_get_types_ids_and_pages() {
        let input = vec![
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "hello"}),
            json!({"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}),
            json!({"type": "function_call_output", "call_id": "c1", "output": "ok"}),
        ];
        let items = input_items("resp_abc", &input);
        assert_eq!(items[0]["type"], "message");
        assert_eq!(items[0]["id"], "msg_abc_0000");
        assert_eq!(
            items[0]["content"][0],
            json!({"type": "input_text", "text": "hi"})
        );
        assert_eq!(items[1]["content"][0]["type"], "output_text");
        assert_eq!(items[2]["id"], "fc_abc_0002");
        assert_eq!(items[3]["id"], "fco_abc_0003");
        let first = page(items.clone(), true, None, 3);
        assert_eq!(first["data"][0]["id"], "fco_abc_0003");
        assert_eq!(first["has_more"], true);
        let next = page(items.clone(), true, first["last_id"].as_str(), 3);
        assert_eq!(next["data"].as_array().unwrap().len(), 1);
        assert_eq!(next["has_more"], false);
        let asc = page(items, false, None, 20);
        assert_eq!(asc["first_id"], "msg_abc_0000");
    }

    #[tokio::test]
    async fn put_get_delete_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateStore::open(&dir.path().join("state.db")).unwrap();
        let store = ResponseStore::new(db, Duration::from_secs(3600));
        let input = vec![json!({"role": "user", "content": "hi"})];
        store.put(&input, &json!({"id": "resp_1", "output": []}), None);
        // Queued in order: a read right after a write finds it.
        let got = store.get("resp_1").await.unwrap().unwrap();
        assert_eq!(got.input, input);
        assert_eq!(got.response["id"], "resp_1");
        assert_eq!(got.held_by, None);
        let holder = Holder {
            backend: "openai".into(),
            account: "default".into(),
        };
        store.put(&input, &json!({"id": "resp_n"}), Some(&holder));
        let got = store.get("resp_n").await.unwrap().unwrap();
        assert_eq!(got.held_by, Some(holder));
        assert!(store.delete("resp_1").await.unwrap());
        assert!(!store.delete("resp_1").await.unwrap());
        assert_eq!(store.get("resp_1").await.unwrap(), None);

        let db = StateStore::open(&dir.path().join("state.db")).unwrap();
        let gone = ResponseStore::new(db, Duration::ZERO);
        gone.put(&input, &json!({"id": "resp_2"}), None);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(gone.get("resp_2").await.unwrap(), None);
    }
}
