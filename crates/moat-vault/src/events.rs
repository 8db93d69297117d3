//! Vault events, typed, for the audit log to record. The vault crate does not log; whoever
//! performs an operation emits its event (the CLI does, through `tracing` with target
//! `moat::audit`, until the audit log subscribes).

/// Something that happened to the vault. Names are carried; values never are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultEvent {
    /// A vault was created.
    Init,
    /// A secret was added.
    Add {
        /// Its name.
        name: String,
    },
    /// A secret was removed.
    Remove {
        /// Its name.
        name: String,
    },
    /// A secret was renamed.
    Rename {
        /// The old name.
        from: String,
        /// The new name.
        to: String,
    },
    /// A secret's value was revealed or exported.
    Reveal {
        /// Its name, or `*` for an export of all.
        name: String,
    },
    /// An unlock failed (wrong password, wrong PIN).
    UnlockFailed,
    /// The vault was sealed to this machine.
    Seal {
        /// Whether a PIN is required.
        pin: bool,
    },
    /// The seal was removed.
    Unseal,
    /// The master password was changed.
    PasswordChanged,
}

impl VaultEvent {
    /// The dotted action name, e.g. `vault.add`.
    pub fn action(&self) -> &'static str {
        match self {
            VaultEvent::Init => "vault.init",
            VaultEvent::Add { .. } => "vault.add",
            VaultEvent::Remove { .. } => "vault.remove",
            VaultEvent::Rename { .. } => "vault.rename",
            VaultEvent::Reveal { .. } => "vault.reveal",
            VaultEvent::UnlockFailed => "vault.unlock_failed",
            VaultEvent::Seal { .. } => "vault.seal",
            VaultEvent::Unseal => "vault.unseal",
            VaultEvent::PasswordChanged => "vault.password_changed",
        }
    }

    /// The entry it concerns, if any.
    pub fn target(&self) -> Option<String> {
        match self {
            VaultEvent::Add { name }
            | VaultEvent::Remove { name }
            | VaultEvent::Reveal { name } => Some(name.clone()),
            VaultEvent::Rename { from, to } => Some(format!("{from} -> {to}")),
            _ => None,
        }
    }
}
