//! Secrets by handle: the model sees `{{secret:NAME}}`, never the value. The handle is
//! replaced by the value only in the input of a tool the secret is allowed for (and, for
//! a tool that sends it somewhere, only towards the hosts it is allowed to reach), at the
//! moment the tool runs; the value is masked back to its handle in every output before
//! the model, the transcript, a log line or the audit log sees it.

use std::collections::BTreeMap;

use moat_core::secret::SecretString;
use serde_json::Value;

/// The secrets the model may use, by name.
#[derive(Default)]
pub struct Handles {
    secrets: BTreeMap<String, Allowed>,
    /// Secrets only MCP servers get (`env_secrets`, `bearer_secret`): never offered to the
    /// model, masked in every output like the others.
    servers: BTreeMap<String, SecretString>,
}

/// One secret and where it may go.
struct Allowed {
    value: SecretString,
    tools: Vec<String>,
    hosts: Vec<String>,
}

/// The handle the model writes for the secret `name`.
pub fn handle(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

/// Whether `host` matches `pattern` (`name` or `*.name`, any case).
fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => pattern == host,
    }
}

impl Handles {
    /// No secrets.
    pub fn new() -> Handles {
        Handles::default()
    }

    /// Lets the model use `value` as `{{secret:NAME}}` in the input of `tools`; a tool
    /// that sends it somewhere may send it only to `hosts`.
    pub fn insert(
        &mut self,
        name: &str,
        value: SecretString,
        tools: Vec<String>,
        hosts: Vec<String>,
    ) {
        self.secrets.insert(
            name.to_string(),
            Allowed {
                value,
                tools,
                hosts,
            },
        );
    }

    /// Keeps `value` for the MCP servers that name the secret `name`; the model is not
    /// told of it, and it is masked in outputs.
    pub fn insert_for_servers(&mut self, name: &str, value: SecretString) {
        self.servers.insert(name.to_string(), value);
    }

    /// A secret kept for the MCP servers.
    pub fn for_servers(&self, name: &str) -> Option<&SecretString> {
        self.servers.get(name)
    }

    /// What the model is told about them (names, tools and hosts, never values).
    pub fn describe(&self) -> Option<String> {
        if self.secrets.is_empty() {
            return None;
        }
        let lines: Vec<String> = self
            .secrets
            .iter()
            .map(|(name, a)| {
                let hosts = if a.hosts.is_empty() {
                    String::new()
                } else {
                    format!("; hosts: {}", a.hosts.join(", "))
                };
                format!("- {} (tools: {}{hosts})", handle(name), a.tools.join(", "))
            })
            .collect();
        Some(format!(
            "You may use these secrets by writing their handle in a tool's input; the tool receives the value, you never see it:\n{}",
            lines.join("\n")
        ))
    }

    /// `input` with each handle replaced by its value, for `tool`, which sends it to
    /// `host` when it sends it anywhere. A handle of a secret not allowed for `tool` or
    /// `host`, or of no secret, is refused (naming the handle, never the value).
    pub fn substitute(
        &self,
        tool: &str,
        host: Option<&str>,
        input: &Value,
    ) -> Result<Value, String> {
        match input {
            Value::String(s) => self.substitute_text(tool, host, s).map(Value::String),
            Value::Array(items) => items
                .iter()
                .map(|v| self.substitute(tool, host, v))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.substitute(tool, host, v)?)))
                .collect::<Result<_, String>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    fn substitute_text(
        &self,
        tool: &str,
        host: Option<&str>,
        text: &str,
    ) -> Result<String, String> {
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
            let Some(a) = self.secrets.get(name) else {
                return Err(format!("there is no secret {}", handle(name)));
            };
            if !a.tools.iter().any(|t| t == tool) {
                return Err(format!(
                    "the secret {} may not be used with the tool {tool}",
                    handle(name)
                ));
            }
            if let Some(h) = host
                && !a.hosts.iter().any(|p| host_matches(p, h))
            {
                return Err(format!(
                    "the secret {} may not be sent to {h} (agent.secrets.{name}.hosts)",
                    handle(name)
                ));
            }
            out.push_str(a.value.expose());
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `text` with every secret value put back as its handle.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        let values = self
            .secrets
            .iter()
            .map(|(name, a)| (name, &a.value))
            .chain(&self.servers);
        for (name, value) in values {
            let value = value.expose();
            if !value.is_empty() && out.contains(value) {
                out = out.replace(value, &handle(name));
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
    fn handles_become_values_only_for_allowed_tools_and_hosts_and_go_back_in_outputs() {
        let mut h = Handles::new();
        h.insert(
            "gh",
            SecretString::new("canary-gh-0123456789".into()),
            vec!["shell".into(), "http_request".into()],
            vec!["api.github.com".into(), "*.example.com".into()],
        );
        let input = json!({"command": "curl -H 'token {{secret:gh}}' x", "n": 3});
        let out = h.substitute("shell", None, &input).unwrap();
        assert_eq!(out["command"], "curl -H 'token canary-gh-0123456789' x");
        let refused = h.substitute("files", None, &input).unwrap_err();
        assert!(refused.contains("{{secret:gh}}") && !refused.contains("canary"));
        assert!(
            h.substitute("shell", None, &json!("{{secret:nope}}"))
                .is_err()
        );
        for (host, ok) in [
            ("api.github.com", true),
            ("API.GitHub.com", true),
            ("a.example.com", true),
            ("example.com", false),
            ("evil.test", false),
            ("api.github.com.evil.test", false),
        ] {
            assert_eq!(
                h.substitute("http_request", Some(host), &input).is_ok(),
                ok,
                "{host}"
            );
        }
        assert_eq!(h.mask("got canary-gh-0123456789!"), "got {{secret:gh}}!");
    }
}
