//! Where passwords, PINs and new passwords come from: a prompt without echo on a
//! terminal, a file named by an environment variable, or (only with an explicit opt-in)
//! the environment itself.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, anyhow};
use zeroize::Zeroizing;

use crate::Failure;

/// Read a password from this file (first line).
const PASSWORD_FILE_ENV: &str = "MOAT_VAULT_PASSWORD_FILE";

/// The password itself; read only with [`PASSWORD_ENV_OPT_IN`] set.
const PASSWORD_ENV: &str = "MOAT_VAULT_PASSWORD";

/// The new password for `passwd` when there is no terminal.
const NEW_PASSWORD_FILE_ENV: &str = "MOAT_VAULT_NEW_PASSWORD_FILE";

/// The seal's PIN when there is no terminal.
const PIN_FILE_ENV: &str = "MOAT_VAULT_PIN_FILE";

/// Opt-in for [`PASSWORD_ENV`].
const PASSWORD_ENV_OPT_IN: &str = "MOAT_ALLOW_PASSWORD_ENV";

/// The vault password, from the first source that has one.
pub(crate) fn password(prompt: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if let Some(file) = std::env::var_os(PASSWORD_FILE_ENV) {
        return password_from_file(PASSWORD_FILE_ENV, Path::new(&file));
    }
    if std::io::stdin().is_terminal() {
        let typed = Zeroizing::new(
            rpassword::prompt_password(format!("{prompt}: "))
                .context("cannot read the password")
                .map_err(Failure::runtime)?,
        );
        return Ok(Zeroizing::new(typed.as_bytes().to_vec()));
    }
    if let Ok(value) = std::env::var(PASSWORD_ENV) {
        if std::env::var(PASSWORD_ENV_OPT_IN).as_deref() == Ok("1") {
            eprintln!(
                "moat: warning: reading the vault password from {PASSWORD_ENV}; environment variables leak \
                 through process listings, crash dumps and child processes. Prefer {PASSWORD_FILE_ENV}."
            );
            return Ok(Zeroizing::new(value.into_bytes()));
        }
        return Err(Failure::usage(anyhow!(
            "{PASSWORD_ENV} is set but ignored: environment variables leak. Use {PASSWORD_FILE_ENV}=PATH, \
             or set {PASSWORD_ENV_OPT_IN}=1 to accept the risk"
        )));
    }
    Err(Failure::usage(anyhow!(
        "no terminal to ask for the vault password; point {PASSWORD_FILE_ENV} at a file (0600) holding it"
    )))
}

/// The seal's PIN, if one can be had: from MOAT_VAULT_PIN_FILE or a prompt.
pub(crate) fn pin() -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
    if let Some(file) = std::env::var_os(PIN_FILE_ENV) {
        return password_from_file(PIN_FILE_ENV, Path::new(&file)).map(Some);
    }
    if std::io::stdin().is_terminal() {
        let typed =
            Zeroizing::new(rpassword::prompt_password("seal PIN: ").map_err(Failure::runtime)?);
        return Ok(Some(Zeroizing::new(typed.as_bytes().to_vec())));
    }
    Ok(None)
}

/// A new PIN: from MOAT_VAULT_PIN_FILE, or typed twice.
pub(crate) fn new_pin() -> Result<Zeroizing<Vec<u8>>, Failure> {
    let pin = if let Some(file) = std::env::var_os(PIN_FILE_ENV) {
        password_from_file(PIN_FILE_ENV, Path::new(&file))?
    } else if std::io::stdin().is_terminal() {
        let first =
            Zeroizing::new(rpassword::prompt_password("new seal PIN: ").map_err(Failure::runtime)?);
        let second =
            Zeroizing::new(rpassword::prompt_password("again: ").map_err(Failure::runtime)?);
        if *first != *second {
            return Err(Failure::usage(anyhow!(
                "the two PINs differ; nothing was sealed"
            )));
        }
        Zeroizing::new(first.as_bytes().to_vec())
    } else {
        return Err(Failure::usage(anyhow!(
            "no terminal to type a PIN; point {PIN_FILE_ENV} at a file holding it"
        )));
    };
    if pin.len() < 4 {
        return Err(Failure::usage(anyhow!(
            "the PIN must have at least 4 characters"
        )));
    }
    Ok(pin)
}

/// The first line of the password file named by the variable `var`.
fn password_from_file(var: &str, file: &Path) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let text = Zeroizing::new(
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {var} ({})", file.display()))
            .map_err(Failure::usage)?,
    );
    let line = text.lines().next().unwrap_or_default();
    Ok(Zeroizing::new(line.as_bytes().to_vec()))
}

/// The new password for `passwd`: typed twice on a terminal, else from its own file.
pub(crate) fn replacement_password() -> Result<Zeroizing<Vec<u8>>, Failure> {
    match std::env::var_os(NEW_PASSWORD_FILE_ENV) {
        Some(file) => check_new(password_from_file(NEW_PASSWORD_FILE_ENV, Path::new(&file))?),
        None if std::io::stdin().is_terminal() => new_password(),
        None => Err(Failure::usage(anyhow!(
            "no terminal to type the new password; point {NEW_PASSWORD_FILE_ENV} at a file holding it"
        ))),
    }
}

/// A new password, typed twice on a terminal.
pub(crate) fn new_password() -> Result<Zeroizing<Vec<u8>>, Failure> {
    if std::env::var_os(PASSWORD_FILE_ENV).is_some() || !std::io::stdin().is_terminal() {
        let pw = password("new vault password")?;
        return check_new(pw);
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("new vault password: ").map_err(Failure::runtime)?,
    );
    let second = Zeroizing::new(rpassword::prompt_password("again: ").map_err(Failure::runtime)?);
    if *first != *second {
        return Err(Failure::usage(anyhow!(
            "the two passwords differ; nothing was changed"
        )));
    }
    check_new(Zeroizing::new(first.as_bytes().to_vec()))
}

fn check_new(pw: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if pw.len() < 8 {
        return Err(Failure::usage(anyhow!(
            "the vault password must have at least 8 characters"
        )));
    }
    Ok(pw)
}
