//! The programme: the station's log of items in the state store. Planned items wait in
//! order; one is on air; the rest were aired or skipped. The log is what survives a
//! restart (the station resumes at the next planned item) and what the no-repeat window
//! is judged against.

use std::collections::HashSet;
use std::sync::Mutex;

use moat_state::StateStore;
use moat_state::rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::subsonic::Song;

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the radio's programme in state.db: {0}")]
pub struct LogError(#[from] moat_state::rusqlite::Error);

/// Where an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Asked for by the owner.
    Queued,
    /// Picked by the station from its source.
    Picked,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Queued => "queued",
            Origin::Picked => "picked",
        }
    }
}

/// One item of the programme.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// Its place in the log.
    pub seq: i64,
    /// The song.
    pub song: Song,
    /// Queued or picked.
    pub origin: Origin,
}

/// The log.
#[derive(Debug)]
pub struct Programme {
    db: Mutex<StateStore>,
}

impl Programme {
    /// The log in `db`; an item left on air by a stopped station counts as aired.
    pub fn open(db: StateStore) -> Result<Programme, LogError> {
        db.connection().execute(
            "UPDATE radio_log SET state = 'aired' WHERE state = 'on_air'",
            [],
        )?;
        Ok(Programme { db: Mutex::new(db) })
    }

    /// Runs `f` on the store, off the async worker ([`moat_state::blocking`]).
    fn with<T>(&self, f: impl FnOnce(&StateStore) -> Result<T, LogError>) -> Result<T, LogError> {
        moat_state::blocking(|| {
            f(&self
                .db
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner))
        })
    }

    /// The planned items, in airing order.
    pub fn planned(&self) -> Result<Vec<Item>, LogError> {
        self.with(|db| {
            let mut stmt = db.connection().prepare(
                "SELECT seq, track_id, title, artist, album, cover_id, duration_ms, suffix,
                        replay_gain, origin
                 FROM radio_log WHERE state = 'planned' ORDER BY ord, seq",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Item {
                    seq: r.get(0)?,
                    song: Song {
                        id: r.get(1)?,
                        title: r.get(2)?,
                        artist: r.get(3)?,
                        album: r.get(4)?,
                        cover_art: r.get(5)?,
                        duration_ms: r.get::<_, i64>(6)?.max(0) as u64,
                        suffix: r.get(7)?,
                        track_gain_db: r.get::<_, Option<f64>>(8)?.map(|g| g as f32),
                        genre: None,
                    },
                    origin: if r.get::<_, String>(9)? == "queued" {
                        Origin::Queued
                    } else {
                        Origin::Picked
                    },
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Adds `song` at the end (picked) or after the other queued items (queued).
    pub fn add(&self, song: &Song, origin: Origin) -> Result<Item, LogError> {
        self.with(|db| {
            let c = db.connection();
            let ord: i64 = match origin {
                Origin::Picked => c.query_row(
                    "SELECT COALESCE(MAX(ord), 0) + 1 FROM radio_log",
                    [],
                    |r| r.get(0),
                )?,
                Origin::Queued => {
                    // Just after the last planned queued item (or first of all planned),
                    // the picked ones moved one place down.
                    let after: Option<i64> = c
                        .query_row(
                            "SELECT MAX(ord) FROM radio_log WHERE state = 'planned' AND origin = 'queued'",
                            [],
                            |r| r.get(0),
                        )
                        .optional()?
                        .flatten();
                    let first: Option<i64> = c
                        .query_row(
                            "SELECT MIN(ord) FROM radio_log WHERE state = 'planned'",
                            [],
                            |r| r.get(0),
                        )
                        .optional()?
                        .flatten();
                    let ord = match (after, first) {
                        (Some(a), _) => a + 1,
                        (None, Some(f)) => f,
                        (None, None) => c.query_row(
                            "SELECT COALESCE(MAX(ord), 0) + 1 FROM radio_log",
                            [],
                            |r| r.get(0),
                        )?,
                    };
                    c.execute(
                        "UPDATE radio_log SET ord = ord + 1 WHERE state = 'planned' AND ord >= ?1",
                        params![ord],
                    )?;
                    ord
                }
            };
            c.execute(
                "INSERT INTO radio_log (ord, track_id, title, artist, album, cover_id, duration_ms,
                    suffix, replay_gain, origin, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'planned')",
                params![
                    ord,
                    song.id,
                    song.title,
                    song.artist,
                    song.album,
                    song.cover_art,
                    song.duration_ms as i64,
                    song.suffix,
                    song.track_gain_db.map(f64::from),
                    origin.as_str(),
                ],
            )?;
            Ok(Item {
                seq: c.last_insert_rowid(),
                song: song.clone(),
                origin,
            })
        })
    }

    /// Marks an item on air (now), aired or skipped.
    pub fn mark(&self, seq: i64, state: ItemState, now_unix: i64) -> Result<(), LogError> {
        self.with(|db| {
            let c = db.connection();
            match state {
                ItemState::OnAir => c.execute(
                    "UPDATE radio_log SET state = 'on_air', aired_at = ?2 WHERE seq = ?1",
                    params![seq, now_unix],
                )?,
                ItemState::Aired => c.execute(
                    "UPDATE radio_log SET state = 'aired' WHERE seq = ?1",
                    params![seq],
                )?,
                ItemState::Skipped => c.execute(
                    "UPDATE radio_log SET state = 'skipped', aired_at = COALESCE(aired_at, ?2) WHERE seq = ?1",
                    params![seq, now_unix],
                )?,
            };
            Ok(())
        })
    }

    /// Removes a planned item (a track that could not be played).
    pub fn drop_planned(&self, seq: i64) -> Result<(), LogError> {
        self.with(|db| {
            db.connection().execute(
                "DELETE FROM radio_log WHERE seq = ?1 AND state = 'planned'",
                params![seq],
            )?;
            Ok(())
        })
    }

    /// Track ids aired since `since_unix` or planned now: not to be picked again.
    pub fn recent_ids(&self, since_unix: i64) -> Result<HashSet<String>, LogError> {
        self.with(|db| {
            let mut stmt = db.connection().prepare(
                "SELECT DISTINCT track_id FROM radio_log
                 WHERE state IN ('planned', 'on_air') OR aired_at >= ?1",
            )?;
            let ids = stmt.query_map(params![since_unix], |r| r.get::<_, String>(0))?;
            Ok(ids.collect::<Result<HashSet<_>, _>>()?)
        })
    }

    /// When each of `ids` last aired (unix seconds), for picking the least recent when
    /// the window leaves nothing.
    pub fn last_aired(&self, id: &str) -> Result<Option<i64>, LogError> {
        self.with(|db| {
            Ok(db
                .connection()
                .query_row(
                    "SELECT MAX(aired_at) FROM radio_log WHERE track_id = ?1",
                    params![id],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .optional()?
                .flatten())
        })
    }
}

/// The states an item moves through after planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    /// Playing now.
    OnAir,
    /// Played to its end.
    Aired,
    /// Cut short.
    Skipped,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn song(id: &str) -> Song {
        Song {
            id: id.into(),
            title: format!("T{id}"),
            artist: "A".into(),
            album: "B".into(),
            cover_art: None,
            duration_ms: 5000,
            suffix: "mp3".into(),
            genre: None,
            track_gain_db: None,
        }
    }

    fn open(dir: &tempfile::TempDir) -> Programme {
        Programme::open(StateStore::open(&dir.path().join("state.db")).unwrap()).unwrap()
    }

    #[test]
    fn queued_items_go_before_picked_ones_in_queue_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(&dir);
        p.add(&song("p1"), Origin::Picked).unwrap();
        p.add(&song("p2"), Origin::Picked).unwrap();
        p.add(&song("q1"), Origin::Queued).unwrap();
        p.add(&song("q2"), Origin::Queued).unwrap();
        let ids: Vec<_> = p
            .planned()
            .unwrap()
            .into_iter()
            .map(|i| i.song.id)
            .collect();
        assert_eq!(ids, ["q1", "q2", "p1", "p2"]);
    }

    #[test]
    fn a_restart_resumes_at_the_next_item_and_remembers_what_aired() {
        let dir = tempfile::tempdir().unwrap();
        {
            let p = open(&dir);
            let a = p.add(&song("a"), Origin::Picked).unwrap();
            p.add(&song("b"), Origin::Picked).unwrap();
            p.mark(a.seq, ItemState::OnAir, 1000).unwrap();
        }
        let p = open(&dir);
        let planned: Vec<_> = p
            .planned()
            .unwrap()
            .into_iter()
            .map(|i| i.song.id)
            .collect();
        assert_eq!(planned, ["b"]);
        let recent = p.recent_ids(900).unwrap();
        assert!(recent.contains("a") && recent.contains("b"));
        assert!(!p.recent_ids(2000).unwrap().contains("a"));
        assert_eq!(p.last_aired("a").unwrap(), Some(1000));
    }
}
