//! Secret references and in-memory secret values.
//!
//! Config files hold references, never values: `secret:NAME` names an entry in the vault,
//! `env:VAR` names an environment variable. A value is fetched at the moment of use, lives
//! in a [`SecretString`] that never prints itself, is wiped on drop, and is registered
//! with the redactor so it can't leak through a log line or an error body.

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

/// A pointer to a secret value kept outside the config file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// `secret:NAME`: an entry in the vault.
    Vault(String),
    /// `env:VAR`: an environment variable of the moat process.
    Env(String),
}

/// Why a secret reference could not be parsed or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text is not `secret:NAME` or `env:VAR`.
    #[error(
        "expected a reference like \"secret:NAME\" or \"env:VAR\"; secret values never go in config files"
    )]
    NotAReference,
    /// The name part is not a valid vault entry name or environment variable name.
    #[error(
        "invalid {0} reference: vault names use letters, digits, '_', '-' and '.'; variable names letters, digits and '_', not starting with a digit"
    )]
    BadName(String),
    /// The name has the shape of a credential (`sk-...`, `ghp_...`): most likely the key
    /// itself, pasted where its name belongs. Not echoed, not stored.
    #[error(
        "that {0} reference has the shape of a key itself, not of a name: store the key with `moat vault add NAME` (it reads the value from a prompt or stdin) and refer to NAME"
    )]
    LooksLikeAValue(String),
    /// The referenced environment variable is unset or empty.
    #[error("environment variable {0} is not set (referenced as env:{0})")]
    EnvMissing(String),
    /// A vault reference given to a resolver that has no vault.
    #[error("secret:{0} must be resolved through the vault (`moat vault add {0}`)")]
    NoVault(String),
}

impl SecretRef {
    /// Resolves an `env:` reference against the process environment. `secret:` references
    /// need the vault and fail here with [`SecretError::NoVault`]; the binary resolves them.
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        match self {
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(SecretString::new(v)),
                _ => Err(SecretError::EnvMissing(var.clone())),
            },
            SecretRef::Vault(name) => Err(SecretError::NoVault(name.clone())),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `[A-Za-z_][A-Za-z0-9_]*`, as POSIX shells accept.
fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

impl FromStr for SecretRef {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, name) = s.split_once(':').ok_or(SecretError::NotAReference)?;
        let make: fn(String) -> SecretRef = match kind {
            "secret" => SecretRef::Vault,
            "env" => SecretRef::Env,
            _ => return Err(SecretError::NotAReference),
        };
        let valid = match kind {
            "env" => valid_env_name(name),
            _ => valid_name(name),
        };
        if !valid {
            // Not echoed: what failed to be a name may be a value pasted in the wrong place.
            return Err(SecretError::BadName(kind.to_string()));
        }
        // A valid name can still be a pasted key ("sk-proj-..." is all name characters):
        // kept, it would be written to config.toml and printed.
        if crate::redact::Redactor::new().redact(name) != name {
            return Err(SecretError::LooksLikeAValue(kind.to_string()));
        }
        Ok(make(name.to_string()))
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Vault(n) => write!(f, "secret:{n}"),
            SecretRef::Env(n) => write!(f, "env:{n}"),
        }
    }
}

impl serde::Serialize for SecretRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Deliberately not echoing the input: a user who pasted a real key here must not
        // see it again in an error message or a log.
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A secret value in memory: no `Display`, a `Debug` that hides it, wiped on drop.
#[derive(Clone)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a value and registers it with the global redactor.
    pub fn new(value: String) -> Self {
        crate::redact::global().add_known_secret(&value);
        Self(Zeroizing::new(value))
    }

    /// The value, for the one place that must use it (a header, a comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_references() {
        assert_eq!(
            "secret:openai-main".parse(),
            Ok(SecretRef::Vault("openai-main".into()))
        );
        assert_eq!("env:MY_KEY".parse(), Ok(SecretRef::Env("MY_KEY".into())));
        assert_eq!(SecretRef::Env("X".into()).to_string(), "env:X");
    }

    #[test]
    fn refuses_plain_values_without_echoing_them() {
        let err = "sk-ant-canary-value".parse::<SecretRef>().unwrap_err();
        assert_eq!(err, SecretError::NotAReference);
        assert!(!err.to_string().contains("canary"));
        assert!(matches!(
            "secret:".parse::<SecretRef>(),
            Err(SecretError::BadName(_))
        ));
        assert!(matches!(
            "env:A B".parse::<SecretRef>(),
            Err(SecretError::BadName(_))
        ));
        for pasted in [
            "secret:sk-proj-abcdefghijklmnop1234",
            "secret:sk-ant-api03-abcdefgh",
            "env:ghp_0123456789abcdefghij0123456789",
        ] {
            let err = pasted.parse::<SecretRef>().unwrap_err();
            assert!(matches!(err, SecretError::LooksLikeAValue(_)), "{pasted}");
            assert!(!err.to_string().contains("abcdefgh"), "{err}");
        }
        assert!("secret:openai-key".parse::<SecretRef>().is_ok());
        assert!("secret:anthropic_work.2".parse::<SecretRef>().is_ok());
    }

    #[test]
    fn debug_hides_the_value() {
        let s = SecretString::new("hunter2-canary-debug".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-canary-debug");
    }
}
