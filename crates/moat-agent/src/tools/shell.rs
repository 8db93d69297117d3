//! `shell`: a command run by `/bin/sh -c` in the sandbox, in the session's workspace, with
//! MOAT_HOME hidden, under the profile `[sandbox.tools.shell]` names for the sender's
//! trust (`default`: the `process` level, no network).

use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolResult, field};
use crate::trust::ToolClass;

/// The shell tool.
pub struct Shell;

#[async_trait::async_trait]
impl Tool for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn description(&self) -> &'static str {
        "Run a shell command in your workspace folder (sandboxed; no network unless granted). Returns its exit status and output."
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        })
    }

    fn class(&self, _input: &Value) -> ToolClass {
        ToolClass {
            domain: "shell",
            read_only: false,
        }
    }

    async fn run(&self, ctx: &ToolContext, input: &Value) -> ToolResult {
        let command = field(input, "command")?.to_string();
        crate::sandboxing::run_tool(
            ctx,
            self.name(),
            "/bin/sh",
            vec!["-c".into(), command],
            Vec::new(),
        )
        .await
    }
}
