//! `moat egress check`: the egress policy's decision on one URL, DNS included, nothing sent.

use std::process::ExitCode;

use anyhow::{Context, anyhow};
use moat_core::home::Home;
use moat_net::egress::{Host, Policy, SystemResolver, addr, decide};

use crate::Failure;
use crate::cli::EgressCommand;

/// Runs an `egress` subcommand.
pub(crate) fn run(home: &Home, command: &EgressCommand) -> Result<ExitCode, Failure> {
    let EgressCommand::Check { url } = command;
    let loaded = crate::load_config(home, &[])?;
    let policy =
        Policy::from_config(&loaded.config.egress).map_err(|e| Failure::usage(anyhow!("{e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::runtime)?;
    let decision = runtime.block_on(decide(&policy, &SystemResolver, url));
    match decision {
        Ok(d) => {
            println!("allowed: {}", d.checked.url);
            let addrs: Vec<String> = d.addrs.iter().map(ToString::to_string).collect();
            match &d.checked.host {
                Host::Addr(a) if addr::classify(*a).is_global() => {
                    println!("  {a} is globally reachable")
                }
                Host::Addr(a) => println!("  {a} is allowed by egress.allow_cidrs"),
                Host::Name(n) => println!(
                    "  {n} resolves to {}: every address passed; only these would be connected to",
                    addrs.join(", ")
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => {
            println!("refused ({}): {refusal}", refusal.rule());
            if let Some(hint) = refusal.hint() {
                println!("  {hint}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
