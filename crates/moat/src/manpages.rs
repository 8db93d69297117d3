//! `moat manpages DIR`: a man page per command, generated from the same clap definitions
//! as `--help`, so the two never disagree. Subcommands are named as git names its own:
//! `moat radio cast play` is `moat-radio-cast-play(1)`.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::Failure;
use crate::cli::Cli;

/// Writes every page into `dir`; returns how many.
pub(crate) fn write_all(dir: &Path) -> Result<usize, Failure> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot make {}", dir.display()))
        .map_err(Failure::runtime)?;
    let mut root = Cli::command();
    root.build();
    let mut written = 0;
    write_tree(dir, &root, "moat", &mut written)?;
    Ok(written)
}

fn write_tree(
    dir: &Path,
    command: &clap::Command,
    name: &str,
    written: &mut usize,
) -> Result<(), Failure> {
    // The page's own name, and its title: `moat-radio-cast` reads as `moat radio cast`.
    let page = command
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut text)
        .map_err(|e| Failure::runtime(anyhow::anyhow!("cannot render {name}(1): {e}")))?;
    crate::app::files::write_public(&dir.join(format!("{name}.1")), &text)?;
    *written += 1;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_tree(dir, sub, &format!("{name}-{}", sub.get_name()), written)?;
    }
    Ok(())
}
