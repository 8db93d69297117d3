//! `shell`: a command run by `/bin/sh -c` in the sandbox (the `process` level), in the
//! session's workspace, with MOAT_HOME hidden and no network.

use std::time::Duration;

use moat_sandbox::{Limits, Spec};
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolResult, field};
use crate::trust::ToolClass;

/// The shell tool.
pub struct Shell;

/// The longest one command may run, whatever the turn has left.
const MAX_WALL: Duration = Duration::from_secs(60);

#[async_trait::async_trait]
impl Tool for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn description(&self) -> &'static str {
        "Run a shell command in your workspace folder (sandboxed, no network). Returns its exit status and output."
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
        let mut spec = Spec::new("/bin/sh", ["-c".to_string(), command], &ctx.workspace);
        spec.hidden.clone_from(&ctx.hidden);
        spec.limits = Limits {
            wall_time: ctx.time_left.min(MAX_WALL),
            output_bytes: 64 * 1024,
            ..Limits::default()
        };
        let report = tokio::task::spawn_blocking(move || moat_sandbox::run(&spec))
            .await
            .map_err(|_| "the sandbox stopped unexpectedly".to_string())?
            .map_err(|e| format!("the sandbox refused to run it: {e}"))?;
        let mut out = format!("{}\n", report.outcome.describe());
        out.push_str(&String::from_utf8_lossy(&report.stdout));
        if !report.stderr.is_empty() {
            out.push_str("\n[stderr]\n");
            out.push_str(&String::from_utf8_lossy(&report.stderr));
        }
        if report.outcome.success() {
            Ok(out)
        } else {
            Err(out)
        }
    }
}
