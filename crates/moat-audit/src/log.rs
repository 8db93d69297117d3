//! The writer: many producers, one writer thread, a bounded queue, group commit.
//!
//! Producers redact their record and queue it; when the queue is full they wait (nothing is
//! dropped). The writer takes everything queued (up to [`MAX_BATCH`]), encodes it, appends
//! it with one `write` and one `fdatasync`, then rewrites the signed head. Every
//! `checkpoint_every` entries or `checkpoint_interval`, and when the log is closed, it
//! appends a signed checkpoint and hands it to the [`Anchor`] (the vault).
//!
//! Several processes may write one log (the server and `moat vault` commands): each batch
//! is written under an exclusive lock on `audit/lock`, and a writer that finds the log grown
//! by someone else reads the new tail before it continues the chain.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::AuditError;
use crate::entry::{self, GENESIS, Record};
use crate::sign::{AuditKey, Kind, Statement};
use crate::store;

/// The most records one group commit takes.
pub const MAX_BATCH: usize = 8192;
/// A record whose details encode larger than this keeps only a note of their size.
pub const MAX_DETAILS: usize = 64 * 1024;
/// How far back from a segment's end the last entry is looked for.
const TAIL_WINDOW: u64 = 4 * MAX_DETAILS as u64;

/// Where the latest checkpoint is also kept, out of reach of whoever can edit the log.
pub trait Anchor: Send {
    /// Stores `checkpoint` as the latest.
    fn store(&mut self, checkpoint: &Statement) -> Result<(), AnchorError>;
}

/// Why an [`Anchor`] could not keep a checkpoint: the store's own error, whose message
/// says what to do (a vault's, for moat).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AnchorError(Box<dyn std::error::Error + Send + Sync>);

impl AnchorError {
    /// Wraps the store's error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// How the log behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// A segment is closed once it reaches this size.
    pub segment_max_bytes: u64,
    /// A checkpoint after this many entries...
    pub checkpoint_every: u64,
    /// ...or after this long with entries not yet checkpointed.
    pub checkpoint_interval: Duration,
    /// How many records may wait for the writer before producers wait. The queue's
    /// slots are allocated and touched up front (24 bytes each), so this is resident
    /// memory for the life of the process.
    pub queue: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_max_bytes: 64 * 1024 * 1024,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            queue: 8_192,
        }
    }
}

/// An unfinished last line found and set aside when the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Where its bytes were put.
    pub set_aside: PathBuf,
    /// How many bytes it had.
    pub bytes: usize,
}

/// Counters, for benchmarks and status.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Entries written.
    pub entries: u64,
    /// Group commits (each one `fdatasync` of the segment).
    pub commits: u64,
    /// Bytes appended to segments.
    pub bytes: u64,
}

enum Msg {
    Record(Box<(String, Record)>),
    Flush(SyncSender<Result<Stats, String>>),
    Close,
}

/// A handle producers record through. Cloning is cheap.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
}

/// The log's owner: closes it (a last checkpoint) when done.
pub struct AuditWriter {
    log: Option<AuditLog>,
    thread: Option<JoinHandle<Result<(), String>>>,
    recovered: Option<Recovery>,
}

impl AuditLog {
    /// Records `record`: redacts it and queues it, waiting while the queue is full.
    pub fn record(&self, mut record: Record) -> Result<(), AuditError> {
        crate::redact::redact(&mut record);
        self.tx
            .send(Msg::Record(Box::new((entry::now(), record))))
            .map_err(|_| AuditError::Closed)
    }

    /// Waits until everything recorded so far is on disk.
    pub fn flush(&self) -> Result<Stats, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| AuditError::Closed)?;
        rx.recv()
            .map_err(|_| AuditError::Closed)?
            .map_err(AuditError::Write)
    }
}

impl AuditWriter {
    /// Opens the log in `dir` (created 0700), recovering an unfinished last line, and starts
    /// its writer. Without a key nothing is signed (entries are still chained); without an
    /// anchor checkpoints are kept in `checkpoints.jsonl` only.
    pub fn open(
        dir: &Path,
        key: Option<AuditKey>,
        anchor: Option<Box<dyn Anchor>>,
        options: Options,
    ) -> Result<Self, AuditError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| AuditError::io(dir, e))?;
        let lock_path = dir.join("lock");
        let lock = store::open_append(&lock_path).map_err(|e| AuditError::io(&lock_path, e))?;
        let mut state = State {
            dir: dir.to_path_buf(),
            lock,
            key,
            anchor,
            options,
            segment: None,
            next_seq: 1,
            last_hash: GENESIS,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            head_slot: 0,
            head: None,
            stats: Stats::default(),
        };
        let recovered = {
            let _guard = state.locked()?;
            let recovered = state.recover()?;
            state.load_tail()?;
            recovered
        };
        let (tx, rx) = mpsc::sync_channel(state.options.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("moat-audit".into())
            .spawn(move || state.run(rx))
            .map_err(|e| AuditError::io(dir, e))?;
        let log = AuditLog { tx };
        if let Some(r) = &recovered {
            let name = r
                .set_aside
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            log.record(
                Record::new("system", "audit.recovered", name, "recovered")
                    .detail("unfinished_bytes", r.bytes),
            )?;
        }
        Ok(Self {
            log: Some(log),
            thread: Some(thread),
            recovered,
        })
    }

    /// A handle to record through.
    pub fn log(&self) -> AuditLog {
        self.log.clone().expect("the log is open until close")
    }

    /// The unfinished line set aside at open, if there was one.
    pub fn recovered(&self) -> Option<&Recovery> {
        self.recovered.as_ref()
    }

    /// Writes everything queued, a last checkpoint, and stops the writer. Records sent
    /// through clones of the handle after this are refused.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), AuditError> {
        if let Some(log) = self.log.take() {
            // Clones of the handle may live on: the writer is told, not left to notice.
            let _ = log.tx.send(Msg::Close);
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| AuditError::Write("the audit writer panicked".into()))?
                .map_err(AuditError::Write),
            None => Ok(()),
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

struct Segment {
    path: PathBuf,
    file: File,
    len: u64,
}

struct State {
    dir: PathBuf,
    lock: File,
    key: Option<AuditKey>,
    anchor: Option<Box<dyn Anchor>>,
    options: Options,
    segment: Option<Segment>,
    next_seq: u64,
    last_hash: [u8; 32],
    since_checkpoint: u64,
    last_checkpoint: Instant,
    head_slot: u64,
    head: Option<File>,
    stats: Stats,
}

/// Holds the cross-process lock until dropped (through a duplicate of the lock file's
/// descriptor, which shares its lock).
struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl State {
    fn locked(&self) -> Result<Locked, AuditError> {
        let path = self.dir.join("lock");
        let file = self
            .lock
            .try_clone()
            .map_err(|e| AuditError::io(&path, e))?;
        file.lock().map_err(|e| AuditError::io(&path, e))?;
        Ok(Locked(file))
    }

    fn run(mut self, rx: Receiver<Msg>) -> Result<(), String> {
        let mut pending: Vec<(String, Record)> = Vec::new();
        let mut waiting: Vec<SyncSender<Result<Stats, String>>> = Vec::new();
        let mut closed = false;
        let mut last_error: Option<String> = None;
        loop {
            if pending.is_empty() && waiting.is_empty() && !closed {
                let timeout = self.until_checkpoint();
                match rx.recv_timeout(timeout) {
                    Ok(msg) => closed |= take(msg, &mut pending, &mut waiting),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => closed = true,
                }
            }
            while pending.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => closed |= take(msg, &mut pending, &mut waiting),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if !pending.is_empty() {
                match self.commit(&pending) {
                    Ok(()) => {
                        pending.clear();
                        last_error = None;
                    }
                    Err(e) => {
                        // Kept, not dropped: retried after a pause, and flushes hear of it.
                        let text = e.to_string();
                        for w in waiting.drain(..) {
                            let _ = w.send(Err(text.clone()));
                        }
                        if closed {
                            return Err(text);
                        }
                        last_error = Some(text);
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                }
            }
            let due = self.since_checkpoint > 0
                && (closed
                    || self.since_checkpoint >= self.options.checkpoint_every
                    || self.last_checkpoint.elapsed() >= self.options.checkpoint_interval);
            if due && let Err(e) = self.checkpoint() {
                last_error = Some(e.to_string());
            }
            if pending.is_empty() {
                for w in waiting.drain(..) {
                    let _ = w.send(match &last_error {
                        None => Ok(self.stats),
                        Some(e) => Err(e.clone()),
                    });
                }
            }
            if closed && pending.is_empty() {
                // Records queued by other handles just before the close still go in.
                match rx.try_recv() {
                    Ok(msg) => {
                        take(msg, &mut pending, &mut waiting);
                    }
                    Err(_) => return last_error.map_or(Ok(()), Err),
                }
            }
        }
    }

    fn until_checkpoint(&self) -> Duration {
        if self.since_checkpoint == 0 {
            return Duration::from_secs(3600);
        }
        self.options
            .checkpoint_interval
            .saturating_sub(self.last_checkpoint.elapsed())
            .max(Duration::from_millis(1))
    }

    /// Appends `batch` with one write and one sync, then signs the head.
    fn commit(&mut self, batch: &[(String, Record)]) -> Result<(), AuditError> {
        let _guard = self.locked()?;
        self.catch_up()?;
        let mut buf = Vec::with_capacity(batch.len() * 320);
        let mut seq = self.next_seq;
        let mut hash = self.last_hash;
        for (time, record) in batch {
            let oversized;
            let record = if serialized_len(&record.details) > MAX_DETAILS {
                oversized = Record {
                    details: serde_json::Map::from_iter([(
                        "details_omitted_bytes".to_owned(),
                        serialized_len(&record.details).into(),
                    )]),
                    ..record.clone()
                };
                &oversized
            } else {
                record
            };
            hash = entry::encode(&mut buf, seq, time, record, &hash);
            seq += 1;
        }
        let rotate = self
            .segment
            .as_ref()
            .is_none_or(|s| s.len > 0 && s.len + buf.len() as u64 > self.options.segment_max_bytes);
        if rotate {
            self.start_segment(self.next_seq)?;
        }
        let segment = self.segment.as_mut().expect("a segment was just opened");
        let written = segment
            .file
            .write_all(&buf)
            .and_then(|()| segment.file.sync_data());
        if let Err(e) = written {
            // Whatever part reached the file is an unfinished tail: take it back.
            let _ = segment.file.set_len(segment.len);
            return Err(AuditError::io(&segment.path, e));
        }
        segment.len += buf.len() as u64;
        self.stats.entries += batch.len() as u64;
        self.stats.commits += 1;
        self.stats.bytes += buf.len() as u64;
        self.next_seq = seq;
        self.last_hash = hash;
        self.since_checkpoint += batch.len() as u64;
        self.write_head()
    }

    fn write_head(&mut self) -> Result<(), AuditError> {
        let Some(key) = &self.key else { return Ok(()) };
        let path = self.dir.join(store::HEAD);
        if self.head.is_none() {
            let file = std::fs::File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| AuditError::io(&path, e))?;
            self.head = Some(file);
        }
        let statement = key.sign(
            Kind::Head,
            self.next_seq - 1,
            &self.last_hash,
            &entry::now(),
        );
        store::write_head(
            self.head.as_ref().expect("just opened"),
            self.head_slot,
            &statement,
        )
        .map_err(|e| AuditError::io(&path, e))?;
        self.head_slot ^= 1;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), AuditError> {
        let Some(key) = &self.key else {
            self.since_checkpoint = 0;
            return Ok(());
        };
        let _guard = self.locked()?;
        let path = self.dir.join(store::CHECKPOINTS);
        let statement = key.sign(
            Kind::Checkpoint,
            self.next_seq - 1,
            &self.last_hash,
            &entry::now(),
        );
        let mut line =
            serde_json::to_vec(&statement).map_err(|e| AuditError::Write(e.to_string()))?;
        line.push(b'\n');
        let mut file = store::open_append(&path).map_err(|e| AuditError::io(&path, e))?;
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| AuditError::io(&path, e))?;
        if let Some(anchor) = &mut self.anchor {
            anchor.store(&statement).map_err(AuditError::Anchor)?;
        }
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn start_segment(&mut self, first_seq: u64) -> Result<(), AuditError> {
        let path = self.dir.join(store::segment_name(first_seq));
        let file = store::open_append(&path).map_err(|e| AuditError::io(&path, e))?;
        let len = file.metadata().map_err(|e| AuditError::io(&path, e))?.len();
        store::sync_dir(&self.dir).map_err(|e| AuditError::io(&self.dir, e))?;
        self.segment = Some(Segment { path, file, len });
        Ok(())
    }

    /// Under the lock: if another process appended since our last batch, read the new tail.
    fn catch_up(&mut self) -> Result<(), AuditError> {
        let moved = match &self.segment {
            None => !store::segments(&self.dir)
                .map_err(|e| AuditError::io(&self.dir, e))?
                .is_empty(),
            Some(s) => {
                let len = s
                    .file
                    .metadata()
                    .map_err(|e| AuditError::io(&s.path, e))?
                    .len();
                len != s.len
                    || store::segments(&self.dir)
                        .map_err(|e| AuditError::io(&self.dir, e))?
                        .last()
                        .is_some_and(|(_, p)| *p != s.path)
            }
        };
        if moved {
            self.load_tail()?;
            // Someone else's head slot choice is unknown: any slot is fine, both are signed.
        }
        Ok(())
    }

    /// Reads the chain's last entry: its seq and hash continue the chain.
    fn load_tail(&mut self) -> Result<(), AuditError> {
        let segments = store::segments(&self.dir).map_err(|e| AuditError::io(&self.dir, e))?;
        self.segment = None;
        self.next_seq = 1;
        self.last_hash = GENESIS;
        for (i, (first, path)) in segments.iter().enumerate().rev() {
            let mut file = store::open_append(path).map_err(|e| AuditError::io(path, e))?;
            let (_, tail) =
                store::read_tail(&mut file, TAIL_WINDOW).map_err(|e| AuditError::io(path, e))?;
            let last = i == segments.len() - 1;
            if last {
                let len = file.metadata().map_err(|e| AuditError::io(path, e))?.len();
                self.segment = Some(Segment {
                    path: path.clone(),
                    file,
                    len,
                });
            }
            let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
            if body.is_empty() {
                if last {
                    self.next_seq = *first;
                }
                continue;
            }
            let line = match memchr::memrchr(b'\n', body) {
                Some(i) => &body[i + 1..],
                None => body,
            };
            let checked = entry::check(line)
                .filter(|c| c.intact)
                .ok_or_else(|| AuditError::DamagedTail(path.clone()))?;
            self.next_seq = checked.seq + 1;
            self.last_hash = entry::unhex(checked.hash_hex)
                .ok_or_else(|| AuditError::DamagedTail(path.clone()))?;
            return Ok(());
        }
        Ok(())
    }

    /// Sets aside an unfinished last line (a crash mid-write), so the chain can go on.
    fn recover(&mut self) -> Result<Option<Recovery>, AuditError> {
        let segments = store::segments(&self.dir).map_err(|e| AuditError::io(&self.dir, e))?;
        let Some((_, path)) = segments.last() else {
            return Ok(None);
        };
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| AuditError::io(path, e))?;
        let (start, tail) =
            store::read_tail(&mut file, TAIL_WINDOW).map_err(|e| AuditError::io(path, e))?;
        if tail.is_empty() || tail.ends_with(b"\n") {
            return Ok(None);
        }
        let cut = match memchr::memrchr(b'\n', &tail) {
            Some(i) => i + 1,
            None if start == 0 => 0,
            // No line end in the whole window: not a torn line but a damaged file.
            None => return Err(AuditError::DamagedTail(path.clone())),
        };
        let torn = &tail[cut..];
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = self.dir.join(format!(
            "torn-{}-{stamp}.jsonl",
            path.file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default()
        ));
        moat_core::atomic::write_atomic(&aside, torn)
            .map_err(|e| AuditError::io(&e.path, e.source))?;
        file.set_len(start + cut as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| AuditError::io(path, e))?;
        Ok(Some(Recovery {
            set_aside: aside,
            bytes: torn.len(),
        }))
    }
}

/// Files one message; true for [`Msg::Close`].
fn take(
    msg: Msg,
    pending: &mut Vec<(String, Record)>,
    waiting: &mut Vec<SyncSender<Result<Stats, String>>>,
) -> bool {
    match msg {
        Msg::Record(r) => pending.push(*r),
        Msg::Flush(w) => waiting.push(w),
        Msg::Close => return true,
    }
    false
}

fn serialized_len(details: &serde_json::Map<String, serde_json::Value>) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, details);
    c.0
}
