//! The tools the assistant may call, and what each is for the gate (its domain, whether
//! it only reads).

mod files;
mod http_request;
mod notes;
mod run_code;
mod shell;
mod web_fetch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

pub use files::Files;
pub use http_request::HttpRequest;
pub use notes::Notes;
pub use run_code::RunCode;
pub use shell::Shell;
pub use web_fetch::{MAX_PAGES_PER_SESSION, WebFetch};

use crate::store::AgentStore;
use crate::trust::ToolClass;

/// What a tool call runs with.
pub struct ToolContext {
    /// The session's own folder: the only files the tools reach.
    pub workspace: PathBuf,
    /// Folders no tool may reach (MOAT_HOME, where the vault is).
    pub hidden: Vec<PathBuf>,
    /// The session's id.
    pub session: String,
    /// The owner the session acts for (notes are theirs).
    pub owner: String,
    /// The assistant's tables.
    pub store: Arc<Mutex<AgentStore>>,
    /// The most this call may run.
    pub time_left: Duration,
    /// The profiles sandboxed tools run under.
    pub sandbox: Arc<crate::sandboxing::ToolSandbox>,
    /// The sender's trust, as `[sandbox.tools.TOOL] trust` names it (`owner`).
    pub trust: String,
    /// Who the audit log names for the call.
    pub actor: String,
    /// Where sandboxed runs are recorded.
    pub audit: Option<moat_audit::AuditLog>,
}

/// A tool's outcome for the model: its text output, or why it failed.
pub type ToolResult = Result<String, String>;

/// One tool.
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    /// Its name, as the model calls it.
    fn name(&self) -> &str;
    /// What it does, for the model.
    fn description(&self) -> &str;
    /// The JSON schema of its input.
    fn schema(&self) -> Value;
    /// Its domain and whether it only reads, for the gate. `input` lets one tool
    /// (`files`) read in one call and write in another.
    fn class(&self, input: &Value) -> ToolClass;
    /// Whether some of its calls only read: a level-1 (inform) domain offers it then, and
    /// the gate refuses its other calls.
    fn has_read_only_calls(&self) -> bool {
        false
    }
    /// The host a call sends its input to, if it sends it anywhere: secret handles in
    /// it must be allowed that host.
    fn destination(&self, _input: &Value) -> Option<String> {
        None
    }
    /// Runs one call.
    async fn run(&self, ctx: &ToolContext, input: &Value) -> ToolResult;
}

/// The built-in tools: pages are fetched through `pages`; API requests go through
/// `requests`, which must follow no redirect (a credential would follow it).
pub fn builtin(
    pages: Arc<moat_net::egress::Fetcher>,
    requests: Arc<moat_net::egress::Fetcher>,
) -> Vec<Arc<dyn Tool>> {
    vec![
        Arc::new(Files),
        Arc::new(Notes),
        Arc::new(Shell),
        Arc::new(RunCode),
        Arc::new(WebFetch::new(pages)),
        Arc::new(HttpRequest::new(requests)),
    ]
}

/// A tool as the Messages API offers it.
pub fn definition(tool: &dyn Tool) -> Value {
    json!({
        "name": tool.name(),
        "description": tool.description(),
        "input_schema": tool.schema(),
    })
}

/// The string field `name` of a call's input, or an error the model can act on.
fn field<'a>(input: &'a Value, name: &str) -> Result<&'a str, String> {
    input[name]
        .as_str()
        .ok_or_else(|| format!("the input needs a string `{name}`"))
}
