//! The assistant's rows in the state store: sessions, trust, approvals and notes.
//!
//! Blocking calls on one SQLite connection; the loop runs them on tokio's blocking pool.

use std::time::Duration;

use moat_state::StateStore;
use moat_state::rusqlite::{OptionalExtension, params};
use serde_json::Value;

use crate::trust::{Level, Levels};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("the state store failed: {0}")]
    Sqlite(#[from] moat_state::rusqlite::Error),
    /// A stored transcript is not JSON.
    #[error("a stored transcript is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    /// What was asked for is not there.
    #[error("{0}")]
    NotFound(String),
}

type Result<T> = std::result::Result<T, StoreError>;

/// One conversation: a channel's sender and what was said.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Its id (`s_` and 16 hex digits).
    pub id: String,
    /// The channel it is on (`chat`, `web`, `matrix`...).
    pub channel: String,
    /// Who it is with, as the channel names them.
    pub sender: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of the last turn.
    pub active_at: i64,
    /// The Messages-format history (`[{role, content}]`).
    pub transcript: Vec<Value>,
    /// Tokens the model used in it.
    pub tokens: i64,
}

/// A tool call waiting for the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Its id, which the owner approves or denies by.
    pub id: String,
    /// The session it came from.
    pub session: String,
    /// The tool.
    pub tool: String,
    /// Its arguments, redacted, as JSON text.
    pub arguments: String,
    /// Why it waits.
    pub reason: String,
    /// The risk, as the gate sees it (`low`, `medium`, `high`).
    pub risk: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds after which it is denied.
    pub expires_at: i64,
    /// `pending`, `approved`, `denied` or `expired`.
    pub state: String,
}

/// One change of a domain's trust level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustChange {
    /// Unix milliseconds.
    pub at: i64,
    /// The domain.
    pub domain: String,
    /// The level before.
    pub from: u8,
    /// The level after.
    pub to: u8,
    /// Why, with the evidence.
    pub reason: String,
}

/// The assistant's tables.
pub struct AgentStore {
    db: StateStore,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A fresh random id with `prefix`.
pub fn fresh_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    // The OS random source failing leaves zeros; ids then only need the time to differ.
    let _ = getrandom::fill(&mut bytes);
    let n = u64::from_le_bytes(bytes) ^ (now_ms() as u64);
    format!("{prefix}{n:016x}")
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl AgentStore {
    /// The tables in `db` (created by its migrations).
    pub fn new(db: StateStore) -> AgentStore {
        AgentStore { db }
    }

    /// The session with `sender` on `channel`, started afresh when it was idle longer
    /// than `idle` (its old transcript is gone).
    pub fn session(&self, channel: &str, sender: &str, idle: Duration) -> Result<Session> {
        let now = now_ms();
        let conn = self.db.connection();
        let found = conn
            .query_row(
                "SELECT id, created_at, active_at, transcript, tokens FROM agent_sessions
                 WHERE channel = ?1 AND sender = ?2",
                params![channel, sender],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?;
        if let Some((id, created_at, active_at, transcript, tokens)) = found
            && now.saturating_sub(active_at) <= ms(idle)
        {
            return Ok(Session {
                id,
                channel: channel.into(),
                sender: sender.into(),
                created_at,
                active_at,
                transcript: serde_json::from_str(&transcript)?,
                tokens,
            });
        }
        let session = Session {
            id: fresh_id("s_"),
            channel: channel.into(),
            sender: sender.into(),
            created_at: now,
            active_at: now,
            transcript: Vec::new(),
            tokens: 0,
        };
        conn.execute(
            "INSERT INTO agent_sessions (id, channel, sender, created_at, active_at, transcript, tokens)
             VALUES (?1, ?2, ?3, ?4, ?4, '[]', 0)
             ON CONFLICT (channel, sender) DO UPDATE SET
               id = excluded.id, created_at = excluded.created_at,
               active_at = excluded.active_at, transcript = '[]', tokens = 0",
            params![session.id, channel, sender, now],
        )?;
        Ok(session)
    }

    /// Saves a session's transcript and token count, and marks it active now.
    pub fn save(&self, session: &Session) -> Result<()> {
        let transcript = serde_json::to_string(&session.transcript)?;
        self.db.connection().execute(
            "UPDATE agent_sessions SET transcript = ?2, tokens = ?3, active_at = ?4 WHERE id = ?1",
            params![session.id, transcript, session.tokens, now_ms()],
        )?;
        Ok(())
    }

    /// Every session, most recently active first.
    pub fn sessions(&self) -> Result<Vec<Session>> {
        let conn = self.db.connection();
        let mut stmt = conn.prepare(
            "SELECT id, channel, sender, created_at, active_at, transcript, tokens
             FROM agent_sessions ORDER BY active_at DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, channel, sender, created_at, active_at, transcript, tokens) = row?;
            out.push(Session {
                id,
                channel,
                sender,
                created_at,
                active_at,
                transcript: serde_json::from_str(&transcript)?,
                tokens,
            });
        }
        Ok(out)
    }

    /// Forgets a session (its transcript is deleted); false if there was none.
    pub fn forget(&self, id: &str) -> Result<bool> {
        let n = self
            .db
            .connection()
            .execute("DELETE FROM agent_sessions WHERE id = ?1", params![id])?;
        Ok(n > 0)
    }

    /// Deletes every conversation `sender` has on `channel` (they were removed from its
    /// allowlist); how many there were.
    pub fn forget_sender(&self, channel: &str, sender: &str) -> Result<usize> {
        Ok(self.db.connection().execute(
            "DELETE FROM agent_sessions WHERE channel = ?1 AND sender = ?2",
            params![channel, sender],
        )?)
    }

    /// The levels in force: `base` (the config's) with the changes made since.
    pub fn levels(&self, mut base: Levels) -> Result<Levels> {
        let conn = self.db.connection();
        let mut stmt = conn.prepare("SELECT domain, level FROM agent_trust")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (domain, level) = row?;
            if let Some(level) = u8::try_from(level).ok().and_then(Level::new) {
                // A stored level above a ceiling lowered since is capped by the ceiling.
                let capped = level.min(base.ceiling(&domain));
                let _ = base.set(&domain, capped);
            }
        }
        Ok(base)
    }

    /// Records a level change with its reason (the evidence), resetting the domain's
    /// count of successes.
    pub fn set_level(&self, domain: &str, from: Level, to: Level, reason: &str) -> Result<()> {
        let conn = self.db.connection();
        conn.execute_batch("BEGIN")?;
        let result = (|| {
            conn.execute(
                "INSERT INTO agent_trust (domain, level, successes) VALUES (?1, ?2, 0)
                 ON CONFLICT (domain) DO UPDATE SET level = excluded.level, successes = 0",
                params![domain, to.get()],
            )?;
            conn.execute(
                "INSERT INTO agent_trust_history (at, domain, from_level, to_level, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now_ms(), domain, from.get(), to.get(), reason],
            )?;
            Ok::<_, moat_state::rusqlite::Error>(())
        })();
        match result {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Counts one approved, successful call in `domain` at `level`; the count so far.
    pub fn success(&self, domain: &str, level: Level) -> Result<u32> {
        let conn = self.db.connection();
        conn.execute(
            "INSERT INTO agent_trust (domain, level, successes) VALUES (?1, ?2, 1)
             ON CONFLICT (domain) DO UPDATE SET successes = successes + 1",
            params![domain, level.get()],
        )?;
        let n: i64 = conn.query_row(
            "SELECT successes FROM agent_trust WHERE domain = ?1",
            params![domain],
            |r| r.get(0),
        )?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Starts a domain's count of successes afresh (after a denial).
    pub fn reset_successes(&self, domain: &str) -> Result<()> {
        self.db.connection().execute(
            "UPDATE agent_trust SET successes = 0 WHERE domain = ?1",
            params![domain],
        )?;
        Ok(())
    }

    /// The level `domain` had before its last change, for a rollback; None when it
    /// never changed.
    pub fn previous_level(&self, domain: &str) -> Result<Option<u8>> {
        let from: Option<i64> = self
            .db
            .connection()
            .query_row(
                "SELECT from_level FROM agent_trust_history WHERE domain = ?1 ORDER BY id DESC LIMIT 1",
                params![domain],
                |r| r.get(0),
            )
            .optional()?;
        Ok(from.and_then(|n| u8::try_from(n).ok()))
    }

    /// Every level change, oldest first; only `domain`'s when given.
    pub fn history(&self, domain: Option<&str>) -> Result<Vec<TrustChange>> {
        let conn = self.db.connection();
        let mut stmt = conn.prepare(
            "SELECT at, domain, from_level, to_level, reason FROM agent_trust_history
             WHERE ?1 IS NULL OR domain = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![domain], |r| {
            Ok(TrustChange {
                at: r.get(0)?,
                domain: r.get(1)?,
                from: u8::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                to: u8::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                reason: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Records a call waiting for the owner.
    pub fn add_pending(&self, p: &Pending) -> Result<()> {
        self.db.connection().execute(
            "INSERT INTO agent_approvals (id, session, tool, arguments, reason, risk, created_at, expires_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending')",
            params![p.id, p.session, p.tool, p.arguments, p.reason, p.risk, p.created_at, p.expires_at],
        )?;
        Ok(())
    }

    /// One approval by id, with a pending one past its time marked expired.
    pub fn approval(&self, id: &str) -> Result<Option<Pending>> {
        self.expire()?;
        Ok(self
            .approvals_where("id = ?1", params![id])?
            .into_iter()
            .next())
    }

    /// The calls waiting for the owner, oldest first.
    pub fn pending(&self) -> Result<Vec<Pending>> {
        self.expire()?;
        self.approvals_where("state = 'pending'", params![])
    }

    /// The owner's answer to a waiting call. Refused when it is not waiting (answered
    /// already, or expired).
    pub fn answer(&self, id: &str, approve: bool) -> Result<Pending> {
        self.expire()?;
        let state = if approve { "approved" } else { "denied" };
        let n = self.db.connection().execute(
            "UPDATE agent_approvals SET state = ?2 WHERE id = ?1 AND state = 'pending'",
            params![id, state],
        )?;
        let found = self.approval(id)?;
        match (n, found) {
            (1, Some(p)) => Ok(p),
            (_, Some(p)) => Err(StoreError::NotFound(format!(
                "approval {id} is not waiting: it was {}",
                p.state
            ))),
            (_, None) => Err(StoreError::NotFound(format!(
                "no approval {id}; `moat approvals list` shows those waiting"
            ))),
        }
    }

    fn expire(&self) -> Result<()> {
        self.db.connection().execute(
            "UPDATE agent_approvals SET state = 'expired' WHERE state = 'pending' AND expires_at < ?1",
            params![now_ms()],
        )?;
        Ok(())
    }

    fn approvals_where(
        &self,
        condition: &str,
        args: impl moat_state::rusqlite::Params,
    ) -> Result<Vec<Pending>> {
        let conn = self.db.connection();
        let mut stmt = conn.prepare(&format!(
            "SELECT id, session, tool, arguments, reason, risk, created_at, expires_at, state
             FROM agent_approvals WHERE {condition} ORDER BY created_at"
        ))?;
        let rows = stmt.query_map(args, |r| {
            Ok(Pending {
                id: r.get(0)?,
                session: r.get(1)?,
                tool: r.get(2)?,
                arguments: r.get(3)?,
                reason: r.get(4)?,
                risk: r.get(5)?,
                created_at: r.get(6)?,
                expires_at: r.get(7)?,
                state: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Adds a note to the owner's memory; its id.
    pub fn add_note(&self, owner: &str, text: &str) -> Result<i64> {
        let conn = self.db.connection();
        conn.execute(
            "INSERT INTO agent_notes (owner, at, text) VALUES (?1, ?2, ?3)",
            params![owner, now_ms(), text],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// The owner's notes, oldest first: (id, text).
    pub fn notes(&self, owner: &str) -> Result<Vec<(i64, String)>> {
        let conn = self.db.connection();
        let mut stmt =
            conn.prepare("SELECT id, text FROM agent_notes WHERE owner = ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![owner], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Deletes one of the owner's notes; false if there was none.
    pub fn delete_note(&self, owner: &str, id: i64) -> Result<bool> {
        let n = self.db.connection().execute(
            "DELETE FROM agent_notes WHERE owner = ?1 AND id = ?2",
            params![owner, id],
        )?;
        Ok(n > 0)
    }
}
