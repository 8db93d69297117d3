//! Answering a waiting tool call from the channel: when a call waits for the owner's
//! approval, the owners of the channel get a prompt with a one-time code, and one of them
//! replies `/approve CODE` or `/deny CODE`. The code, not the approval's id, is what a
//! reply must carry: it was only ever sent to the owners, so a guest who saw "this needs
//! the owner's approval" cannot answer for them, and a wrong code counts against the
//! sender like a wrong pairing code.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::pairing::{new_code, normalized, shown};

/// The codes of the calls waiting on one channel.
#[derive(Default)]
pub(crate) struct ReplyCodes {
    /// Normalized code → the approval it answers, and when it stops counting.
    codes: Mutex<HashMap<String, (String, i64)>>,
}

impl ReplyCodes {
    /// A fresh code for `approval`, good until `expires_at` (unix ms); as people read it.
    pub(crate) fn issue(&self, approval: &str, expires_at: i64) -> String {
        let code = new_code();
        self.lock()
            .insert(code.clone(), (approval.to_string(), expires_at));
        shown(&code)
    }

    /// Forgets the code of `approval` (answered elsewhere, expired, or the turn ended).
    pub(crate) fn withdraw(&self, approval: &str) {
        self.lock().retain(|_, (a, _)| a != approval);
    }

    /// The approval `code` answers, once: the code is spent.
    pub(crate) fn take(&self, code: &str, now: i64) -> Option<String> {
        let mut codes = self.lock();
        codes.retain(|_, (_, expires_at)| *expires_at > now);
        codes
            .remove(&normalized(code))
            .map(|(approval, _)| approval)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, i64)>> {
        self.codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Withdraws an approval's code when dropped.
pub(crate) struct Withdraw<'a>(pub(crate) &'a ReplyCodes, pub(crate) &'a str);

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.0.withdraw(self.1);
    }
}

/// `/approve CODE` (true) or `/deny CODE` (false); None when `text` is neither.
pub(crate) fn reply(text: &str) -> Option<(bool, &str)> {
    let mut words = text.split_whitespace();
    let yes = match words.next()? {
        "/approve" => true,
        "/deny" => false,
        _ => return None,
    };
    let code = words.next().unwrap_or("");
    Some((yes, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_answers_its_approval_once_and_not_after_it_expires() {
        let codes = ReplyCodes::default();
        let code = codes.issue("a_1", 1_000);
        assert_eq!(code.len(), 9, "{code}");
        assert_eq!(codes.take("ZZZZ-ZZZZ", 0), None);
        // As typed: any case, with or without the dash.
        assert_eq!(
            codes.take(&code.to_lowercase().replace('-', ""), 0),
            Some("a_1".into())
        );
        assert_eq!(codes.take(&code, 0), None, "a code is spent once used");
        let late = codes.issue("a_2", 1_000);
        assert_eq!(codes.take(&late, 1_000), None);
        let withdrawn = codes.issue("a_3", 1_000);
        codes.withdraw("a_3");
        assert_eq!(codes.take(&withdrawn, 0), None);
    }

    #[test]
    fn only_the_two_commands_are_replies() {
        assert_eq!(reply("/approve K7QM-2XWD"), Some((true, "K7QM-2XWD")));
        assert_eq!(reply("  /deny k7qm2xwd "), Some((false, "k7qm2xwd")));
        assert_eq!(reply("/approve"), Some((true, "")));
        assert_eq!(reply("please /approve K7QM-2XWD"), None);
        assert_eq!(reply("/approved"), None);
    }
}
