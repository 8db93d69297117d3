//! moat-state: the embedded state store, SQLite at `MOAT_HOME/state.db` in WAL mode, with
//! versioned migrations kept in code.
//!
//! Its own crate so that only the rooms that store something (the gateway's usage and
//! stored responses, and the binary) compile SQLite; the vault, the audit log and the
//! network layer never do. Each table says which room owns it.
//!
//! The schema version is SQLite's `user_version`. Each migration runs in its own
//! transaction together with the version bump, so a crash leaves the database at one
//! version or the next. A database from a newer moat is refused rather than guessed at.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

// The one SQLite the workspace links, re-exported so its users name the same version.
pub use rusqlite;

/// Schema migrations, in order; migration `i` takes the schema from version `i` to `i + 1`.
/// Append only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: key/value facts about this installation (first start, last start, ...).
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY NOT NULL,
         value TEXT NOT NULL
     ) STRICT;",
    // 2: responses kept for the OpenAI Responses API (`store`), owned by moat-llm: the
    // conversation's input items and the response object, both JSON.
    "CREATE TABLE responses (
         id         TEXT PRIMARY KEY NOT NULL,
         created_at INTEGER NOT NULL,
         input      TEXT NOT NULL,
         response   TEXT NOT NULL
     ) STRICT;
     CREATE INDEX responses_created_at ON responses (created_at);",
    // 3: one row per gateway request, owned by moat-llm's usage recorder: who served it,
    // what it cost and how long it took. `at` is unix milliseconds; an unknown token count
    // is NULL (an upstream that reported none), never a guess.
    "CREATE TABLE usage (
         id            INTEGER PRIMARY KEY,
         at            INTEGER NOT NULL,
         backend       TEXT NOT NULL,
         account       TEXT NOT NULL,
         model         TEXT NOT NULL,
         status        INTEGER NOT NULL,
         input_tokens  INTEGER,
         output_tokens INTEGER,
         cached_tokens INTEGER,
         ttfb_ms       INTEGER,
         total_ms      INTEGER NOT NULL,
         bytes         INTEGER NOT NULL,
         error_class   TEXT
     ) STRICT;
     CREATE INDEX usage_at ON usage (at);",
    // 4: the backend with native Responses, and its account, that made a stored response
    // and hold it too (so a chained request can go to them as it came, and a delete
    // reaches them); NULL when moat made the response by translation.
    "ALTER TABLE responses ADD COLUMN backend TEXT;
     ALTER TABLE responses ADD COLUMN account TEXT;",
    // 5: the assistant (moat-agent). A session per (channel, sender) with its transcript
    // (Messages JSON); the trust level per domain with the evidence counted towards the
    // next, and every change of it; calls waiting for the owner; the owner's notes.
    "CREATE TABLE agent_sessions (
         id         TEXT PRIMARY KEY NOT NULL,
         channel    TEXT NOT NULL,
         sender     TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         active_at  INTEGER NOT NULL,
         transcript TEXT NOT NULL,
         tokens     INTEGER NOT NULL,
         UNIQUE (channel, sender)
     ) STRICT;
     CREATE TABLE agent_trust (
         domain    TEXT PRIMARY KEY NOT NULL,
         level     INTEGER NOT NULL,
         successes INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE agent_trust_history (
         id         INTEGER PRIMARY KEY,
         at         INTEGER NOT NULL,
         domain     TEXT NOT NULL,
         from_level INTEGER NOT NULL,
         to_level   INTEGER NOT NULL,
         reason     TEXT NOT NULL
     ) STRICT;
     CREATE TABLE agent_approvals (
         id         TEXT PRIMARY KEY NOT NULL,
         session    TEXT NOT NULL,
         tool       TEXT NOT NULL,
         arguments  TEXT NOT NULL,
         reason     TEXT NOT NULL,
         risk       TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL,
         state      TEXT NOT NULL
     ) STRICT;
     CREATE TABLE agent_notes (
         id    INTEGER PRIMARY KEY,
         owner TEXT NOT NULL,
         at    INTEGER NOT NULL,
         text  TEXT NOT NULL
     ) STRICT;",
    // 6: the channels (moat-channels). Senders the owner admitted per channel; pairing
    // requests (the code only as its SHA-256) with the messages held until the owner
    // decides; and each code request or wrong code, which the rate limits count.
    "CREATE TABLE channel_allow (
         channel  TEXT NOT NULL,
         sender   TEXT NOT NULL,
         added_at INTEGER NOT NULL,
         added_by TEXT NOT NULL,
         PRIMARY KEY (channel, sender)
     ) STRICT;
     CREATE TABLE pairing_requests (
         id         TEXT PRIMARY KEY NOT NULL,
         channel    TEXT NOT NULL,
         sender     TEXT NOT NULL,
         display    TEXT NOT NULL,
         preview    TEXT NOT NULL,
         code_hash  TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL,
         state      TEXT NOT NULL,
         decided_at INTEGER
     ) STRICT;
     CREATE INDEX pairing_requests_state ON pairing_requests (state, channel);
     CREATE TABLE pairing_held (
         id          INTEGER PRIMARY KEY,
         request     TEXT NOT NULL,
         channel     TEXT NOT NULL,
         sender      TEXT NOT NULL,
         text        TEXT NOT NULL,
         received_at INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE pairing_strikes (
         channel TEXT NOT NULL,
         sender  TEXT NOT NULL,
         at      INTEGER NOT NULL,
         kind    TEXT NOT NULL
     ) STRICT;
     CREATE INDEX pairing_strikes_at ON pairing_strikes (channel, at);",
    // 7: the radio station's programme: planned, playing and played items (the log), so a
    // restarted station resumes at the next item and keeps its no-repeat window.
    "CREATE TABLE radio_log (
         seq         INTEGER PRIMARY KEY,
         ord         INTEGER NOT NULL,
         track_id    TEXT NOT NULL,
         title       TEXT NOT NULL,
         artist      TEXT NOT NULL,
         album       TEXT NOT NULL,
         cover_id    TEXT,
         duration_ms INTEGER NOT NULL,
         suffix      TEXT NOT NULL,
         replay_gain REAL,
         origin      TEXT NOT NULL,
         state       TEXT NOT NULL,
         aired_at    INTEGER
     ) STRICT;
     CREATE INDEX radio_log_state ON radio_log (state, ord);
     CREATE INDEX radio_log_aired ON radio_log (track_id, aired_at);",
];

/// Runs `f`, which blocks on SQLite: on a multi-threaded tokio runtime's worker inside
/// `block_in_place`, so the worker's other tasks move to other workers meanwhile;
/// anywhere else (a plain thread, a current-thread runtime) as it is.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Errors opening or using the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite refused an operation.
    #[error("state store {path}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file could not be created.
    #[error("cannot create state store {path}")]
    Create {
        /// The database file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer moat.
    #[error(
        "state store {path} has schema version {found}, newer than this moat knows ({known}); upgrade moat, or move the file aside to start fresh"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// The newest version this build knows.
        known: u32,
    },
}

/// An open state store.
#[derive(Debug)]
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
}

impl StateStore {
    /// Opens (creating if needed, mode 0600) and migrates the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        // SQLite creates its -wal and -shm files with the database file's mode. An existing
        // file is not opened here: closing that descriptor would drop the locks this
        // process's other connections hold on it (see `create_private_file_if_missing`).
        moat_core::atomic::create_private_file_if_missing(path).map_err(|source| {
            StateError::Create {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let err = |source| StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        // SQLite's page cache grows to 2 MiB per connection by default; this store's reads
        // are point lookups of recent rows, and the OS caches the file anyway.
        conn.pragma_update(None, "cache_size", "-512")
            .map_err(err)?;
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn migrate(&mut self) -> Result<(), StateError> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StateError::TooNew {
                path: self.path.clone(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found > 0 && found < SCHEMA_VERSION {
            let kept = self.backup(found)?;
            tracing::warn!(
                from = found,
                to = SCHEMA_VERSION,
                "{} is from an older moat: migrating it in place; the database as it was is kept at {}",
                self.path.display(),
                kept.display()
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let to = i as u32 + 1;
            let tx = self.conn.transaction().map_err(|e| StateError::Sqlite {
                path: self.path.clone(),
                source: e,
            })?;
            tx.execute_batch(sql)
                .and_then(|()| tx.pragma_update(None, "user_version", to))
                .and_then(|()| tx.commit())
                .map_err(|e| StateError::Sqlite {
                    path: self.path.clone(),
                    source: e,
                })?;
            tracing::debug!(version = to, "state store migrated");
        }
        Ok(())
    }

    /// Copies the database, whole and consistent, to `PATH.vN.bak` before a migration.
    fn backup(&self, version: u32) -> Result<PathBuf, StateError> {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".v{version}.bak"));
        let kept = PathBuf::from(name);
        let _ = std::fs::remove_file(&kept);
        self.conn
            .execute("VACUUM INTO ?1", [kept.to_string_lossy()])
            .map_err(|e| self.err(e))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o600));
        Ok(kept)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StateError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// The schema version of the database at `path`, read without opening it for writing
    /// or migrating it (`moat doctor`); None when there is none or it cannot be read.
    pub fn schema_version_at(path: &Path) -> Option<u32> {
        if !path.is_file() {
            return None;
        }
        let c = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .ok()
    }

    /// Sets a `meta` fact.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Reads a `meta` fact.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Folds the WAL back into the main file; called at shutdown so the store is whole.
    pub fn checkpoint(&self) -> Result<(), StateError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }

    /// The underlying connection, for rooms that own tables of their own.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_older_database_is_kept_aside_then_migrated_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let old = SCHEMA_VERSION - 1;
        {
            // What the previous moat left: every migration but the last.
            let c = rusqlite::Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..old as usize] {
                c.execute_batch(sql).unwrap();
            }
            c.pragma_update(None, "user_version", old).unwrap();
            c.execute("INSERT INTO meta (key, value) VALUES ('kept', 'yes')", [])
                .unwrap();
        }
        let s = StateStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.meta("kept").unwrap().as_deref(), Some("yes"));
        let kept = dir.path().join(format!("state.db.v{old}.bak"));
        let backup = rusqlite::Connection::open(&kept).unwrap();
        let v: u32 = backup
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, old);
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Opened again at the current version: no new copy.
        drop(s);
        std::fs::remove_file(&kept).unwrap();
        StateStore::open(&path).unwrap();
        assert!(!kept.exists());
    }

    #[test]
    fn opens_in_wal_mode_migrates_once_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let s = StateStore::open(&path).unwrap();
            assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
            let mode: String = s
                .connection()
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            s.set_meta("first_start", "now").unwrap();
            s.checkpoint().unwrap();
        }
        let s = StateStore::open(&path).unwrap();
        assert_eq!(s.meta("first_start").unwrap().as_deref(), Some("now"));
        assert_eq!(s.meta("missing").unwrap(), None);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(StateStore::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 5)
            .unwrap();
        drop(c);
        let err = StateStore::open(&path).unwrap_err();
        assert!(matches!(err, StateError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("upgrade moat"));
    }

    #[test]
    fn refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = StateStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("state.db"), "{err}");
    }
}
