//! Secrets by handle: the model sees `{{secret:NAME}}`, never the value. The handle is
//! replaced by the value only in the input of a tool the secret is allowed for, at the
//! moment the tool runs; the value is masked back to its handle in every output before
//! the model, the transcript, a log line or the audit log sees it.

use std::collections::BTreeMap;

use moat_core::secret::SecretString;
use serde_json::Value;

/// The secrets the model may use, by name.
#[derive(Default)]
pub struct Handles {
    secrets: BTreeMap<String, (SecretString, Vec<String>)>,
}

/// The handle the model writes for the secret `name`.
pub fn handle(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

impl Handles {
    /// No secrets.
    pub fn new() -> Handles {
        Handles::default()
    }

    /// Lets the model use `value` as `{{secret:NAME}}` in the input of `tools`.
    pub fn insert(&mut self, name: &str, value: SecretString, tools: Vec<String>) {
        self.secrets.insert(name.to_string(), (value, tools));
    }

    /// What the model is told about them (names and tools, never values).
    pub fn describe(&self) -> Option<String> {
        if self.secrets.is_empty() {
            return None;
        }
        let lines: Vec<String> = self
            .secrets
            .iter()
            .map(|(name, (_, tools))| format!("- {} (tools: {})", handle(name), tools.join(", ")))
            .collect();
        Some(format!(
            "You may use these secrets by writing their handle in a tool's input; the tool receives the value, you never see it:\n{}",
            lines.join("\n")
        ))
    }

    /// `input` with each handle replaced by its value, for `tool`. A handle of a secret
    /// not allowed for `tool`, or of no secret, is refused (naming the handle).
    pub fn substitute(&self, tool: &str, input: &Value) -> Result<Value, String> {
        match input {
            Value::String(s) => self.substitute_text(tool, s).map(Value::String),
            Value::Array(items) => items
                .iter()
                .map(|v| self.substitute(tool, v))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.substitute(tool, v)?)))
                .collect::<Result<_, String>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    fn substitute_text(&self, tool: &str, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{secret:") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "{{secret:".len()..];
            let Some(end) = after.find("}}") else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let name = &after[..end];
            match self.secrets.get(name) {
                Some((value, tools)) if tools.iter().any(|t| t == tool) => {
                    out.push_str(value.expose())
                }
                Some(_) => {
                    return Err(format!(
                        "the secret {} may not be used with the tool {tool}",
                        handle(name)
                    ));
                }
                None => return Err(format!("there is no secret {}", handle(name))),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `text` with every secret value put back as its handle.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, (value, _)) in &self.secrets {
            if !value.expose().is_empty() && out.contains(value.expose()) {
                out = out.replace(value.expose(), &handle(name));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn handles_become_values_only_for_allowed_tools_and_go_back_in_outputs() {
        let mut h = Handles::new();
        h.insert(
            "gh",
            SecretString::new("canary-gh-0123456789".into()),
            vec!["shell".into()],
        );
        let input = json!({"command": "curl -H 'token {{secret:gh}}' x", "n": 3});
        let out = h.substitute("shell", &input).unwrap();
        assert_eq!(out["command"], "curl -H 'token canary-gh-0123456789' x");
        let refused = h.substitute("files", &input).unwrap_err();
        assert!(refused.contains("{{secret:gh}}") && !refused.contains("canary"));
        assert!(h.substitute("shell", &json!("{{secret:nope}}")).is_err());
        assert_eq!(h.mask("got canary-gh-0123456789!"), "got {{secret:gh}}!");
    }
}
