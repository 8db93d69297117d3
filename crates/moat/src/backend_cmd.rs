//! `moat backend` and `moat route`: the LLM backends in config.toml, and the route dry run.
//!
//! Edits keep the rest of config.toml as the user wrote it (comments and order), are
//! checked against the same validation as a load before anything is written, and replace
//! the file atomically.

use anyhow::{Context, anyhow};
use moat_core::config::llm::{
    AuthScheme, BackendConfig, BackendKind, ResponsesMode, valid_backend_name,
};
use moat_core::home::Home;
use moat_core::secret::SecretRef;
use moat_llm::Backend;

use crate::app::config_edit::{NO_BACKENDS, backends_table, check, read_doc, write_doc};
use crate::cli::BackendCommand;
use crate::{Failure, app};

pub(crate) fn run(home: &Home, command: &BackendCommand) -> Result<(), Failure> {
    match command {
        BackendCommand::Add {
            name,
            kind,
            base_url,
            key_secret,
            bearer,
            native_responses,
            models,
            replace,
        } => {
            let kind = match kind.as_str() {
                "anthropic" => BackendKind::Anthropic,
                _ => BackendKind::Openai,
            };
            let mut backend = BackendConfig::new(kind, base_url.trim_end_matches('/'));
            backend.key = match key_secret {
                Some(s) => Some(format!("secret:{s}").parse::<SecretRef>().map_err(|e| {
                    Failure::usage(anyhow!("the value of --key-secret is not usable ({e})"))
                })?),
                None => None,
            };
            if *bearer {
                if kind != BackendKind::Anthropic {
                    return Err(Failure::usage(anyhow!(
                        "--bearer is for anthropic backends; openai backends always use Bearer"
                    )));
                }
                backend.auth = AuthScheme::Bearer;
            }
            if *native_responses {
                if kind != BackendKind::Openai {
                    return Err(Failure::usage(anyhow!(
                        "--native-responses is for openai backends; an anthropic backend's Responses requests are translated"
                    )));
                }
                backend.responses = ResponsesMode::Native;
            }
            backend.models = models.clone();
            add(home, name, backend, *replace)
        }
        BackendCommand::List => list(home),
        BackendCommand::Remove { name } => remove(home, name),
        BackendCommand::Test { name } => test(home, name),
    }
}

fn add(home: &Home, name: &str, backend: BackendConfig, replace: bool) -> Result<(), Failure> {
    if !valid_backend_name(name) {
        return Err(Failure::usage(anyhow!(
            "{name:?} is not a backend name: use letters, digits, '-' and '_' (at most 64)"
        )));
    }
    let loaded = crate::load_config(home, &[])?;
    let mut llm = loaded.config.llm.clone();
    if llm.backends.contains_key(name) && !replace {
        return Err(Failure::usage(anyhow!(
            "a backend named {name:?} exists; use --replace to overwrite it, or `moat backend remove {name}`"
        )));
    }
    llm.backends.insert(name.to_string(), backend.clone());
    check(&llm)?;
    let mut doc = read_doc(home)?;
    let table = backends_table(&mut doc)?;
    let mut entry = toml_edit::Table::new();
    entry.insert("kind", toml_edit::value(backend.kind.as_str()));
    entry.insert("base_url", toml_edit::value(&backend.base_url));
    if let Some(key) = &backend.key {
        entry.insert("key", toml_edit::value(key.to_string()));
    }
    if backend.auth == AuthScheme::Bearer {
        entry.insert("auth", toml_edit::value("bearer"));
    }
    if backend.responses == ResponsesMode::Native {
        entry.insert("responses", toml_edit::value("native"));
    }
    if !backend.models.is_empty() {
        let mut a = toml_edit::Array::new();
        for m in &backend.models {
            a.push(m.as_str());
        }
        entry.insert("models", toml_edit::value(a));
    }
    table.insert(name, toml_edit::Item::Table(entry));
    write_doc(home, &doc)?;
    println!(
        "moat: backend {name:?} ({}, {}) added to {}; restart `moat serve` to use it",
        backend.kind.as_str(),
        backend.base_url,
        home.config_file().display()
    );
    if let Some(SecretRef::Vault(secret)) = &backend.key {
        println!(
            "moat: the key is read from the vault secret {secret:?} (add it with `moat vault add {secret}` if it isn't there)"
        );
    }
    if backend.models.is_empty() {
        println!(
            "moat: it serves no model names yet: ask for \"{name}:MODEL\", or add --models GLOB, or a route under [[llm.routes]]"
        );
    }
    Ok(())
}

fn list(home: &Home) -> Result<(), Failure> {
    let loaded = crate::load_config(home, &[])?;
    let llm = &loaded.config.llm;
    if llm.backends.is_empty() {
        println!("{NO_BACKENDS}");
        return Ok(());
    }
    println!(
        "{:<16} {:<10} {:<40} {:<6} {:<10} MODELS",
        "NAME", "KIND", "BASE URL", "KEY", "RESPONSES"
    );
    for (name, b) in &llm.backends {
        println!(
            "{:<16} {:<10} {:<40} {:<6} {:<10} {}",
            name,
            b.kind.as_str(),
            b.base_url,
            if b.key.is_some() { "***" } else { "-" },
            match b.responses {
                ResponsesMode::Native => "native",
                ResponsesMode::Translate => "translate",
            },
            if b.models.is_empty() {
                "-".to_string()
            } else {
                b.models.join(", ")
            }
        );
    }
    for r in &llm.routes {
        println!("route {:?} → {}", r.model, r.targets.join(", "));
    }
    for (alias, target) in &llm.aliases {
        println!("alias {alias:?} → {target:?}");
    }
    Ok(())
}

fn remove(home: &Home, name: &str) -> Result<(), Failure> {
    let loaded = crate::load_config(home, &[])?;
    let mut llm = loaded.config.llm.clone();
    if llm.backends.remove(name).is_none() {
        return Err(Failure::usage(anyhow!(
            "no backend named {name:?} (see `moat backend list`)"
        )));
    }
    if let Err(f) = check(&llm) {
        return Err(f.context(format!(
            "cannot remove backend {name:?} while config still refers to it"
        )));
    }
    let mut doc = read_doc(home)?;
    let removed = doc
        .get_mut("llm")
        .and_then(|l| l.get_mut("backends"))
        .and_then(|b| b.as_table_like_mut())
        .and_then(|b| b.remove(name));
    if removed.is_none() {
        return Err(Failure::usage(anyhow!(
            "backend {name:?} is not set in {} (it comes from elsewhere)",
            home.config_file().display()
        )));
    }
    write_doc(home, &doc)?;
    println!("moat: backend {name:?} removed; restart `moat serve` to apply");
    Ok(())
}

fn test(home: &Home, name: &str) -> Result<(), Failure> {
    let loaded = crate::load_config(home, &[])?;
    let Some(config) = loaded.config.llm.backends.get(name) else {
        return Err(Failure::usage(anyhow!(
            "no backend named {name:?} (see `moat backend list`)"
        )));
    };
    let key = match &config.key {
        None => None,
        Some(r @ SecretRef::Env(_)) => Some(
            r.resolve()
                .map_err(|e| Failure::usage(anyhow!("backend {name:?}: {e}")))?,
        ),
        Some(r @ SecretRef::Vault(_)) => {
            let vault = app::vault::unlock(home)?;
            Some(app::secrets::resolve_secret(
                &vault,
                r,
                &format!("llm.backends.{name}.key"),
            )?)
        }
    };
    let backend = Backend::new(name, config, Vec::new(), &Default::default())
        .map_err(|e| Failure::usage(e.into()))?;
    let credential = key.map(|k| (k, backend.auth()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::runtime)?;
    println!("moat: asking backend {name:?} for its models…");
    let answer = runtime
        .block_on(moat_llm::probe_models(
            &backend,
            &config.base_url,
            credential.as_ref(),
            config.connect_timeout * 3,
        ))
        .map_err(|e| Failure::runtime(anyhow!("backend {name:?} failed: {e}")))?;
    if !answer.status.is_success() {
        let message = answer.error_message().unwrap_or_default();
        return Err(Failure::runtime(anyhow!(
            "backend {name:?} answered {} after {} ms{}{}",
            answer.status,
            answer.latency.as_millis(),
            if message.is_empty() { "" } else { ": " },
            message
        )));
    }
    let models = answer.model_ids();
    println!(
        "moat: backend {name:?} answered {} in {} ms; {} model(s)",
        answer.status,
        answer.latency.as_millis(),
        models.len()
    );
    for m in models {
        println!("  {m}");
    }
    Ok(())
}

pub(crate) fn route(home: &Home, model: &str) -> Result<(), Failure> {
    let loaded = crate::load_config(home, &[])?;
    let router = moat_llm::Router::new(&loaded.config.llm);
    let decision = router
        .resolve(model)
        .map_err(|e| Failure::usage(anyhow!("{e}")))?;
    println!("{model}: {}", decision.rule);
    for (i, t) in decision.targets.iter().enumerate() {
        let kind = loaded
            .config
            .llm
            .backends
            .get(&t.backend)
            .map_or("?", |b| b.kind.as_str());
        println!(
            "  {}. backend {:?} ({kind}), upstream model {:?}",
            i + 1,
            t.backend,
            t.model
        );
        if let Some(b) = loaded.config.llm.backends.get(&t.backend) {
            let names: Vec<String> = b.pool().into_iter().map(|a| a.name).collect();
            if names.len() > 1 {
                println!(
                    "     accounts {} ({}; a conversation stays on its account)",
                    names.join(", "),
                    b.strategy.as_str()
                );
            } else {
                println!("     account {}", names.join(""));
            }
        }
    }
    Ok(())
}
