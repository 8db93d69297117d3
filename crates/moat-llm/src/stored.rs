//! Responses kept for the OpenAI Responses API (`store`): the conversation so far (input
//! items) and the response object, in the `responses` table of `state.db`, for
//! `previous_response_id` and `GET`/`DELETE /v1/responses/{id}`. Kept for
//! `llm.responses_retention`; older ones are deleted as new ones arrive.

use std::sync::Mutex;
use std::time::Duration;

use moat_core::state::StateStore;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

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

/// The responses table (its own connection to `state.db`).
#[derive(Debug)]
pub struct ResponseStore {
    db: Mutex<StateStore>,
    retention: Duration,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl ResponseStore {
    /// Responses in `db`, kept for `retention`.
    pub fn new(db: StateStore, retention: Duration) -> Self {
        Self {
            db: Mutex::new(db),
            retention,
        }
    }

    /// Keeps `response` (its `id` is the key) after `input`, made by moat or `held_by` a
    /// native-Responses backend; drops expired ones.
    pub fn put(
        &self,
        input: &[Value],
        response: &Value,
        held_by: Option<&Holder>,
    ) -> Result<(), rusqlite::Error> {
        let id = response["id"].as_str().unwrap_or_default();
        // Serialized before the lock: every other request that stores or reads waits on it.
        let (input, response) = (
            Value::Array(input.to_vec()).to_string(),
            response.to_string(),
        );
        let db = self.db.lock().expect("not poisoned");
        let conn = db.connection();
        let cutoff =
            now().saturating_sub(i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX));
        conn.execute(
            "DELETE FROM responses WHERE created_at < ?1",
            params![cutoff],
        )?;
        conn.execute(
            "INSERT OR REPLACE INTO responses (id, created_at, input, response, backend, account) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                now(),
                input,
                response,
                held_by.map(|h| &h.backend),
                held_by.map(|h| &h.account)
            ],
        )?;
        Ok(())
    }

    /// The response `id`, unless it is unknown or expired.
    pub fn get(&self, id: &str) -> Result<Option<Stored>, rusqlite::Error> {
        let db = self.db.lock().expect("not poisoned");
        let cutoff =
            now().saturating_sub(i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX));
        type Row = (String, String, Option<String>, Option<String>);
        let row: Option<Row> = db
            .connection()
            .query_row(
                "SELECT input, response, backend, account FROM responses WHERE id = ?1 AND created_at >= ?2",
                params![id, cutoff],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        // Parsed after the lock is released.
        drop(db);
        Ok(row.map(|(input, response, backend, account)| Stored {
            input: serde_json::from_str::<Vec<Value>>(&input).unwrap_or_default(),
            response: serde_json::from_str(&response).unwrap_or(Value::Null),
            held_by: backend
                .zip(account)
                .map(|(backend, account)| Holder { backend, account }),
        }))
    }

    /// Forgets the response `id`; whether it was there.
    pub fn delete(&self, id: &str) -> Result<bool, rusqlite::Error> {
        let db = self.db.lock().expect("not poisoned");
        let n = db
            .connection()
            .execute("DELETE FROM responses WHERE id = ?1", params![id])?;
        Ok(n > 0)
    }
}

/// The input items of a stored response as `GET /v1/responses/{id}/input_items` lists
/// them: each a typed item with an id (stable for the response, so `after` pages work),
/// message text as `input_text` parts (`output_text` for the assistant's).
pub fn input_items(response_id: &str, input: &[Value]) -> Vec<Value> {
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
pub fn page(items: Vec<Value>, order_desc: bool, after: Option<&str>, limit: usize) -> Value {
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

    #[test]
    fn put_get_delete_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateStore::open(&dir.path().join("state.db")).unwrap();
        let store = ResponseStore::new(db, Duration::from_secs(3600));
        let input = vec![json!({"role": "user", "content": "hi"})];
        store
            .put(&input, &json!({"id": "resp_1", "output": []}), None)
            .unwrap();
        let got = store.get("resp_1").unwrap().unwrap();
        assert_eq!(got.input, input);
        assert_eq!(got.response["id"], "resp_1");
        assert_eq!(got.held_by, None);
        let holder = Holder {
            backend: "openai".into(),
            account: "default".into(),
        };
        store
            .put(&input, &json!({"id": "resp_n"}), Some(&holder))
            .unwrap();
        let got = store.get("resp_n").unwrap().unwrap();
        assert_eq!(got.held_by, Some(holder));
        assert!(store.delete("resp_1").unwrap());
        assert!(!store.delete("resp_1").unwrap());
        assert_eq!(store.get("resp_1").unwrap(), None);

        let db = StateStore::open(&dir.path().join("state.db")).unwrap();
        let gone = ResponseStore::new(db, Duration::ZERO);
        gone.put(&input, &json!({"id": "resp_2"}), None).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(gone.get("resp_2").unwrap(), None);
    }
}
