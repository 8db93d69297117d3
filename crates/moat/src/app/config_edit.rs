//! Edits of `config.toml` made by commands: parsed keeping the user's comments and order,
//! checked like a load, and replaced atomically.

use anyhow::anyhow;
use moat_core::config::llm::LlmConfig;
use moat_core::home::Home;

use crate::Failure;

/// What `list` commands print when config has no backend.
pub(crate) const NO_BACKENDS: &str =
    "no backends; add one with `moat backend add NAME --kind anthropic|openai --base-url URL`";

/// Checks LLM config as a load would, before anything is written.
pub(crate) fn check(llm: &LlmConfig) -> Result<(), Failure> {
    moat_core::config::llm::validate(llm).map_err(|e| Failure::usage(e.into()))
}

pub(crate) fn read_doc(home: &Home) -> Result<toml_edit::DocumentMut, Failure> {
    let path = home.config_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Failure::runtime(
                anyhow::Error::new(e).context(format!("cannot read {}", path.display())),
            ));
        }
    };
    text.parse::<toml_edit::DocumentMut>().map_err(|_| {
        Failure::usage(anyhow!(
            "{} is not valid TOML; fix it first (`moat doctor`)",
            path.display()
        ))
    })
}

pub(crate) fn backends_table(
    doc: &mut toml_edit::DocumentMut,
) -> Result<&mut toml_edit::Table, Failure> {
    table_at(doc, &["llm", "backends"])
}

/// The table at `path` (`["radio", "libraries"]`), made (implicit, so no empty header is
/// written) where missing; a usage failure where a key on the way is not a table.
pub(crate) fn table_at<'d>(
    doc: &'d mut toml_edit::DocumentMut,
    path: &[&str],
) -> Result<&'d mut toml_edit::Table, Failure> {
    let mut table = doc.as_table_mut();
    for (i, key) in path.iter().enumerate() {
        table = table
            .entry(key)
            .or_insert_with(|| {
                let mut t = toml_edit::Table::new();
                t.set_implicit(true);
                toml_edit::Item::Table(t)
            })
            .as_table_mut()
            .ok_or_else(|| {
                Failure::usage(anyhow!(
                    "`{}` in config.toml is not a [table]; write it as a table section to let moat edit it",
                    path[..=i].join(".")
                ))
            })?;
    }
    Ok(table)
}

pub(crate) fn write_doc(home: &Home, doc: &toml_edit::DocumentMut) -> Result<(), Failure> {
    home.ensure().map_err(Failure::runtime)?;
    moat_core::atomic::write_atomic(&home.config_file(), doc.to_string().as_bytes())
        .map_err(Failure::runtime)
}
