//! moat: the binary. Parses the command line and wires the rooms together; feature logic
//! lives in the library crates.

mod account_cmd;
mod agent_cmd;
mod app;
mod audit_cmd;
mod audit_sink;
mod backend_cmd;
mod channel_cmd;
mod chat_cmd;
mod cli;
mod doctor;
mod egress_cmd;
mod hooks;
mod logging;
mod manpages;
mod radio;
mod radio_cmd;
mod sandbox_cmd;
mod scan_cmd;
mod serve;
mod service_cmd;
mod status;
mod terminal;
mod usage_cmd;
mod vault_cmd;
mod webchat;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use moat_core::config::{Config, Loaded, Override};
use moat_core::home::Home;

use cli::{Cli, Command, ConfigCommand};

/// A command's failure and the exit code it maps to.
pub struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    /// Bad configuration or usage: exit 2.
    pub fn usage(error: anyhow::Error) -> Self {
        Self { code: 2, error }
    }
    /// Anything else: exit 1.
    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 1,
            error: error.into(),
        }
    }
    /// The error.
    pub fn error(&self) -> &anyhow::Error {
        &self.error
    }
    /// The same failure with context in front of its message.
    pub fn context(self, context: String) -> Self {
        Self {
            code: self.code,
            error: self.error.context(context),
        }
    }
}

/// Loads the configuration; any error is a usage error (exit 2).
pub fn load_config(home: &Home, flags: &[Override]) -> Result<Loaded, Failure> {
    Config::load(home, flags).map_err(|e| Failure::usage(e.into()))
}

/// Rust ignores SIGPIPE, so printing to a reader that has gone (`moat audit list | head`)
/// panics. A closed stdout is the reader's choice, not a failure of moat's: leave quietly
/// with the status a shell shows for SIGPIPE, as other command-line tools do.
fn leave_quietly_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // std's own wording for a failed print!; EPIPE is os error 32 on Linux.
        if message.starts_with("failed printing to stdout") && message.contains("(os error 32)") {
            std::process::exit(128 + 13);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    leave_quietly_when_stdout_closes();
    // Two rustls providers are linked (ring, moat's; aws-lc-rs, from matrix-sdk's HTTP
    // client): with no process default, rustls would panic where a library builds a TLS
    // config without naming one. Ours is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            // Error text can quote user input; it leaves the process redacted like a log line.
            let text = format!("{:#}", f.error);
            let text = moat_core::redact::global().redact(&text).into_owned();
            let mut stderr = std::io::stderr().lock();
            for line in text.lines() {
                let _ = writeln!(stderr, "moat: error: {line}");
            }
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    if !matches!(cli.command, Command::Serve(_)) {
        // `serve` sets up logging from its config; other commands log warnings (and, with
        // -v, the audit-bound events of what they did) to stderr.
        let log = moat_core::config::LogConfig {
            level: moat_core::config::LogLevel::Warn,
            ..Default::default()
        };
        logging::init(&log, cli.verbose);
    }
    // Completions and man pages need no home; everything else does.
    let home = || Home::locate(cli.home.as_deref()).map_err(|e| Failure::usage(e.into()));
    match &cli.command {
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "moat", &mut script);
            match std::io::stdout().lock().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::runtime(
                    anyhow::Error::from(e).context("cannot write the completion script"),
                )),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Service(command) => {
            service_cmd::run(&home()?, command).map(|()| ExitCode::SUCCESS)
        }
        Command::Manpages { dir } => manpages::write_all(dir).map(|n| {
            println!("wrote {n} man pages into {}", dir.display());
            ExitCode::SUCCESS
        }),
        Command::Serve(args) => serve::run(&home()?, args, cli.verbose).map(|()| ExitCode::SUCCESS),
        Command::Config(ConfigCommand::Path) => {
            println!("{}", home()?.config_file().display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Show) => {
            let loaded = load_config(&home()?, &[])?;
            print!("{}", render_config(&loaded));
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => Ok(doctor::run(&home()?)),
        Command::Status => status::run(&home()?).map(|()| ExitCode::SUCCESS),
        Command::Vault(command) => vault_cmd::run(&home()?, command).map(|()| ExitCode::SUCCESS),
        Command::Audit(command) => audit_cmd::run(&home()?, command).map(|()| ExitCode::SUCCESS),
        Command::Backend(command) => {
            backend_cmd::run(&home()?, command).map(|()| ExitCode::SUCCESS)
        }
        Command::Account(command) => {
            account_cmd::run(&home()?, command).map(|()| ExitCode::SUCCESS)
        }
        Command::Usage { since, json } => {
            usage_cmd::run(&home()?, since, *json).map(|()| ExitCode::SUCCESS)
        }
        Command::Route { model } => backend_cmd::route(&home()?, model).map(|()| ExitCode::SUCCESS),
        Command::Egress(command) => egress_cmd::run(&home()?, command),
        Command::Scan { file, json } => scan_cmd::run(file, *json),
        Command::Sandbox(command) => sandbox_cmd::run(&home()?, command),
        Command::Chat { web: false } => chat_cmd::run(&home()?).map(|()| ExitCode::SUCCESS),
        Command::Chat { web: true } => chat_cmd::web(&home()?).map(|()| ExitCode::SUCCESS),
        Command::Sessions(c) => agent_cmd::sessions(&home()?, c).map(|()| ExitCode::SUCCESS),
        Command::Trust(c) => agent_cmd::trust(&home()?, c).map(|()| ExitCode::SUCCESS),
        Command::Approvals(c) => agent_cmd::approvals(&home()?, c).map(|()| ExitCode::SUCCESS),
        Command::Notes(c) => agent_cmd::notes(&home()?, c).map(|()| ExitCode::SUCCESS),
        Command::Channel(c) => channel_cmd::channel(&home()?, c).map(|()| ExitCode::SUCCESS),
        Command::Pairing(c) => channel_cmd::pairing(&home()?, c).map(|()| ExitCode::SUCCESS),
        Command::Allowlist(c) => channel_cmd::allowlist(&home()?, c).map(|()| ExitCode::SUCCESS),
        Command::Radio(c) => radio_cmd::run(&home()?, c).map(|()| ExitCode::SUCCESS),
    }
}

fn render_config(loaded: &Loaded) -> String {
    let state = if loaded.file_exists {
        "present"
    } else {
        "absent: embedded defaults"
    };
    let mut out = format!(
        "# Effective moat configuration (flag > MOAT_* environment > config file > default).\n\
         # Config file: {} ({state})\n",
        loaded.file.display()
    );
    let mut overridden: Vec<String> = moat_core::config::ENV_KEYS
        .iter()
        .map(|(_, key)| *key)
        .chain(["auth.api_key"])
        .filter_map(|key| {
            loaded
                .origin_of(key)
                .filter(|o| !matches!(o, moat_core::config::Origin::File(_)))
                .map(|o| format!("#   {key} from {o}\n"))
        })
        .collect();
    overridden.dedup();
    if !overridden.is_empty() {
        out.push_str("# Set outside the file:\n");
        out.extend(overridden);
    }
    out.push('\n');
    out.push_str(&loaded.config.to_toml());
    out
}
