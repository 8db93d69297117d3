//! The route table: which backends (and upstream model names) serve a model name.
//!
//! A requested name is resolved in this order, first match wins:
//!
//! 1. an alias (`[llm.aliases]`) replaces the name (one level), then
//! 2. a route whose `model` is exactly the name,
//! 3. `BACKEND:MODEL`, when BACKEND is a configured backend,
//! 4. routes whose `model` is a glob, in config order,
//! 5. backends whose `models` globs match, by backend name.
//!
//! Each match gives an ordered list of targets; the proxy fails over along it.

use std::collections::BTreeMap;

use glob::Pattern;
use moat_core::config::llm::{LlmConfig, valid_model_name};

/// Where one attempt goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The backend's name.
    pub backend: String,
    /// The model name sent upstream.
    pub model: String,
}

/// A resolved model name: the targets, and the rule that chose them (for `moat route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Targets in failover order.
    pub targets: Vec<Target>,
    /// Which rule matched, in words.
    pub rule: String,
}

/// Why a model name has no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not a model name at all.
    #[error(
        "model name {0:?} is not valid: use letters, digits and . - _ : / @, at most 256 characters"
    )]
    Invalid(String),
    /// No rule matches.
    #[error(
        "model {0:?} is not served by this gateway: add a route under [[llm.routes]], list it in a backend's `models`, or ask for BACKEND:MODEL"
    )]
    NoRoute(String),
}

#[derive(Debug, Clone)]
struct Spec {
    backend: String,
    /// `None`: keep the requested name.
    model: Option<String>,
}

impl Spec {
    fn parse(target: &str) -> Self {
        match target.split_once(':') {
            Some((b, m)) if !m.is_empty() => Self {
                backend: b.to_string(),
                model: Some(m.to_string()),
            },
            Some((b, _)) => Self {
                backend: b.to_string(),
                model: None,
            },
            None => Self {
                backend: target.to_string(),
                model: None,
            },
        }
    }

    fn target(&self, requested: &str) -> Target {
        Target {
            backend: self.backend.clone(),
            model: self.model.clone().unwrap_or_else(|| requested.to_string()),
        }
    }
}

/// The compiled route table.
#[derive(Debug, Clone, Default)]
pub struct Router {
    aliases: BTreeMap<String, String>,
    exact: BTreeMap<String, Vec<Spec>>,
    globs: Vec<(Pattern, Vec<Spec>)>,
    backend_exact: Vec<(String, String)>,
    backend_globs: Vec<(Pattern, String)>,
    backends: Vec<String>,
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Router {
    /// Compiles the `[llm]` config (already validated).
    pub fn new(llm: &LlmConfig) -> Self {
        let mut r = Self {
            aliases: llm.aliases.clone(),
            backends: llm.backends.keys().cloned().collect(),
            ..Self::default()
        };
        for route in &llm.routes {
            let specs: Vec<Spec> = route.targets.iter().map(|t| Spec::parse(t)).collect();
            if is_glob(&route.model) {
                if let Ok(p) = Pattern::new(&route.model) {
                    r.globs.push((p, specs));
                }
            } else {
                r.exact.entry(route.model.clone()).or_insert(specs);
            }
        }
        for (name, b) in &llm.backends {
            for m in &b.models {
                if is_glob(m) {
                    if let Ok(p) = Pattern::new(m) {
                        r.backend_globs.push((p, name.clone()));
                    }
                } else {
                    r.backend_exact.push((m.clone(), name.clone()));
                }
            }
        }
        r
    }

    /// Resolves `requested` to its targets.
    pub fn resolve(&self, requested: &str) -> Result<Decision, RouteError> {
        if !valid_model_name(requested, false) {
            return Err(RouteError::Invalid(requested.chars().take(64).collect()));
        }
        let (name, via) = match self.aliases.get(requested) {
            Some(target) => (
                target.as_str(),
                format!("alias {requested:?} → {target:?}, then "),
            ),
            None => (requested, String::new()),
        };
        let decide = |specs: &[Spec], rule: String| Decision {
            targets: specs.iter().map(|s| s.target(name)).collect(),
            rule: format!("{via}{rule}"),
        };
        if let Some(specs) = self.exact.get(name) {
            return Ok(decide(specs, format!("route for model {name:?}")));
        }
        if let Some((backend, model)) = name.split_once(':')
            && !model.is_empty()
            && self.backends.iter().any(|b| b == backend)
        {
            return Ok(Decision {
                targets: vec![Target {
                    backend: backend.to_string(),
                    model: model.to_string(),
                }],
                rule: format!("{via}backend prefix {backend:?}"),
            });
        }
        if let Some((p, specs)) = self.globs.iter().find(|(p, _)| p.matches(name)) {
            return Ok(decide(specs, format!("route for models {:?}", p.as_str())));
        }
        let one = |backend: &str, rule: String| Decision {
            targets: vec![Target {
                backend: backend.to_string(),
                model: name.to_string(),
            }],
            rule: format!("{via}{rule}"),
        };
        if let Some((_, b)) = self.backend_exact.iter().find(|(m, _)| m == name) {
            return Ok(one(b, format!("backend {b:?} lists model {name:?}")));
        }
        if let Some((p, b)) = self.backend_globs.iter().find(|(p, _)| p.matches(name)) {
            return Ok(one(
                b,
                format!("backend {b:?} serves models {:?}", p.as_str()),
            ));
        }
        Err(RouteError::NoRoute(requested.to_string()))
    }

    /// The backends that serve names by glob, whose own model lists `/v1/models` asks
    /// for (each once, however many globs it has).
    pub fn glob_backends(&self) -> Vec<String> {
        let mut names: Vec<String> = self.backend_globs.iter().map(|(_, b)| b.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether `model` of `backend`'s own list is served under its own name here: it
    /// matches one of that backend's globs, and no route or alias takes the name first.
    pub fn serves_as_listed(&self, backend: &str, model: &str) -> bool {
        self.resolve(model).is_ok_and(|d| {
            d.targets
                .first()
                .is_some_and(|t| t.backend == backend && t.model == model)
        })
    }

    /// The exact model names the table exposes (for `/v1/models`), sorted.
    pub fn model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .exact
            .keys()
            .chain(self.aliases.keys())
            .cloned()
            .chain(self.backend_exact.iter().map(|(m, _)| m.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_core::config::llm::{BackendConfig, BackendKind, RouteConfig};

    fn config() -> LlmConfig {
        let mut llm = LlmConfig::default();
        let mut a = BackendConfig::new(BackendKind::Anthropic, "https://a.example");
        a.models = vec!["claude-*".into()];
        llm.backends.insert("anthropic".into(), a);
        let mut l = BackendConfig::new(BackendKind::Openai, "http://127.0.0.1:8080/v1");
        l.models = vec!["smollm2".into()];
        llm.backends.insert("local".into(), l);
        llm.routes.push(RouteConfig {
            model: "fast".into(),
            targets: vec!["local:smollm2".into(), "anthropic:claude-haiku-4-5".into()],
        });
        llm.routes.push(RouteConfig {
            model: "gpt-*".into(),
            targets: vec!["local".into()],
        });
        llm.aliases
            .insert("sonnet".into(), "claude-sonnet-4-5".into());
        llm
    }

    fn targets(r: &Router, m: &str) -> Vec<(String, String)> {
        r.resolve(m)
            .unwrap()
            .targets
            .into_iter()
            .map(|t| (t.backend, t.model))
            .collect()
    }

    #[test]
    fn resolution_order() {
        let r = Router::new(&config());
        let t = |b: &str, m: &str| (b.to_string(), m.to_string());
        assert_eq!(
            targets(&r, "fast"),
            vec![t("local", "smollm2"), t("anthropic", "claude-haiku-4-5")]
        );
        assert_eq!(targets(&r, "local:qwen"), vec![t("local", "qwen")]);
        assert_eq!(targets(&r, "gpt-4o"), vec![t("local", "gpt-4o")]);
        assert_eq!(
            targets(&r, "claude-opus-4-1"),
            vec![t("anthropic", "claude-opus-4-1")]
        );
        assert_eq!(
            targets(&r, "sonnet"),
            vec![t("anthropic", "claude-sonnet-4-5")]
        );
        assert_eq!(targets(&r, "smollm2"), vec![t("local", "smollm2")]);
        assert!(r.resolve("sonnet").unwrap().rule.contains("alias"));
    }

    #[test]
    fn unknown_and_invalid_names() {
        let r = Router::new(&config());
        assert!(matches!(r.resolve("llama"), Err(RouteError::NoRoute(_))));
        assert!(matches!(
            r.resolve("nobackend:x"),
            Err(RouteError::NoRoute(_))
        ));
        assert!(matches!(r.resolve("a b"), Err(RouteError::Invalid(_))));
        assert!(matches!(r.resolve("claude-*"), Err(RouteError::Invalid(_))));
        assert!(matches!(r.resolve(""), Err(RouteError::Invalid(_))));
    }

    #[test]
    fn models_lists_exact_names() {
        let r = Router::new(&config());
        assert_eq!(r.model_names(), vec!["fast", "smollm2", "sonnet"]);
    }
}
