//! Secret references from config (`env:VAR`, `secret:NAME`) turned into values.

use moat_core::secret::{SecretRef, SecretString};

use crate::Failure;

/// Resolves a secret reference from config: `env:` from the environment, `secret:` from
/// the vault (unlocked with MOAT_VAULT_PASSWORD_FILE or a prompt). Every value unlocked is
/// known to the redactor from then on.
pub(crate) fn resolve_secret(
    vault: &moat_vault::Vault,
    reference: &SecretRef,
    key: &str,
) -> Result<SecretString, Failure> {
    match reference {
        SecretRef::Env(_) => reference
            .resolve()
            .map_err(|e| Failure::usage(anyhow::anyhow!("cannot resolve `{key}`: {e}"))),
        SecretRef::Vault(name) => {
            let entry = vault.get(name).ok_or_else(|| {
                Failure::usage(anyhow::anyhow!(
                    "`{key}` refers to {reference}, but the vault has no secret named {name:?}; add it with `moat vault add {name}`"
                ))
            })?;
            let value = std::str::from_utf8(entry.value()).map_err(|_| {
                Failure::usage(anyhow::anyhow!(
                    "`{key}` refers to {reference}, whose value is not UTF-8 text"
                ))
            })?;
            Ok(SecretString::new(value.to_string()))
        }
    }
}
