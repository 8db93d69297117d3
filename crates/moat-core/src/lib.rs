//! moat-core: the ground floor every other moat crate stands on.
//!
//! It owns what is shared and knows nothing of HTTP routes or features:
//!
//! - [`home`]: the `MOAT_HOME` directory and its layout;
//! - [`config`]: the typed configuration, its layers (flag > env > file > default) and validation;
//! - [`atomic`]: crash-safe 0600 file replacement;
//! - [`redact`]: the redactor every log line and error body passes through;
//! - [`secret`]: secret references (`secret:NAME`, `env:VAR`) and values that never print.
//!
//! ```
//! use moat_core::redact::Redactor;
//! let redactor = Redactor::new();
//! assert_eq!(redactor.redact("key=sk-ant-api03-abcdefghijkl"), "key=[REDACTED]");
//! ```
#![deny(missing_docs)]

pub mod atomic;
pub mod config;
pub mod home;
pub mod redact;
pub mod secret;
