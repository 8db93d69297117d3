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

    /// Keeps `response` (its `id` is the key) after `input`; drops expired ones.
    pub fn put(&self, input: &[Value], response: &Value) -> Result<(), rusqlite::Error> {
        let id = response["id"].as_str().unwrap_or_default();
        let db = self.db.lock().expect("not poisoned");
        let conn = db.connection();
        let cutoff = now() - self.retention.as_secs() as i64;
        conn.execute(
            "DELETE FROM responses WHERE created_at < ?1",
            params![cutoff],
        )?;
        conn.execute(
            "INSERT OR REPLACE INTO responses (id, created_at, input, response) VALUES (?1, ?2, ?3, ?4)",
            params![id, now(), Value::Array(input.to_vec()).to_string(), response.to_string()],
        )?;
        Ok(())
    }

    /// The response `id`, unless it is unknown or expired.
    pub fn get(&self, id: &str) -> Result<Option<Stored>, rusqlite::Error> {
        let db = self.db.lock().expect("not poisoned");
        let cutoff = now() - self.retention.as_secs() as i64;
        let row: Option<(String, String)> = db
            .connection()
            .query_row(
                "SELECT input, response FROM responses WHERE id = ?1 AND created_at >= ?2",
                params![id, cutoff],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(input, response)| Stored {
            input: serde_json::from_str::<Vec<Value>>(&input).unwrap_or_default(),
            response: serde_json::from_str(&response).unwrap_or(Value::Null),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn put_get_delete_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateStore::open(&dir.path().join("state.db")).unwrap();
        let store = ResponseStore::new(db, Duration::from_secs(3600));
        let input = vec![json!({"role": "user", "content": "hi"})];
        store
            .put(&input, &json!({"id": "resp_1", "output": []}))
            .unwrap();
        let got = store.get("resp_1").unwrap().unwrap();
        assert_eq!(got.input, input);
        assert_eq!(got.response["id"], "resp_1");
        assert!(store.delete("resp_1").unwrap());
        assert!(!store.delete("resp_1").unwrap());
        assert_eq!(store.get("resp_1").unwrap(), None);

        let db = StateStore::open(&dir.path().join("state.db")).unwrap();
        let gone = ResponseStore::new(db, Duration::ZERO);
        gone.put(&input, &json!({"id": "resp_2"})).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(gone.get("resp_2").unwrap(), None);
    }
}
