//! Log setup: `tracing` to stderr, every line through the redactor.

use moat_core::config::{LogConfig, LogFormat};
use moat_core::redact::{RedactingMakeWriter, global};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `verbose` (-v count) overrides the configured level.
pub(crate) fn init(log: &LogConfig, verbose: u8) {
    let level = match verbose {
        0 => log.level.as_str(),
        1 => "debug",
        _ => "trace",
    };
    // Libraries below us are chatty at debug; keep them at info unless tracing.
    let filter = if verbose >= 2 {
        EnvFilter::new(level)
    } else {
        EnvFilter::new(format!(
            "{level},hyper=info,hyper_util=info,h2=info,rustls=info"
        ))
    };
    let writer = RedactingMakeWriter::new(std::io::stderr, global());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match log.format {
        LogFormat::Text => builder.with_ansi(false).with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // Already installed (tests call this more than once): keep the first.
    let _ = result;
}
