//! The credentials `moat serve` hands the gateway: keys from the vault or the environment,
//! OAuth tokens from the vault with a store that writes refreshed ones back; and account
//! events as audit entries.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use moat_core::config::llm::{
    AccountConfig, BackendConfig, DEFAULT_ACCOUNT, LlmConfig, oauth_vault_entry,
};
use moat_core::home::Home;
use moat_llm::oauth::{OAuthClient, TokenSource, TokenStore, Tokens};
use moat_llm::pool::{AccountEvent, Credential, PoolEvents};
use moat_vault::{Unlock, Vault};
use zeroize::Zeroizing;

use crate::Failure;

/// OAuth tokens in the vault, written through the data key (no password prompt).
pub(crate) struct VaultTokens {
    pub path: PathBuf,
    pub data_key: Zeroizing<[u8; 32]>,
}

impl TokenStore for VaultTokens {
    fn save(&self, entry: &str, tokens: &Tokens) -> Result<(), String> {
        let value = Zeroizing::new(tokens.to_vault_json());
        Vault::update(&self.path, Unlock::DataKey(&self.data_key), |v| {
            v.replace(
                entry,
                value.as_bytes().to_vec(),
                Some("OAuth tokens of an LLM account (kept by moat)".into()),
            )
        })
        .map_err(|e| format!("the vault could not be updated: {e}"))
    }

    fn load(&self, entry: &str) -> Option<Tokens> {
        let vault = Vault::open(&self.path, Unlock::DataKey(&self.data_key)).ok()?;
        Tokens::from_vault_json(std::str::from_utf8(vault.get(entry)?.value()).ok()?)
    }
}

/// Each account's credential, for the gateway: keys from the vault or the environment,
/// OAuth tokens from the vault with a store that writes refreshed ones back.
pub(crate) fn credentials(
    home: &Home,
    vault: &Vault,
    llm: &LlmConfig,
) -> Result<moat_llm::Credentials, Failure> {
    let mut out = moat_llm::Credentials::new();
    let store: Arc<dyn TokenStore> = Arc::new(VaultTokens {
        path: home.vault_file(),
        data_key: vault.data_key_copy(),
    });
    for (backend, b) in &llm.backends {
        let client = match &b.oauth {
            Some(o) => Some(Arc::new(
                OAuthClient::new(o).map_err(|e| Failure::usage(e.into()))?,
            )),
            None => None,
        };
        for a in b.pool() {
            let credential =
                account_credential(vault, backend, b, &a, client.as_ref(), store.clone())?;
            out.insert((backend.clone(), a.name.clone()), credential);
        }
    }
    Ok(out)
}

pub(crate) fn account_credential(
    vault: &Vault,
    backend: &str,
    b: &BackendConfig,
    a: &AccountConfig,
    client: Option<&Arc<OAuthClient>>,
    store: Arc<dyn TokenStore>,
) -> Result<Credential, Failure> {
    let key_name = if a.name == DEFAULT_ACCOUNT && b.key.is_some() {
        format!("llm.backends.{backend}.key")
    } else {
        format!("llm.backends.{backend}.accounts.{}.key", a.name)
    };
    if let Some(r) = &a.key {
        return Ok(Credential::Key(super::secrets::resolve_secret(
            vault, r, &key_name,
        )?));
    }
    if !a.oauth {
        return Ok(Credential::None);
    }
    let entry = oauth_vault_entry(backend, &a.name);
    let tokens = vault
        .get(&entry)
        .and_then(|e| std::str::from_utf8(e.value()).ok())
        .and_then(Tokens::from_vault_json)
        .ok_or_else(|| {
            Failure::usage(anyhow!(
                "account {:?} of backend {backend:?} is an OAuth account without tokens in the vault; log in with `moat account add {backend} {} --oauth --replace`",
                a.name,
                a.name
            ))
        })?;
    let client = client
        .expect("validated: oauth accounts have a provider")
        .clone();
    Ok(Credential::OAuth(Arc::new(TokenSource::new(
        client, entry, tokens, store,
    ))))
}

/// Account events (auth failures) as audit entries.
pub(crate) struct AuditAccountEvents(pub moat_audit::AuditLog);

impl PoolEvents for AuditAccountEvents {
    fn account_event(&self, event: AccountEvent) {
        let mut record = moat_audit::Record::new(
            "system",
            event.action,
            format!("{}/{}", event.backend, event.account),
            "failed",
        );
        for (k, v) in event.detail {
            record = record.detail(k, v);
        }
        if let Err(e) = self.0.record(record) {
            tracing::error!(error = %e, "cannot write an account event to the audit log");
        }
    }
}
