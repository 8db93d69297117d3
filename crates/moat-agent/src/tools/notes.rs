//! `notes`: a small memory the owner can list and delete (`moat notes`).

use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolResult, field};
use crate::store::AgentStore;
use crate::trust::ToolClass;

/// The notes tool.
pub struct Notes;

#[async_trait::async_trait]
impl Tool for Notes {
    fn name(&self) -> &'static str {
        "notes"
    }

    fn description(&self) -> &'static str {
        "Remember something for later (op add, with text), or recall what you noted (op list)."
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "op": {"type": "string", "enum": ["add", "list"]},
                "text": {"type": "string"},
            },
            "required": ["op"],
        })
    }

    fn has_read_only_calls(&self) -> bool {
        true
    }

    fn class(&self, input: &Value) -> ToolClass {
        ToolClass {
            domain: "system",
            read_only: input["op"] != "add",
        }
    }

    async fn run(&self, ctx: &ToolContext, input: &Value) -> ToolResult {
        let op = field(input, "op")?;
        // SQLite blocks: the worker tells the runtime so.
        tokio::task::block_in_place(|| {
            let store = ctx
                .store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            run_op(&store, &ctx.owner, op, input)
        })
    }
}

fn run_op(store: &AgentStore, owner: &str, op: &str, input: &Value) -> ToolResult {
    match op {
        "add" => {
            let text = field(input, "text")?;
            if text.len() > 4096 {
                return Err("a note holds at most 4096 bytes".into());
            }
            let id = store.add_note(owner, text).map_err(|e| e.to_string())?;
            Ok(format!("noted (#{id})"))
        }
        "list" => {
            let notes = store.notes(owner).map_err(|e| e.to_string())?;
            if notes.is_empty() {
                return Ok("no notes".into());
            }
            Ok(notes
                .iter()
                .map(|(id, t)| format!("#{id}: {t}"))
                .collect::<Vec<_>>()
                .join("\n"))
        }
        other => Err(format!("op {other:?} is not one of add, list")),
    }
}
