//! `run_code`: a Python, JavaScript (Node.js) or shell program run in the sandbox, its
//! source given on standard input (no file to clean up, no size limit of an argument),
//! under the profile `[sandbox.tools.run_code]` names for the sender's trust.

use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolResult, field};
use crate::trust::ToolClass;

/// The code tool.
pub struct RunCode;

/// The largest program accepted.
const MAX_CODE_BYTES: usize = 256 * 1024;

/// Each language's interpreter, reading the program from standard input.
const LANGUAGES: &[(&str, &str, &[&str])] = &[
    ("python", "python3", &["-"]),
    ("javascript", "node", &["-"]),
    ("sh", "/bin/sh", &["-s"]),
];

#[async_trait::async_trait]
impl Tool for RunCode {
    fn name(&self) -> &'static str {
        "run_code"
    }

    fn description(&self) -> &'static str {
        "Run a program (python, javascript or sh) in your workspace folder (sandboxed; no network unless granted). Returns its exit status and output."
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "language": {"type": "string", "enum": LANGUAGES.iter().map(|l| l.0).collect::<Vec<_>>()},
                "code": {"type": "string"},
            },
            "required": ["language", "code"],
        })
    }

    fn class(&self, _input: &Value) -> ToolClass {
        ToolClass {
            domain: "code",
            read_only: false,
        }
    }

    async fn run(&self, ctx: &ToolContext, input: &Value) -> ToolResult {
        let language = field(input, "language")?;
        let code = field(input, "code")?;
        let Some((_, program, args)) = LANGUAGES.iter().find(|l| l.0 == language) else {
            let known: Vec<&str> = LANGUAGES.iter().map(|l| l.0).collect();
            return Err(format!(
                "there is no language {language:?}; use one of {}",
                known.join(", ")
            ));
        };
        if code.len() > MAX_CODE_BYTES {
            return Err(format!(
                "the program is {} bytes; at most {MAX_CODE_BYTES} are run",
                code.len()
            ));
        }
        crate::sandboxing::run_tool(
            ctx,
            self.name(),
            program,
            args.iter().map(|a| a.to_string()).collect(),
            code.as_bytes().to_vec(),
        )
        .await
    }
}
