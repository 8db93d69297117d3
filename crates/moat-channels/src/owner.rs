//! The owner's pairing commands where they already are: in the web chat, or on a channel
//! where they are listed in `owners`. `/pair list`, `/pair approve CODE`,
//! `/pair deny CODE` do what `moat pairing` does.

use crate::pairing::{Pairing, PairingError};

/// What a command did: the answer to show, and what to audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The answer, for the owner.
    pub reply: String,
    /// `pairing.approve` or `pairing.deny`, when the command decided something (or
    /// tried to, with a wrong code).
    pub action: Option<&'static str>,
    /// `CHANNEL:SENDER` of the request decided, or `pairing` for a wrong code.
    pub target: String,
    /// `approved`, `denied`, `no_such_code`, `expired`, `used`, `failed`.
    pub outcome: String,
    /// The request's id, when one was found.
    pub request: Option<String>,
    /// The code given matched nothing (it counts against the sender on a channel).
    pub wrong_code: bool,
}

const USAGE: &str = "pairing commands: /pair list, /pair approve CODE, /pair deny CODE";

/// Runs `text` as a pairing command, or None when it is not one. `keep_held` says, per
/// channel, whether an approved sender's held messages are answered.
pub fn command(
    pairing: &Pairing,
    text: &str,
    keep_held: impl FnOnce(&str) -> bool,
    now: i64,
) -> Option<Outcome> {
    let mut words = text.split_whitespace();
    if words.next() != Some("/pair") {
        return None;
    }
    let plain = |reply: String| Outcome {
        reply,
        action: None,
        target: String::new(),
        outcome: String::new(),
        request: None,
        wrong_code: false,
    };
    let (verb, code) = (words.next(), words.next());
    Some(match (verb, code) {
        (Some("list"), None) | (None, None) => match pairing.pending(now) {
            Ok(list) if list.is_empty() => plain("no pairing request is waiting".into()),
            Ok(list) => plain(
                list.iter()
                    .map(|r| {
                        format!(
                            "{} on {} ({}): \"{}\"",
                            r.sender, r.channel, r.display, r.preview
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Err(e) => plain(e.to_string()),
        },
        (Some(verb @ ("approve" | "deny")), Some(code)) => {
            let approve = verb == "approve";
            let result = if approve {
                pairing.approve(code, keep_held, now)
            } else {
                pairing.deny(code, now)
            };
            let action = Some(if approve {
                "pairing.approve"
            } else {
                "pairing.deny"
            });
            match result {
                Ok(r) => Outcome {
                    reply: format!("{} {} on {}", r.state, r.sender, r.channel),
                    action,
                    target: format!("{}:{}", r.channel, r.sender),
                    outcome: r.state.clone(),
                    request: Some(r.id),
                    wrong_code: false,
                },
                Err(e) => Outcome {
                    reply: e.to_string(),
                    action,
                    target: "pairing".into(),
                    outcome: match e {
                        PairingError::NoSuchCode => "no_such_code",
                        PairingError::Expired => "expired",
                        PairingError::Used(_) => "used",
                        PairingError::Sqlite(_) => "failed",
                    }
                    .into(),
                    request: None,
                    wrong_code: matches!(e, PairingError::NoSuchCode),
                },
            }
        }
        _ => plain(USAGE.into()),
    })
}

/// The pairing store as the running server shares it: the channels' hub and the web chat
/// take turns on it, and the owner's commands are audited the same way from both.
pub struct Desk {
    pairing: std::sync::Mutex<Pairing>,
    /// Per channel: whether an approved sender's held messages are answered.
    release: std::collections::HashMap<String, bool>,
    audit: Option<moat_audit::AuditLog>,
}

impl Desk {
    /// A desk over `pairing`; `release` per channel name (unnamed channels release).
    pub fn new(
        pairing: Pairing,
        release: std::collections::HashMap<String, bool>,
        audit: Option<moat_audit::AuditLog>,
    ) -> Desk {
        Desk {
            pairing: std::sync::Mutex::new(pairing),
            release,
            audit,
        }
    }

    /// Runs `f` on the store; SQLite blocks, so a multi-threaded runtime is told.
    pub fn with<T>(&self, f: impl FnOnce(&Pairing) -> T) -> T {
        moat_state::blocking(|| {
            f(&self
                .pairing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner))
        })
    }

    /// Records `record` in the audit log, if there is one.
    pub fn audit(&self, record: moat_audit::Record) {
        if let Some(log) = &self.audit
            && let Err(e) = log.record(record)
        {
            tracing::warn!("the audit log refused a pairing record: {e}");
        }
    }

    /// Runs the owner's `/pair` command typed by `actor` (as audit records name it), and
    /// audits what it decided; None when `text` is not a pairing command.
    pub fn owner_command(&self, actor: &str, text: &str, now: i64) -> Option<Outcome> {
        if !text.trim_start().starts_with("/pair") {
            return None;
        }
        let release = |channel: &str| self.release.get(channel).copied().unwrap_or(true);
        let outcome = self.with(|p| command(p, text, release, now))?;
        if let Some(action) = outcome.action {
            let mut record =
                moat_audit::Record::new(actor, action, &outcome.target, &outcome.outcome);
            if let Some(id) = &outcome.request {
                record = record.detail("request", id.as_str());
            }
            self.audit(record);
        }
        Some(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairing::{Decision, Gate};
    use moat_core::config::channels::DmPolicy;

    #[test]
    fn the_owner_lists_approves_and_denies_with_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let db = moat_state::StateStore::open(&dir.path().join("state.db")).unwrap();
        let p = Pairing::new(db, Default::default());
        let gate = Gate {
            channel: "irc",
            policy: DmPolicy::Pairing,
            allow_from: &[],
        };
        let Decision::Pair { code, .. } = p.decide(&gate, "carol", "carol", "hello", 0).unwrap()
        else {
            panic!("no code")
        };
        assert!(command(&p, "hello", |_| true, 1).is_none());
        let list = command(&p, "/pair list", |_| true, 1).unwrap();
        assert!(list.reply.contains("carol on irc") && list.action.is_none());
        let wrong = command(&p, "/pair approve AAAA-AAAA", |_| true, 1).unwrap();
        assert!(wrong.wrong_code && wrong.outcome == "no_such_code");
        let ok = command(&p, &format!("/pair approve {code}"), |_| true, 1).unwrap();
        assert_eq!(
            (ok.action, ok.target.as_str(), ok.outcome.as_str()),
            (Some("pairing.approve"), "irc:carol", "approved")
        );
        assert!(p.allowed("irc", "carol").unwrap());
        assert!(
            command(&p, "/pair bogus", |_| true, 1)
                .unwrap()
                .reply
                .contains("/pair list")
        );
    }
}
