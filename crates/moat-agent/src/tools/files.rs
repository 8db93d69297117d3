//! `files`: read, write and list files in the session's workspace, and nowhere else.
//!
//! A path is relative, has no `..`, and no part of it may be a symbolic link (a link made
//! by a shell command could otherwise lead out), so MOAT_HOME and the vault are out of
//! reach by construction rather than by a list of forbidden places.

use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolResult, field};
use crate::trust::ToolClass;

/// The files tool.
pub struct Files;

/// The largest file read or written.
const MAX_BYTES: u64 = 1024 * 1024;

#[async_trait::async_trait]
impl Tool for Files {
    fn name(&self) -> &'static str {
        "files"
    }

    fn description(&self) -> &'static str {
        "Read, write or list files in your workspace folder. Paths are relative to it."
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "op": {"type": "string", "enum": ["read", "write", "list"]},
                "path": {"type": "string", "description": "relative to the workspace; \".\" for its top"},
                "content": {"type": "string", "description": "what to write (op write)"},
            },
            "required": ["op", "path"],
        })
    }

    fn has_read_only_calls(&self) -> bool {
        true
    }

    fn class(&self, input: &Value) -> ToolClass {
        ToolClass {
            domain: "files",
            read_only: input["op"] != "write",
        }
    }

    async fn run(&self, ctx: &ToolContext, input: &Value) -> ToolResult {
        let path = inside(&ctx.workspace, field(input, "path")?)?;
        match field(input, "op")? {
            "read" => {
                // A regular file only (a FIFO made by a command would block), of a bounded size.
                let bytes = moat_core::atomic::read_regular(&path, MAX_BYTES).map_err(|e| {
                    format!("cannot read it (at most {MAX_BYTES} bytes of a regular file): {e}")
                })?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            "write" => {
                let content = field(input, "content")?;
                if content.len() as u64 > MAX_BYTES {
                    return Err(format!("at most {MAX_BYTES} bytes are written"));
                }
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| format!("cannot write it: {e}"))?;
                }
                moat_core::atomic::write_atomic(&path, content.as_bytes())
                    .map_err(|e| format!("cannot write it: {e}"))?;
                Ok(format!("wrote {} bytes", content.len()))
            }
            "list" => {
                let mut names: Vec<String> = std::fs::read_dir(&path)
                    .map_err(|e| format!("cannot list it: {e}"))?
                    .filter_map(Result::ok)
                    .map(|e| {
                        let dir = e.file_type().is_ok_and(|t| t.is_dir());
                        format!(
                            "{}{}",
                            e.file_name().to_string_lossy(),
                            if dir { "/" } else { "" }
                        )
                    })
                    .collect();
                names.sort();
                Ok(names.join("\n"))
            }
            other => Err(format!("op {other:?} is not one of read, write, list")),
        }
    }
}

/// `relative` inside `workspace`, or why not.
pub(crate) fn inside(workspace: &Path, relative: &str) -> Result<PathBuf, String> {
    let rel = Path::new(relative);
    let mut path = workspace.to_path_buf();
    for part in rel.components() {
        match part {
            Component::Normal(name) => {
                path.push(name);
                // Every existing part must be a real folder or file, not a link.
                if let Ok(meta) = std::fs::symlink_metadata(&path)
                    && meta.file_type().is_symlink()
                {
                    return Err(format!(
                        "{relative:?} goes through a symbolic link; links are not followed"
                    ));
                }
            }
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "{relative:?} is outside the workspace; use a relative path without `..`"
                ));
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_inside_the_workspace_and_through_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        assert!(inside(ws, "a/b.txt").is_ok());
        assert!(inside(ws, ".").is_ok());
        for bad in ["/etc/passwd", "../x", "a/../../x"] {
            assert!(inside(ws, bad).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/", ws.join("root")).unwrap();
        assert!(inside(ws, "root/etc/passwd").is_err());
    }
}
