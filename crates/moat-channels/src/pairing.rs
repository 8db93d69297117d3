//! Who may reach the assistant on a channel: the allowlist, and pairing for everyone else.
//!
//! A sender nobody admitted gets a one-time code (8 characters from an alphabet without
//! look-alikes: 40 bits), good for `pairing.code_ttl`. Their message is held, unseen by
//! any model, until the owner approves the code (`moat pairing approve CODE`, which adds
//! them to the allowlist and releases or drops what was held) or denies it. The code is
//! kept only as its SHA-256 and compared in constant time. Code requests and wrong codes
//! are counted per sender and per channel; past the limits a sender gets nothing.
//!
//! Blocking calls on one SQLite connection, like the assistant's own store.

use std::time::Duration;

use moat_core::config::channels::{DmPolicy, PairingConfig};
use moat_state::StateStore;
use moat_state::rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The code alphabet, shown in capitals: no 0/O and no 1/I. 32 symbols, 5 bits each.
const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Characters in a code.
const CODE_LEN: usize = 8;
/// The first words of a held message the owner is shown.
const PREVIEW_CHARS: usize = 80;

/// A pairing failure.
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    /// SQLite failed.
    #[error("the state store failed: {0}")]
    Sqlite(#[from] moat_state::rusqlite::Error),
    /// No waiting request has this code.
    #[error("no pairing request waits with that code; `moat pairing list` shows the waiting ones")]
    NoSuchCode,
    /// The code was good once but its time is over.
    #[error("that code expired; the sender gets a new one by writing again")]
    Expired,
    /// The code was already approved or denied.
    #[error("that code was already used ({0})")]
    Used(String),
}

type Result<T> = std::result::Result<T, PairingError>;

/// A channel's rules for direct messages.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    /// The channel's name.
    pub channel: &'a str,
    /// Its dm_policy.
    pub policy: DmPolicy,
    /// Its config's allow_from.
    pub allow_from: &'a [String],
}

/// A pairing request, as the owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its id (`p_` and 12 hex digits): denials may name it.
    pub id: String,
    /// The channel it came in on.
    pub channel: String,
    /// The sender, as the channel identifies them.
    pub sender: String,
    /// The name they go by there, if other than their id.
    pub display: String,
    /// The first words of their first message.
    pub preview: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub expires_at: i64,
    /// `pending`, `approved`, `denied` or `expired`.
    pub state: String,
}

/// What to do with a direct message from a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// They may reach the assistant: the message is a turn.
    Admit,
    /// A new pairing request: tell them this code. The message is held.
    Pair {
        /// The code, as shown (`ABCD-EFGH`).
        code: String,
        /// The request it belongs to.
        request: Request,
    },
    /// Their request is already waiting; the message is held (or dropped past the
    /// limit) and nothing is said.
    Waiting,
    /// Tell them this and nothing more (the message is dropped).
    Tell(String),
    /// Say nothing (the message is dropped), for this reason (the log's and the audit's).
    Ignore(Refusal),
}

/// Why a message reached nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The channel's dm_policy is `disabled`.
    Disabled,
    /// dm_policy `allowlist`, and they are not on it.
    NotAllowed,
    /// Past the per-sender or per-channel limit on code requests.
    RateLimited,
}

impl Refusal {
    /// Its name in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled",
            Refusal::NotAllowed => "not_allowed",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

/// A message held for a sender the owner has approved, ready to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The sender.
    pub sender: String,
    /// What they wrote.
    pub text: String,
}

/// One sender on an allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The channel.
    pub channel: String,
    /// The sender.
    pub sender: String,
    /// Unix milliseconds.
    pub added_at: i64,
    /// Who added them (`pairing:ID`, `cli:USER`).
    pub added_by: String,
}

/// The allowlists and pairing requests, in the state store.
pub struct Pairing {
    db: StateStore,
    limits: PairingConfig,
}

impl Pairing {
    /// Pairing on `db` under `limits`.
    pub fn new(db: StateStore, limits: PairingConfig) -> Pairing {
        Pairing { db, limits }
    }

    /// Decides about a direct message from `sender` on `gate.channel` at `now` (unix
    /// ms). The config's allowlist is in `gate`; the store's is consulted too.
    pub fn decide(
        &self,
        gate: &Gate<'_>,
        sender: &str,
        display: &str,
        text: &str,
        now: i64,
    ) -> Result<Decision> {
        let Gate {
            channel,
            policy,
            allow_from,
        } = *gate;
        match policy {
            DmPolicy::Disabled => return Ok(Decision::Ignore(Refusal::Disabled)),
            DmPolicy::Open => return Ok(Decision::Admit),
            DmPolicy::Allowlist | DmPolicy::Pairing => {}
        }
        if allow_from.iter().any(|a| a == sender) || self.allowed(channel, sender)? {
            return Ok(Decision::Admit);
        }
        if policy == DmPolicy::Allowlist {
            return Ok(Decision::Ignore(Refusal::NotAllowed));
        }
        let hour = now - 3_600_000;
        let strikes = self.strikes(channel, Some(sender), hour)?;
        if let Some(waiting) = self.waiting(channel, sender, now)? {
            if looks_like_code(text) {
                // Senders cannot approve themselves; a code sent here is a guess, or their own
                // pasted back: either way it counts.
                self.strike(channel, sender, "wrong_code", now)?;
                if strikes >= i64::from(self.limits.per_sender_per_hour) {
                    return Ok(Decision::Ignore(Refusal::RateLimited));
                }
                return Ok(Decision::Tell(
                    "Codes are approved by the owner of this assistant, not sent here. Give yours to them."
                        .into(),
                ));
            }
            self.hold(&waiting.id, channel, sender, text, now)?;
            return Ok(Decision::Waiting);
        }
        if strikes >= i64::from(self.limits.per_sender_per_hour)
            || self.strikes(channel, None, hour)? >= i64::from(self.limits.per_channel_per_hour)
        {
            return Ok(Decision::Ignore(Refusal::RateLimited));
        }
        if looks_like_code(text) {
            self.strike(channel, sender, "wrong_code", now)?;
            return Ok(Decision::Tell(
                "That code is not one this assistant is waiting for.".into(),
            ));
        }
        self.strike(channel, sender, "request", now)?;
        if self.pending_count(channel, now)? >= i64::from(self.limits.max_pending) {
            return Ok(Decision::Tell(
                "The owner of this assistant has too many pairing requests waiting; try again later."
                    .into(),
            ));
        }
        let code = new_code();
        let request = Request {
            id: new_id(),
            channel: channel.into(),
            sender: sender.into(),
            display: display.into(),
            preview: preview(text),
            created_at: now,
            expires_at: now + ms(self.limits.code_ttl),
            state: "pending".into(),
        };
        self.db.connection().execute(
            "INSERT INTO pairing_requests
                 (id, channel, sender, display, preview, code_hash, created_at, expires_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending')",
            params![
                request.id,
                request.channel,
                request.sender,
                request.display,
                request.preview,
                hash(&code),
                request.created_at,
                request.expires_at
            ],
        )?;
        self.hold(&request.id, channel, sender, text, now)?;
        Ok(Decision::Pair {
            code: shown(&code),
            request,
        })
    }

    /// Approves the request with `code`: its sender joins the allowlist; their held
    /// messages wait for [`Pairing::released`], or are deleted when `keep_held` says no
    /// for the request's channel.
    pub fn approve(
        &self,
        code: &str,
        keep_held: impl FnOnce(&str) -> bool,
        now: i64,
    ) -> Result<Request> {
        let request = self.find_by_code(code, now)?;
        let keep_held = keep_held(&request.channel);
        let conn = self.db.connection();
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "UPDATE pairing_requests SET state = 'approved', decided_at = ?2 WHERE id = ?1",
            params![request.id, now],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO channel_allow (channel, sender, added_at, added_by)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                request.channel,
                request.sender,
                now,
                format!("pairing:{}", request.id)
            ],
        )?;
        if !keep_held {
            tx.execute(
                "DELETE FROM pairing_held WHERE request = ?1",
                params![request.id],
            )?;
        }
        tx.commit()?;
        Ok(Request {
            state: "approved".into(),
            ..request
        })
    }

    /// Denies the request with `code` (or the id `moat pairing list` shows); its held
    /// messages are deleted unseen.
    pub fn deny(&self, code_or_id: &str, now: i64) -> Result<Request> {
        let request = match self.request(code_or_id)? {
            Some(r) if r.state == "pending" => r,
            Some(r) => return Err(PairingError::Used(r.state)),
            None => self.find_by_code(code_or_id, now)?,
        };
        let conn = self.db.connection();
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "UPDATE pairing_requests SET state = 'denied', decided_at = ?2 WHERE id = ?1",
            params![request.id, now],
        )?;
        tx.execute(
            "DELETE FROM pairing_held WHERE request = ?1",
            params![request.id],
        )?;
        tx.commit()?;
        Ok(Request {
            state: "denied".into(),
            ..request
        })
    }

    /// The waiting request whose code is `code`. Every waiting code is compared, in
    /// constant time, so how long this takes says nothing about how close a guess was.
    fn find_by_code(&self, code: &str, now: i64) -> Result<Request> {
        let wanted = hash(&normalized(code));
        let conn = self.db.connection();
        let mut stmt = conn.prepare(
            "SELECT id, code_hash, state, expires_at FROM pairing_requests
             WHERE state IN ('pending', 'approved', 'denied', 'expired')
               AND created_at > ?1",
        )?;
        // Codes older than a day are never matched again (approved, denied or not).
        let rows = stmt.query_map(params![now - 86_400_000], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut found = None;
        for row in rows {
            let (id, stored, state, expires_at) = row?;
            if bool::from(stored.as_bytes().ct_eq(wanted.as_bytes())) {
                found = Some((id, state, expires_at));
            }
        }
        let Some((id, state, expires_at)) = found else {
            return Err(PairingError::NoSuchCode);
        };
        match state.as_str() {
            "pending" if expires_at > now => self.request(&id)?.ok_or(PairingError::NoSuchCode),
            "pending" | "expired" => Err(PairingError::Expired),
            other => Err(PairingError::Used(other.into())),
        }
    }

    /// One request by id.
    pub fn request(&self, id: &str) -> Result<Option<Request>> {
        Ok(self
            .db
            .connection()
            .query_row(
                &format!("SELECT {REQUEST_COLUMNS} FROM pairing_requests WHERE id = ?1"),
                params![id],
                request_row,
            )
            .optional()?)
    }

    /// The requests waiting for the owner, oldest first.
    pub fn pending(&self, now: i64) -> Result<Vec<Request>> {
        let conn = self.db.connection();
        let mut stmt = conn.prepare(&format!(
            "SELECT {REQUEST_COLUMNS} FROM pairing_requests
             WHERE state = 'pending' AND expires_at > ?1 ORDER BY created_at"
        ))?;
        let rows = stmt.query_map(params![now], request_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Marks the requests whose time is over as expired and deletes what they held;
    /// the ones it marked.
    pub fn expire(&self, now: i64) -> Result<Vec<Request>> {
        let conn = self.db.connection();
        let expired: Vec<Request> = {
            let mut stmt = conn.prepare(&format!(
                "SELECT {REQUEST_COLUMNS} FROM pairing_requests
                 WHERE state = 'pending' AND expires_at <= ?1"
            ))?;
            let rows = stmt.query_map(params![now], request_row)?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let tx = conn.unchecked_transaction()?;
        for r in &expired {
            tx.execute(
                "UPDATE pairing_requests SET state = 'expired', decided_at = ?2 WHERE id = ?1",
                params![r.id, now],
            )?;
            tx.execute("DELETE FROM pairing_held WHERE request = ?1", params![r.id])?;
        }
        // Strikes older than the window they count in are of no more use.
        tx.execute(
            "DELETE FROM pairing_strikes WHERE at < ?1",
            params![now - 3_600_000],
        )?;
        tx.commit()?;
        Ok(expired
            .into_iter()
            .map(|r| Request {
                state: "expired".into(),
                ..r
            })
            .collect())
    }

    /// Takes the held messages of approved senders on `channel`, oldest first; each is
    /// handed out once.
    pub fn released(&self, channel: &str) -> Result<Vec<Released>> {
        let conn = self.db.connection();
        let tx = conn.unchecked_transaction()?;
        let taken: Vec<(i64, Released)> = {
            let mut stmt = tx.prepare(
                "SELECT h.id, h.sender, h.text FROM pairing_held h
                 JOIN pairing_requests r ON r.id = h.request
                 WHERE h.channel = ?1 AND r.state = 'approved' ORDER BY h.id",
            )?;
            let rows = stmt.query_map(params![channel], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Released {
                        sender: r.get(1)?,
                        text: r.get(2)?,
                    },
                ))
            })?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        for (id, _) in &taken {
            tx.execute("DELETE FROM pairing_held WHERE id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(taken.into_iter().map(|(_, r)| r).collect())
    }

    /// Counts a wrong code given by `sender` on `channel` (an owner's `/pair approve`);
    /// whether they may still try this hour.
    pub fn wrong_code(&self, channel: &str, sender: &str, now: i64) -> Result<bool> {
        self.strike(channel, sender, "wrong_code", now)?;
        self.may_try(channel, sender, now)
    }

    /// Whether `sender` on `channel` is under the per-sender limit of this hour.
    pub fn may_try(&self, channel: &str, sender: &str, now: i64) -> Result<bool> {
        Ok(self.strikes(channel, Some(sender), now - 3_600_000)?
            < i64::from(self.limits.per_sender_per_hour))
    }

    /// Whether `sender` is on `channel`'s allowlist in the store.
    pub fn allowed(&self, channel: &str, sender: &str) -> Result<bool> {
        Ok(self
            .db
            .connection()
            .query_row(
                "SELECT 1 FROM channel_allow WHERE channel = ?1 AND sender = ?2",
                params![channel, sender],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The stored allowlists (one channel's, or all), by channel then sender.
    pub fn allowlist(&self, channel: Option<&str>) -> Result<Vec<Allowed>> {
        let conn = self.db.connection();
        let mut stmt = conn.prepare(
            "SELECT channel, sender, added_at, added_by FROM channel_allow
             WHERE ?1 IS NULL OR channel = ?1 ORDER BY channel, sender",
        )?;
        let rows = stmt.query_map(params![channel], |r| {
            Ok(Allowed {
                channel: r.get(0)?,
                sender: r.get(1)?,
                added_at: r.get(2)?,
                added_by: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Adds `sender` to `channel`'s allowlist; false when they were on it already.
    pub fn allow(&self, channel: &str, sender: &str, by: &str, now: i64) -> Result<bool> {
        let n = self.db.connection().execute(
            "INSERT OR IGNORE INTO channel_allow (channel, sender, added_at, added_by)
             VALUES (?1, ?2, ?3, ?4)",
            params![channel, sender, now, by],
        )?;
        Ok(n > 0)
    }

    /// Removes `sender` from `channel`'s allowlist; false when they were not on it.
    pub fn disallow(&self, channel: &str, sender: &str) -> Result<bool> {
        let n = self.db.connection().execute(
            "DELETE FROM channel_allow WHERE channel = ?1 AND sender = ?2",
            params![channel, sender],
        )?;
        Ok(n > 0)
    }

    fn waiting(&self, channel: &str, sender: &str, now: i64) -> Result<Option<Request>> {
        Ok(self
            .db
            .connection()
            .query_row(
                &format!(
                    "SELECT {REQUEST_COLUMNS} FROM pairing_requests
                     WHERE channel = ?1 AND sender = ?2 AND state = 'pending' AND expires_at > ?3"
                ),
                params![channel, sender, now],
                request_row,
            )
            .optional()?)
    }

    fn pending_count(&self, channel: &str, now: i64) -> Result<i64> {
        Ok(self.db.connection().query_row(
            "SELECT COUNT(*) FROM pairing_requests
             WHERE channel = ?1 AND state = 'pending' AND expires_at > ?2",
            params![channel, now],
            |r| r.get(0),
        )?)
    }

    /// Holds `text` for the request, unless `max_held` messages are held already.
    fn hold(&self, request: &str, channel: &str, sender: &str, text: &str, now: i64) -> Result<()> {
        let conn = self.db.connection();
        let held: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pairing_held WHERE request = ?1",
            params![request],
            |r| r.get(0),
        )?;
        if held < i64::from(self.limits.max_held) {
            conn.execute(
                "INSERT INTO pairing_held (request, channel, sender, text, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![request, channel, sender, text, now],
            )?;
        }
        Ok(())
    }

    fn strike(&self, channel: &str, sender: &str, kind: &str, now: i64) -> Result<()> {
        self.db.connection().execute(
            "INSERT INTO pairing_strikes (channel, sender, at, kind) VALUES (?1, ?2, ?3, ?4)",
            params![channel, sender, now, kind],
        )?;
        Ok(())
    }

    fn strikes(&self, channel: &str, sender: Option<&str>, since: i64) -> Result<i64> {
        Ok(self.db.connection().query_row(
            "SELECT COUNT(*) FROM pairing_strikes
             WHERE channel = ?1 AND (?2 IS NULL OR sender = ?2) AND at > ?3
               AND (?2 IS NOT NULL OR kind = 'request')",
            params![channel, sender, since],
            |r| r.get(0),
        )?)
    }
}

const REQUEST_COLUMNS: &str =
    "id, channel, sender, display, preview, created_at, expires_at, state";

fn request_row(r: &moat_state::rusqlite::Row<'_>) -> moat_state::rusqlite::Result<Request> {
    Ok(Request {
        id: r.get(0)?,
        channel: r.get(1)?,
        sender: r.get(2)?,
        display: r.get(3)?,
        preview: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        state: r.get(7)?,
    })
}

/// A fresh code: 8 characters, 5 random bits each.
pub(crate) fn new_code() -> String {
    let mut bytes = [0u8; CODE_LEN];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect()
}

fn new_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    format!("p_{}", hex::encode(bytes))
}

/// `ABCDEFGH` as people read it: `ABCD-EFGH`.
pub(crate) fn shown(code: &str) -> String {
    format!("{}-{}", &code[..4], &code[4..])
}

/// A code as typed (any case, with or without the dash or spaces) in its stored form.
pub(crate) fn normalized(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Whether `text` is only a code, as a sender pasting or guessing one would send it.
fn looks_like_code(text: &str) -> bool {
    let n = normalized(text.trim());
    n.len() == CODE_LEN && n.bytes().all(|b| ALPHABET.contains(&b))
}

fn hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

fn preview(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = flat.chars().take(PREVIEW_CHARS).collect();
    if flat.chars().count() > PREVIEW_CHARS {
        out.push('…');
    }
    out
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairing(limits: PairingConfig) -> (tempfile::TempDir, Pairing) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateStore::open(&dir.path().join("state.db")).unwrap();
        (dir, Pairing::new(db, limits))
    }

    fn ask(p: &Pairing, sender: &str, text: &str, now: i64) -> Decision {
        let gate = Gate {
            channel: "irc",
            policy: DmPolicy::Pairing,
            allow_from: &[],
        };
        p.decide(&gate, sender, sender, text, now).unwrap()
    }

    fn code_of(d: &Decision) -> String {
        match d {
            Decision::Pair { code, .. } => code.clone(),
            other => panic!("no code: {other:?}"),
        }
    }

    #[test]
    fn codes_carry_forty_bits_without_look_alikes() {
        let mut distinct = std::collections::BTreeSet::new();
        for b in ALPHABET {
            assert!(!b"01IO".contains(b));
            distinct.insert(*b);
        }
        // 32 distinct, equally likely symbols (`& 31` of a uniform byte): 8 x 5 = 40 bits.
        assert_eq!(distinct.len(), 32);
        let c = new_code();
        assert_eq!(c.len(), 8);
        assert!(looks_like_code(&shown(&c)));
        assert!(looks_like_code(&shown(&c).to_lowercase()));
        assert!(!looks_like_code("hello there"));
    }

    #[test]
    fn an_unknown_sender_is_held_until_approved_then_released_once() {
        let (_d, p) = pairing(PairingConfig::default());
        let first = ask(&p, "alice", "hello, it's Alice", 1_000);
        let code = code_of(&first);
        assert_eq!(ask(&p, "alice", "are you there?", 2_000), Decision::Waiting);
        assert_eq!(p.pending(3_000).unwrap().len(), 1);
        assert!(p.released("irc").unwrap().is_empty());
        let r = p.approve(&code.to_lowercase(), |_| true, 3_000).unwrap();
        assert_eq!(r.sender, "alice");
        assert_eq!(ask(&p, "alice", "hi again", 4_000), Decision::Admit);
        let released = p.released("irc").unwrap();
        assert_eq!(
            released.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
            ["hello, it's Alice", "are you there?"]
        );
        assert!(p.released("irc").unwrap().is_empty(), "handed out once");
        assert!(matches!(
            p.approve(&code, |_| true, 5_000),
            Err(PairingError::Used(s)) if s == "approved"
        ));
    }

    #[test]
    fn expired_denied_and_wrong_codes_are_refused() {
        let (_d, p) = pairing(PairingConfig::default());
        let code = code_of(&ask(&p, "bob", "hi", 0));
        let late = ms(PairingConfig::default().code_ttl) + 1;
        assert!(matches!(
            p.approve(&code, |_| true, late),
            Err(PairingError::Expired)
        ));
        assert_eq!(p.expire(late).unwrap().len(), 1);
        assert!(matches!(
            p.approve(&code, |_| true, late),
            Err(PairingError::Expired)
        ));
        let code = code_of(&ask(&p, "carol", "hi", late));
        p.deny(&code, late + 1).unwrap();
        assert!(matches!(
            p.approve(&code, |_| true, late + 2),
            Err(PairingError::Used(_))
        ));
        assert!(matches!(
            p.approve("AAAA-AAAA", |_| true, late),
            Err(PairingError::NoSuchCode)
        ));
        assert!(!p.allowed("irc", "carol").unwrap());
    }

    #[test]
    fn drop_on_approve_deletes_what_was_held() {
        let (_d, p) = pairing(PairingConfig::default());
        let code = code_of(&ask(&p, "dave", "secret plans", 0));
        p.approve(&code, |_| false, 1).unwrap();
        assert!(p.released("irc").unwrap().is_empty());
    }

    #[test]
    fn guessing_and_flooding_are_rate_limited() {
        let limits = PairingConfig::default();
        let (_d, p) = pairing(limits.clone());
        let mut told = 0;
        for i in 0..10 {
            match ask(&p, "mallory", "ABCD-EFGH", i) {
                Decision::Tell(_) => told += 1,
                Decision::Ignore(Refusal::RateLimited) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(told, limits.per_sender_per_hour);
        assert_eq!(
            ask(&p, "mallory", "a real message", 20),
            Decision::Ignore(Refusal::RateLimited)
        );
        // At most max_pending codes wait on a channel.
        for (i, who) in ["a", "b", "c"].iter().enumerate() {
            code_of(&ask(&p, who, "hi", 100 + i as i64));
        }
        assert!(matches!(ask(&p, "d", "hi", 200), Decision::Tell(t) if t.contains("too many")));
        // An hour later the sender may ask again.
        assert!(matches!(
            ask(&p, "mallory", "hi", 3_700_000),
            Decision::Pair { .. }
        ));
    }

    #[test]
    fn policies_other_than_pairing() {
        let (_d, p) = pairing(PairingConfig::default());
        let d = |policy, allow_from: &[String]| {
            let gate = Gate {
                channel: "irc",
                policy,
                allow_from,
            };
            p.decide(&gate, "eve", "eve", "hi", 0).unwrap()
        };
        assert_eq!(
            d(DmPolicy::Disabled, &[]),
            Decision::Ignore(Refusal::Disabled)
        );
        assert_eq!(d(DmPolicy::Open, &[]), Decision::Admit);
        assert_eq!(
            d(DmPolicy::Allowlist, &[]),
            Decision::Ignore(Refusal::NotAllowed)
        );
        assert_eq!(d(DmPolicy::Allowlist, &["eve".into()]), Decision::Admit);
        p.allow("irc", "eve", "cli:test", 0).unwrap();
        assert_eq!(d(DmPolicy::Allowlist, &[]), Decision::Admit);
        assert!(p.disallow("irc", "eve").unwrap());
        assert_eq!(
            d(DmPolicy::Allowlist, &[]),
            Decision::Ignore(Refusal::NotAllowed)
        );
    }
}
