//! The SQLite intake writer: one thread with its own connection, committing each batch in
//! one `BEGIN IMMEDIATE` transaction. Statements run directly on the connection (no
//! hand-off to another thread per statement), which is what lets one fsync acknowledge a
//! whole batch quickly.
//!
//! Durability is pipelined: the writer commits a batch into the WAL without waiting for
//! the disk (`synchronous=NORMAL` on this connection) and hands the batch's answers to a
//! flushing thread, which fsyncs the WAL file and only then answers. While the disk
//! flushes batch N the writer already builds batch N+1; one fsync covers every batch
//! committed before it began. An acknowledged lead is therefore exactly as durable as with
//! `synchronous=FULL` (its WAL frames are on disk before the 2xx), but the writer no
//! longer sits idle during each flush. A crash can lose only batches not yet answered.
//! The other connections keep `synchronous=FULL`, except the store's bookkeeping
//! connection (`Store::bookkeeping`), whose writes are harmless to lose in a crash.

use super::{
    Attempt, BatchError, EventInsert, IdemInsert, IdemRow, IdentRow, ImportRowInsert, InputsRow, IntakeError, IntakeTx, Job,
    LEAD_INSERT_COLUMNS, LeadInsert, MAX_ATTEMPTS, Meta, OutboxInsert, RepeatUpdate, ReplyTx, Results, ScoreRow, ScoreWrite, StatusRow,
    StoredEvent, TargetRow, VisitorLead, WriterCtx, backoff, commit_jobs, drain_batch, reply_all, run_batch,
};
use crate::leads::{LEAD_COLUMNS, LEAD_FROM, LeadRow};
use crate::ts::Ts;
use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags, ToSql, TransactionBehavior, params_from_iter};
use serde_json::Value;
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The size a WAL file is cut back to when the log starts over (`journal_size_limit`).
pub(crate) const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// The log's size at which the checkpointer starts it over (see `checkpointer`); under
/// `WAL_SIZE_LIMIT`, so that the file is cut back no further than what the writer reuses.
const WAL_RESTART_BYTES: i64 = 48 << 20;

/// What the intake's writer, its flushing threads and its checkpointer share.
#[derive(Clone, Default)]
pub(crate) struct Shared {
    /// Set for good by the first failed fsync, of the log by a flushing thread or of the
    /// database file by the checkpointer: nothing is acknowledged after it.
    pub(crate) failed: std::sync::Arc<AtomicBool>,
    /// Set while the intake writer holds the write lock (from its `BEGIN IMMEDIATE` to the
    /// end of the batch's transaction). The checkpointer's tries for the lock meanwhile
    /// do not count against its few milliseconds (see `wait_briefly`): it holds nothing
    /// while it waits for the lock, and an import's batch holds the lock for longer.
    pub(crate) writing: std::sync::Arc<AtomicBool>,
}

/// Statement sizes (rows per multi-row statement); fixed so that prepared statements are
/// reused from the cache.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

pub(super) fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
    conn.busy_handler(Some(wait_for_lock))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL: a commit does not wait for the disk here; `syncer` fsyncs the WAL before any
    // answer of the batch is sent (see the module comment).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -65536)?;
    // Statement journals of multi-row inserts stay in memory.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run on their own thread (see `checkpointer`), not inside a commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // When the log starts over after a burst its file is cut back to this size; without it
    // the file kept the largest size it ever had (4 GB after 27 s of `bench intake`).
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// The intake writer's wait for the write lock while another connection (a background job,
/// another process) holds it: polls about every 100 µs for the first 2,000 tries (0.2–0.4 s
/// with the kernel's timer slack), then every millisecond, and gives up after about 10 s. SQLite's own busy handler sleeps 1, 2, 5, 10,
/// 15, 20, 25 … ms between tries, so a lock held for 3 ms cost a batch 8 ms and one held
/// for 12 ms cost 18: the intake's p99 went to 60–80 ms with nothing slow in it.
fn wait_for_lock(tries: i32) -> bool {
    match tries {
        0..2_000 => std::thread::sleep(Duration::from_micros(100)),
        2_000..12_000 => std::thread::sleep(Duration::from_millis(1)),
        _ => return false,
    }
    true
}

/// The checkpointer's wait for a lock: polls about every 100 µs, 50 times in all for one
/// checkpoint (SQLite counts the tries per statement), 5–8 ms with the kernel's timer
/// slack (the intake writer holds the write lock for a batch, 1–2 ms; a lookup holds an
/// older snapshot for less). A restart that would wait longer is put off (see
/// `checkpointer`). Each try asks the intake writer for a turn (see `turns`), and tries
/// while the intake writer holds the write lock (`Shared::writing`) do not count, for up
/// to 2–4 s with the kernel's timer slack, until the writer is first seen without it:
/// during an import its batches follow each other with no gap, each holding the lock for
/// longer than 50 tries, and the log was never started over (it grew to 4.3 GB over a
/// 1 M-row import). The checkpointer holds no lock while it waits for the write lock,
/// though its asks make the writer hold back up to 5 ms before its next batch; while the
/// restart waits for readers it holds the write lock itself, and those tries count.
fn wait_briefly(tries: i32) -> bool {
    const TRIES: i32 = 50;
    const WHILE_WRITING: i32 = 20_000;
    let writer_holds = CKPT_WRITING.with(|w| w.borrow().as_ref().is_some_and(|f| f.load(Ordering::Acquire)));
    let counted = CKPT_TRIES.with(|c| {
        let (mut counted, mut spared, mut seen_free) = if tries == 0 { (0, 0, false) } else { c.get() };
        // Once the writer was seen without the lock, every later try of the statement
        // counts: the flag may lag the lock (the writer cleared it after its commit), and
        // the restart may hold the lock itself by then, waiting for readers.
        seen_free |= !writer_holds;
        if !seen_free && spared < WHILE_WRITING {
            spared += 1;
        } else {
            counted += 1;
        }
        c.set((counted, spared, seen_free));
        counted
    });
    if counted > TRIES {
        return false;
    }
    crate::turns::ask();
    std::thread::sleep(Duration::from_micros(100));
    true
}

thread_local! {
    /// The checkpointer thread's `Shared::writing`, for its busy handler.
    static CKPT_WRITING: std::cell::RefCell<Option<std::sync::Arc<AtomicBool>>> = const { std::cell::RefCell::new(None) };
    /// The current statement's tries of the checkpointer's busy handler: (counted, spared,
    /// the writer seen without the lock).
    static CKPT_TRIES: std::cell::Cell<(i32, i32, bool)> = const { std::cell::Cell::new((0, 0, false)) };
}

/// Fsyncs the database file through the connection's own file handle (SQLite's
/// `xSync`). Not through a descriptor of our own: closing any descriptor of a file drops
/// every POSIX lock the process holds on it, SQLite's included, and another process could
/// then take itself for the last user and delete the WAL.
fn sync_database_file(conn: &Connection) -> anyhow::Result<()> {
    use rusqlite::ffi;
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: the handle is this thread's open connection, used by nothing else meanwhile;
    // SQLITE_FCNTL_FILE_POINTER writes the main database's `sqlite3_file` pointer, which
    // stays valid while the connection is open, and its methods are SQLite's own.
    unsafe {
        let rc = ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&mut file as *mut *mut ffi::sqlite3_file).cast(),
        );
        anyhow::ensure!(rc == ffi::SQLITE_OK && !file.is_null(), "no file handle for the database (SQLite code {rc})");
        let methods = (*file).pMethods;
        anyhow::ensure!(!methods.is_null(), "the database file is not open");
        let sync = (*methods).xSync.context("the database file has no sync method")?;
        let rc = sync(file, ffi::SQLITE_SYNC_NORMAL);
        anyhow::ensure!(rc == ffi::SQLITE_OK, "fsync of the database file failed (SQLite code {rc})");
    }
    Ok(())
}

/// Copies the WAL back into the database file in the background, so that commits never
/// wait for it; stops when the writer stops. A checkpoint runs when the WAL has grown past
/// `WAL_CHECKPOINT_BYTES` or `CHECKPOINT_EVERY` has passed: a page changed many times in
/// between is written to the database file once.
///
/// Once the log holds `WAL_RESTART_BYTES` the checkpointer also starts it over
/// (`RESTART`): SQLite alone starts it over only when the writer begins a transaction with
/// everything copied and no reader holding a snapshot of the log, which under a steady load
/// never happens, so the file grew by every commit (1.9 GB in a 10 s `bench intake`).
/// Appending to a file costs the kernel far more than overwriting pages it holds: on
/// 2026-11-25's machine (Linux 6.18, ext4) zeroing new page-cache pages for the appends
/// (`ext4_block_write_begin → zero_user_segments`) was 42 % of the intake writer's time.
/// The restart runs right after a passive copy and a flush, so the writer waits only for
/// the frames written since (a few milliseconds).
pub(super) fn checkpointer(path: &Path, alive: std::sync::Weak<()>, shared: Shared) -> anyhow::Result<()> {
    checkpointer_with(path, alive, shared, sync_database_file)
}

/// Whether a checkpoint's error is the disk's: a failed write, fsync or truncation of the
/// database file or the log (not SQLite's other I/O errors: memory, locks, shared memory).
fn is_io_error(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi;
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(
        f.extended_code,
        ffi::SQLITE_IOERR_WRITE | ffi::SQLITE_IOERR_FSYNC | ffi::SQLITE_IOERR_DIR_FSYNC | ffi::SQLITE_IOERR_TRUNCATE
    ))
}

/// `checkpointer` with the database file's flush given (a test makes it fail).
///
/// A failed flush of the database file, or a checkpoint failing on the disk, stops the
/// checkpointer for good and sets `failed`, which the intake's flushing threads share:
/// nothing more is acknowledged and the writer stops at its next batch, as after a failed
/// flush of the log. The kernel may report a lost write to one descriptor once; a later
/// fsync that succeeds does not bring the page back, and a restart after it would
/// overwrite the log frames that still hold it. So the log is never started over (nor cut
/// back at the end) after such a failure: it keeps every acknowledged commit, and SQLite
/// copies it back again from its start when the database is next opened.
fn checkpointer_with(
    path: &Path,
    alive: std::sync::Weak<()>,
    shared: Shared,
    sync: fn(&Connection) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Shared { failed, writing } = shared;
    const WAL_CHECKPOINT_BYTES: u64 = 32 << 20;
    const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    // The restart waits for the write lock, and then for readers of older snapshots, by
    // polling briefly (see `wait_briefly`): SQLite's own sleeps would be outrun by the
    // writer's back-to-back batches, and a long wait would hold intake up.
    conn.busy_handler(Some(wait_briefly))?;
    // A checkpoint fsyncs the WAL before copying it and the database file after.
    conn.pragma_update(None, "synchronous", "FULL")?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    // A frame is its page and a 24-byte header.
    let restart_frames = WAL_RESTART_BYTES / (page_size + 24);
    let wal = wal_path(path);
    std::thread::Builder::new().name("vk-sqlite-ckpt".into()).spawn(move || {
        CKPT_WRITING.with(|w| *w.borrow_mut() = Some(writing));
        let mut last = std::time::Instant::now();
        // (busy, frames in the log): busy when the checkpoint could not finish.
        let checkpoint = |mode: &str| {
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get::<_, i64>(0)? != 0, r.get::<_, i64>(1)?)))
        };
        // A restart that found a reader of an older snapshot still reading is tried again
        // later, each time twice as late (up to 5 s), so that a long read (an export, a
        // re-score) does not cost intake a wait every round.
        let mut restart_after = std::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut restarted_at = None;
        let give_up = |what: &str, e: &dyn std::fmt::Display| {
            failed.store(true, Ordering::SeqCst);
            metrics::counter!("sqlite_checkpoint_failures_total").increment(1);
            tracing::error!(error = %e, "{what}: the log is kept as it is and nothing more is acknowledged");
        };
        while alive.upgrade().is_some() {
            std::thread::sleep(Duration::from_millis(100));
            if failed.load(Ordering::SeqCst) {
                // A flush of the log failed: the log must stay as it is.
                break;
            }
            let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            if size < WAL_CHECKPOINT_BYTES && last.elapsed() < CHECKPOINT_EVERY {
                continue;
            }
            last = std::time::Instant::now();
            // PASSIVE: copies what it can without blocking the writer or readers.
            let frames = match checkpoint("PASSIVE") {
                Ok((_, frames)) => frames,
                Err(e) if is_io_error(&e) => {
                    give_up("a WAL checkpoint failed on the disk", &e);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                    continue;
                }
            };
            // After a restart the count stays that of the old log until the writer writes
            // again: an idle server does not start it over every round.
            if frames < restart_frames || last < restart_after || Some(frames) == restarted_at {
                continue;
            }
            // The restart holds the write lock while it fsyncs the log, copies what is left
            // and fsyncs the database file, and that fsync flushed every page the passive
            // copies had written since the last complete checkpoint (9 ms at 48 MB of log).
            // They are flushed here first, and what the writer added meanwhile copied, so
            // that it waits only for the last frames (1–5 ms under the HTTP intake; during
            // an import, what the batch then holding the lock wrote). A second round gained
            // nothing more.
            if let Err(e) = sync(&conn) {
                give_up("cannot flush the SQLite database file", &format!("{e:#}"));
                break;
            }
            let restarting = last.elapsed();
            match checkpoint("PASSIVE").and_then(|_| checkpoint("RESTART")) {
                Ok((false, _)) => {
                    restarted_at = Some(frames);
                    backoff = Duration::from_millis(100);
                    metrics::counter!("sqlite_wal_restarts_total").increment(1);
                    tracing::debug!(
                        frames,
                        prepare_micros = restarting.as_micros() as u64,
                        // With the wait for the write lock (an import's batch) and readers.
                        restart_micros = (last.elapsed() - restarting).as_micros() as u64,
                        "WAL restarted"
                    );
                }
                Ok((true, _)) => {
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    restart_after = std::time::Instant::now() + backoff;
                    metrics::counter!("sqlite_wal_restarts_put_off_total").increment(1);
                }
                Err(e) if is_io_error(&e) => {
                    give_up("a WAL restart failed on the disk", &e);
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "WAL restart failed"),
            }
        }
        if failed.load(Ordering::SeqCst) {
            // Kept open until the process ends: SQLite copies the log back and deletes it
            // when the last connection to the database closes, and while this one is open
            // no other connection of the process is the last. The log is copied back from
            // its start when the database is next opened.
            std::mem::forget(conn);
        } else {
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    })?;
    Ok(())
}

pub(super) fn run(
    mut conn: Connection,
    path: &Path,
    mut rx: mpsc::Receiver<Job>,
    mut ctx: WriterCtx,
    alive: std::sync::Arc<()>,
    shared: Shared,
) -> anyhow::Result<()> {
    let Shared { failed, writing } = shared;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Committed>();
    let flushers = std::sync::Arc::new(Flushers { rx: std::sync::Mutex::new(done_rx), failed: failed.clone() });
    let wal = wal_path(path);
    // Names within the kernel's 15 characters, so that `top -H` and `perf` tell the
    // writer, the flushers and the checkpointer apart.
    let threads = (0..FLUSHERS)
        .map(|i| {
            let (wal, flushers, alive) = (wal.clone(), flushers.clone(), alive.clone());
            std::thread::Builder::new().name(format!("vk-sqlite-sync{i}")).spawn(move || flusher(&wal, &flushers, alive))
        })
        .collect::<Result<Vec<_>, _>>()
        .context("cannot start the SQLite flushing threads")?;
    // Only the flushers keep the receiver (a send fails once they have stopped) and the
    // checkpointer alive.
    drop(flushers);
    drop(alive);
    let mut seen = crate::turns::asks();
    while let Some(first) = rx.blocking_recv() {
        if failed.load(Ordering::SeqCst) {
            anyhow::bail!("the SQLite WAL or database file could not be flushed; intake stopped");
        }
        let (metas, replies) = drain_batch(first, &mut rx, super::SQLITE_MAX_BATCH);
        let results =
            run_sync(commit_jobs(&metas, &mut SqliteWriter { conn: &mut conn, ctx: &mut ctx, seen: &mut seen, writing: &writing }));
        // The submissions are dropped on a flushing thread too: freeing them is work the
        // writer need not do.
        if done_tx.send((results, replies, metas)).is_err() {
            anyhow::bail!("the SQLite flushing threads stopped");
        }
    }
    drop(done_tx);
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Threads flushing the WAL. With two, a batch committed during one's fsync got its own
/// from the other instead of waiting for the first to end; over ten runs of `bench intake`
/// alternating with one thread that made no measurable difference (5 of 10 ahead, means
/// within 1 %), so one it is.
const FLUSHERS: usize = 1;

fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// A committed batch: its results, the submitters' reply channels and the submissions.
type Committed = (Results, Vec<ReplyTx>, Vec<Meta>);

/// What the flushing threads share.
struct Flushers {
    rx: std::sync::Mutex<std::sync::mpsc::Receiver<Committed>>,
    /// Set for good by the first failed fsync, of the log here or of the database file by
    /// the checkpointer.
    failed: std::sync::Arc<AtomicBool>,
}

/// Answers committed batches once the WAL holding them is on disk: takes every batch
/// waiting, fsyncs the WAL file once for all of them (each was committed before the fsync
/// began), then answers them in commit order.
///
/// A failed fsync answers its batches with a storage error and stops every later
/// acknowledgement, on every flushing thread: after a failed flush the kernel may report the error
/// to one descriptor only, and a later fsync that succeeds does not bring back the pages
/// it lost (nor the WAL frames after them, whose checksums chain to theirs). The writer
/// stops at its next batch.
fn flusher(wal: &Path, shared: &Flushers, _alive: std::sync::Arc<()>) {
    // One descriptor for the thread's life: since Linux 4.16 a failed write-back is
    // reported once to each descriptor open when it happened, and not to one opened after
    // another descriptor (a pool connection's commit, say) was told of it.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(wal);
    let flush = || -> std::io::Result<()> {
        let f = file.as_ref().map_err(|e| std::io::Error::new(e.kind(), format!("cannot open the write-ahead log: {e}")))?;
        f.sync_data()?;
        // A log removed while the database is open (by hand, or by another process that took
        // itself for the last user) holds nothing a restart would find.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if f.metadata()?.nlink() == 0 {
                return Err(std::io::Error::other("the write-ahead log was removed while the database was open"));
            }
        }
        Ok(())
    };
    loop {
        let batches = {
            let rx = shared.rx.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = rx.recv() else { return };
            let mut batches = vec![first];
            while let Ok(more) = rx.try_recv() {
                batches.push(more);
            }
            batches
        };
        let mut synced = flush();
        match &synced {
            Err(e) => {
                shared.failed.store(true, Ordering::SeqCst);
                tracing::error!(error = %e, wal = %wal.display(), "cannot flush the SQLite WAL; nothing more is acknowledged");
            }
            Ok(()) if shared.failed.load(Ordering::SeqCst) => {
                synced = Err(std::io::Error::other("an earlier flush of the write-ahead log or the database file failed"));
            }
            Ok(()) => {}
        }
        for (results, replies, _metas) in batches {
            match &synced {
                Ok(()) => reply_all(results, replies),
                Err(e) => {
                    let n = results.len();
                    let failed =
                        (0..n).map(|_| Err(IntakeError::Storage(anyhow::anyhow!("cannot flush the write-ahead log: {e}")))).collect();
                    reply_all(failed, replies);
                }
            }
        }
    }
}

struct SqliteWriter<'a> {
    conn: &'a mut Connection,
    ctx: &'a mut WriterCtx,
    /// Other writers' asks for the lock seen so far (see `turns`).
    seen: &'a mut u64,
    /// Set while this writer holds the write lock (see `Shared::writing`).
    writing: &'a AtomicBool,
}

impl Attempt for SqliteWriter<'_> {
    async fn attempt(&mut self, jobs: &[Meta]) -> anyhow::Result<Results> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Another writer of this process waiting for the lock gets it first.
            crate::turns::let_others_in(self.seen);
            let r = match self.conn.transaction_with_behavior(TransactionBehavior::Immediate) {
                Ok(tx) => {
                    self.writing.store(true, Ordering::Release);
                    // The transaction ends (committed, or rolled back when dropped) within.
                    let r = run_batch(Tx(tx), jobs, self.ctx).await;
                    self.writing.store(false, Ordering::Release);
                    r
                }
                Err(e) => Err(BatchError::from(e)),
            };
            match r {
                Ok(v) => return Ok(v),
                Err(e) if attempt < MAX_ATTEMPTS && e.is_retryable() => {
                    tracing::debug!(error = %e, attempt, "intake write conflict; retrying");
                    std::thread::sleep(backoff(attempt));
                }
                Err(e) => return Err(anyhow::Error::new(e).context("failed to commit intake batch")),
            }
        }
    }
}

/// Drives a future that never waits (every statement here is synchronous) to completion.
fn run_sync<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

struct Tx<'c>(rusqlite::Transaction<'c>);

type P<'a> = &'a dyn ToSql;

/// Text to bind; `None` binds NULL.
fn opt(s: &Option<String>) -> &dyn ToSql {
    s
}

fn placeholders(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row; rows].join(", ")
}

impl Tx<'_> {
    /// Inserts rows (`cols` parameters each, flattened) in statements of fixed sizes.
    fn insert(&self, head: &str, cols: usize, params: &[P<'_>]) -> Result<(), BatchError> {
        let mut rest = params;
        while !rest.is_empty() {
            let rows = rest.len() / cols;
            let n = CHUNKS.into_iter().find(|c| *c <= rows).unwrap_or(1);
            let (chunk, tail) = rest.split_at(n * cols);
            let sql = format!("{head} VALUES {}", placeholders(n, cols));
            self.0.prepare_cached(&sql)?.execute(params_from_iter(chunk.iter()))?;
            rest = tail;
        }
        Ok(())
    }

    /// Runs `{head} IN (…)` over the keys in fixed-size chunks.
    fn select_in<R>(&self, head: &str, keys: &[P<'_>], map: impl Fn(&rusqlite::Row) -> rusqlite::Result<R>) -> Result<Vec<R>, BatchError> {
        let mut out = Vec::new();
        let mut rest = keys;
        while !rest.is_empty() {
            let n = CHUNKS.into_iter().find(|c| *c <= rest.len()).unwrap_or(1);
            let (chunk, next) = rest.split_at(n);
            let sql = format!("{head} IN ({})", vec!["?"; n].join(", "));
            let mut stmt = self.0.prepare_cached(&sql)?;
            for r in stmt.query_map(params_from_iter(chunk.iter()), &map)? {
                out.push(r?);
            }
            rest = next;
        }
        Ok(out)
    }
}

fn lead_row(r: &rusqlite::Row) -> rusqlite::Result<LeadRow> {
    let ts_at = |i: usize| -> rusqlite::Result<Ts> {
        let us: i64 = r.get(i)?;
        Ts::from_micros(us).ok_or(rusqlite::Error::IntegralValueOutOfRange(i, us))
    };
    let ts_opt = |i: usize| -> rusqlite::Result<Option<Ts>> { Ok(r.get::<_, Option<i64>>(i)?.and_then(Ts::from_micros)) };
    let fields: String = r.get(24)?;
    let consent_at: Option<i64> = r.get(27)?;
    Ok(LeadRow {
        id: r.get(0)?,
        name: r.get(1)?,
        phone: r.get(2)?,
        email: r.get(3)?,
        messenger: r.get(4)?,
        company: r.get(5)?,
        position: r.get(6)?,
        city: r.get(7)?,
        interest: r.get(8)?,
        message: r.get(9)?,
        budget: r.get(10)?,
        channel: r.get(11)?,
        campaign: r.get(12)?,
        source: r.get(13)?,
        utm_source: r.get(14)?,
        utm_medium: r.get(15)?,
        utm_campaign: r.get(16)?,
        utm_content: r.get(17)?,
        utm_term: r.get(18)?,
        referrer: r.get(19)?,
        landing_page: r.get(20)?,
        tracking_number: r.get(21)?,
        visitor_id: r.get(22)?,
        external_id: r.get(23)?,
        fields: serde_json::from_str(&fields).unwrap_or(Value::Object(Default::default())),
        consent_marketing: r.get(25)?,
        consent_text: r.get(26)?,
        consent_at: consent_at.and_then(Ts::from_micros),
        status: r.get(28)?,
        status_reason: r.get(29)?,
        owner_id: r.get(30)?,
        repeat_count: r.get(31)?,
        returning_of: r.get(32)?,
        contact_id: r.get(33)?,
        created_at: ts_at(34)?,
        updated_at: ts_at(35)?,
        last_request_at: ts_at(36)?,
        ledger: r.get(37)?,
        model_version: r.get(38)?,
        assigned_at: ts_opt(39)?,
        sla_due_at: ts_opt(40)?,
        first_touch_at: ts_opt(41)?,
    })
}

const NEW: &str = "new";

impl IntakeTx for Tx<'_> {
    async fn idem_lookup(&mut self, keys: &[&str]) -> Result<Vec<IdemRow>, BatchError> {
        let params: Vec<P> = keys.iter().map(|k| k as P).collect();
        self.select_in("SELECT scope_key, request_hash, status, body FROM idempotency_keys WHERE scope_key", &params, |r| {
            Ok(IdemRow { scope_key: r.get(0)?, request_hash: r.get(1)?, status: r.get(2)?, body: r.get(3)? })
        })
    }

    async fn identity_lookup(&mut self, idents: &[&str]) -> Result<Vec<IdentRow>, BatchError> {
        let params: Vec<P> = idents.iter().map(|k| k as P).collect();
        self.select_in(
            "SELECT i.ident, i.lead_id, l.status, l.contact_id FROM identities i JOIN leads l ON l.id = i.lead_id WHERE i.ident",
            &params,
            |r| Ok(IdentRow { ident: r.get(0)?, lead_id: r.get(1)?, status: r.get(2)?, contact_id: r.get(3)? }),
        )
    }

    async fn insert_leads(&mut self, rows: &[LeadInsert<'_>]) -> Result<(), BatchError> {
        // Values that are not borrowed from the rows, computed first so the parameters can borrow them.
        struct Own<'a> {
            phone: Option<&'a str>,
            email: Option<&'a str>,
            messenger: Option<&'a str>,
            tracking: Option<&'a str>,
            consent: Option<bool>,
            consent_text: Option<&'a str>,
            consent_at: Option<Ts>,
        }
        let own: Vec<Own> = rows
            .iter()
            .map(|r| {
                let l = r.lead;
                Own {
                    phone: l.phone.as_ref().map(|p| p.as_str()),
                    email: l.email.as_ref().map(|e| e.as_str()),
                    messenger: l.messenger.as_ref().map(|m| m.as_str()),
                    tracking: l.tracking_number.as_ref().map(|p| p.as_str()),
                    consent: l.consent.as_ref().map(|c| c.marketing),
                    consent_text: l.consent.as_ref().and_then(|c| c.text.as_deref()),
                    consent_at: l.consent.as_ref().and_then(|c| c.at).map(Ts::from),
                }
            })
            .collect();
        let mut params: Vec<P> = Vec::with_capacity(rows.len() * 35);
        for (r, o) in rows.iter().zip(&own) {
            let l = r.lead;
            params.extend_from_slice(&[
                &r.id as P,
                opt(&l.name),
                &o.phone,
                &o.email,
                &o.messenger,
                opt(&l.company),
                opt(&l.position),
                opt(&l.city),
                opt(&l.interest),
                opt(&l.message),
                &l.budget,
                &l.channel,
                opt(&l.campaign),
                opt(&l.source),
                opt(&l.utm.source),
                opt(&l.utm.medium),
                opt(&l.utm.campaign),
                opt(&l.utm.content),
                opt(&l.utm.term),
                opt(&l.referrer),
                opt(&l.landing_page),
                &o.tracking,
                opt(&l.visitor_id),
                opt(&l.external_id),
                &r.fields as P,
                &o.consent,
                &o.consent_text,
                &o.consent_at,
                &NEW,
                &r.returning_of,
                &r.contact_id,
                &r.search,
                &r.at,
                &r.at,
                &r.at,
            ]);
        }
        self.insert(&format!("INSERT INTO leads ({LEAD_INSERT_COLUMNS})"), 35, &params)
    }

    async fn insert_identities(&mut self, rows: &[(&str, Uuid)], at: Ts) -> Result<(), BatchError> {
        let kinds: Vec<&str> = rows.iter().map(|(i, _)| i.split_once(':').map(|(k, _)| k).unwrap_or("other")).collect();
        let mut params: Vec<P> = Vec::with_capacity(rows.len() * 4);
        for ((ident, lead), kind) in rows.iter().zip(&kinds) {
            params.extend_from_slice(&[ident as P, kind, lead, &at]);
        }
        self.insert("INSERT INTO identities (ident, kind, lead_id, created_at)", 4, &params)
    }

    async fn repoint_identity(&mut self, ident: &str, from: Uuid, to: Uuid) -> Result<u64, BatchError> {
        let n = self
            .0
            .prepare_cached("UPDATE identities SET lead_id = ?1 WHERE ident = ?2 AND lead_id = ?3")?
            .execute(rusqlite::params![to, ident, from])?;
        Ok(n as u64)
    }

    async fn apply_repeats(&mut self, rows: &[(Uuid, &RepeatUpdate)]) -> Result<u64, BatchError> {
        let mut stmt = self.0.prepare_cached(
            "UPDATE leads SET repeat_count = repeat_count + ?1, last_request_at = ?2, updated_at = ?2, \
             phone = COALESCE(phone, ?3), email = COALESCE(email, ?4), messenger = COALESCE(messenger, ?5), \
             name = COALESCE(name, ?6) WHERE id = ?7",
        )?;
        let mut n = 0;
        for (lead_id, r) in rows {
            n += stmt.execute(rusqlite::params![r.count, r.at, r.phone, r.email, r.messenger, r.name, lead_id])? as u64;
        }
        Ok(n)
    }

    async fn set_search(&mut self, lead_id: Uuid, search: &str) -> Result<(), BatchError> {
        self.0
            .prepare_cached("UPDATE leads SET search = ?1 WHERE id = ?2 AND search IS NOT ?1")?
            .execute(rusqlite::params![search, lead_id])?;
        Ok(())
    }

    async fn triage_channels(&mut self) -> Result<Vec<String>, BatchError> {
        let mut stmt = self.0.prepare_cached("SELECT code FROM channels WHERE needs_triage = 1")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    async fn mark_triage(&mut self, ids: &[Uuid]) -> Result<(), BatchError> {
        let mut stmt = self.0.prepare_cached("UPDATE leads SET triage = 'pending' WHERE id = ?1")?;
        for id in ids {
            stmt.execute(rusqlite::params![id])?;
        }
        Ok(())
    }

    async fn join_visitor_events(&mut self, visitor_id: &str, lead_id: Uuid) -> Result<Vec<StoredEvent>, BatchError> {
        let mut stmt =
            self.0.prepare_cached("UPDATE events SET lead_id = ?1 WHERE visitor_id = ?2 AND lead_id IS NULL RETURNING at, kind, data")?;
        let rows = stmt.query_map(rusqlite::params![lead_id, visitor_id], |r| {
            let us: i64 = r.get(0)?;
            let data: String = r.get(2)?;
            Ok(StoredEvent {
                at: Ts::from_micros(us).unwrap_or(Ts(chrono::DateTime::UNIX_EPOCH)),
                kind: r.get(1)?,
                data: serde_json::from_str(&data).unwrap_or(Value::Null),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    async fn insert_events(&mut self, rows: &[EventInsert<'_>]) -> Result<(), BatchError> {
        let mut params: Vec<P> = Vec::with_capacity(rows.len() * 8);
        for e in rows {
            params.extend_from_slice(&[&e.lead_id as P, &e.visitor_id, &e.site_id, &e.kind, &e.at, &e.actor, &e.data, &e.at]);
        }
        self.insert("INSERT INTO events (lead_id, visitor_id, site_id, kind, at, actor, data, created_at)", 8, &params)
    }

    async fn insert_outbox(&mut self, rows: &[OutboxInsert]) -> Result<(), BatchError> {
        let mut params: Vec<P> = Vec::with_capacity(rows.len() * 5);
        for o in rows {
            params.extend_from_slice(&[&o.topic as P, &o.aggregate_id, &o.payload, &o.at, &o.at]);
        }
        self.insert("INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at)", 5, &params)
    }

    async fn insert_import_rows(&mut self, rows: &[ImportRowInsert]) -> Result<(), BatchError> {
        let mut params: Vec<P> = Vec::with_capacity(rows.len() * 4);
        for r in rows {
            params.extend_from_slice(&[&r.mark.import_id as P, &r.mark.row, &r.outcome, &r.lead_id]);
        }
        self.insert("INSERT INTO import_rows (import_id, row_no, outcome, lead_id)", 4, &params)
    }

    async fn fetch_leads(&mut self, ids: &[Uuid]) -> Result<Vec<LeadRow>, BatchError> {
        let params: Vec<P> = ids.iter().map(|i| i as P).collect();
        self.select_in(&format!("SELECT {LEAD_COLUMNS} FROM {LEAD_FROM} WHERE l.id"), &params, lead_row)
    }

    async fn insert_idem(&mut self, rows: &[IdemInsert<'_>], at: Ts) -> Result<(), BatchError> {
        let statuses: Vec<i64> = rows.iter().map(|r| r.status as i64).collect();
        let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
        let mut params: Vec<P> = Vec::with_capacity(rows.len() * 5);
        for ((r, s), h) in rows.iter().zip(&statuses).zip(&hashes) {
            params.extend_from_slice(&[&r.key as P, h, s, &r.body, &at]);
        }
        self.insert("INSERT INTO idempotency_keys (scope_key, request_hash, status, body, created_at)", 5, &params)
    }

    async fn model_version(&mut self) -> Result<i64, BatchError> {
        Ok(self.0.prepare_cached("SELECT COALESCE(MAX(version), 0) FROM scoring_models")?.query_row([], |r| r.get(0))?)
    }

    async fn load_model(&mut self, version: i64) -> Result<Option<Value>, BatchError> {
        let text: Option<String> = self
            .0
            .prepare_cached("SELECT model FROM scoring_models WHERE version = ?1")?
            .query_row([version], |r| r.get(0))
            .map(Some)
            .or_else(|e| if matches!(e, rusqlite::Error::QueryReturnedNoRows) { Ok(None) } else { Err(e) })?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn targets_by_key(&mut self, keys: &[(String, String, String)]) -> Result<Vec<TargetRow>, BatchError> {
        let mut out = Vec::with_capacity(keys.len());
        let mut stmt =
            self.0.prepare_cached("SELECT id, kind, path, name FROM event_targets WHERE kind = ?1 AND path = ?2 AND name = ?3")?;
        for (k, p, n) in keys {
            let mut rows = stmt.query_map(rusqlite::params![k, p, n], |r| {
                Ok(TargetRow { id: r.get(0)?, kind: r.get(1)?, path: r.get(2)?, name: r.get(3)? })
            })?;
            if let Some(t) = rows.next() {
                out.push(t?);
            }
        }
        Ok(out)
    }

    async fn insert_targets(&mut self, keys: &[(String, String, String)]) -> Result<(), BatchError> {
        let mut stmt = self.0.prepare_cached("INSERT INTO event_targets (kind, path, name) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?;
        for (k, p, n) in keys {
            stmt.execute(rusqlite::params![k, p, n])?;
        }
        Ok(())
    }

    async fn targets_by_id(&mut self, ids: &[i64]) -> Result<Vec<TargetRow>, BatchError> {
        let params: Vec<P> = ids.iter().map(|i| i as P).collect();
        self.select_in("SELECT id, kind, path, name FROM event_targets WHERE id", &params, |r| {
            Ok(TargetRow { id: r.get(0)?, kind: r.get(1)?, path: r.get(2)?, name: r.get(3)? })
        })
    }

    async fn load_scores(&mut self, ids: &[Uuid]) -> Result<Vec<ScoreRow>, BatchError> {
        let params: Vec<P> = ids.iter().map(|i| i as P).collect();
        self.select_in("SELECT lead_id, ledger, model_version FROM lead_scores WHERE lead_id", &params, |r| {
            Ok(ScoreRow { lead_id: r.get(0)?, ledger: r.get(1)?, model_version: r.get(2)? })
        })
    }

    async fn load_inputs(&mut self, ids: &[Uuid]) -> Result<Vec<InputsRow>, BatchError> {
        let params: Vec<P> = ids.iter().map(|i| i as P).collect();
        self.select_in("SELECT lead_id, events FROM lead_inputs WHERE lead_id", &params, |r| {
            Ok(InputsRow { lead_id: r.get(0)?, events: r.get(1)? })
        })
    }

    /// A new lead's row is given its state (it has no owner yet); a row created for an
    /// older lead takes both from the lead, in the statement: a single-row `VALUES` with no
    /// trigger on the table needs no statement journal, which `INSERT … SELECT` would.
    async fn save_scores(&mut self, rows: &[ScoreWrite]) -> Result<(), BatchError> {
        let mut stmt = self.0.prepare_cached(
            "INSERT INTO lead_scores (lead_id, score, priority, profile, temperature, grade, ledger, model_version, scored_at, status, owner_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, COALESCE(?10, (SELECT status FROM leads WHERE id = ?1)), \
             CASE WHEN ?10 IS NULL THEN (SELECT owner_id FROM leads WHERE id = ?1) END) \
             ON CONFLICT (lead_id) DO UPDATE SET score = excluded.score, \
             priority = excluded.priority, profile = excluded.profile, temperature = excluded.temperature, grade = excluded.grade, \
             ledger = excluded.ledger, model_version = excluded.model_version, scored_at = excluded.scored_at",
        )?;
        for r in rows {
            stmt.execute(rusqlite::params![
                r.lead_id,
                r.score,
                r.priority,
                r.profile,
                r.temperature,
                r.grade,
                r.ledger,
                r.model_version,
                r.at,
                r.created_status
            ])?;
        }
        Ok(())
    }

    async fn save_inputs(&mut self, rows: &[(Uuid, Vec<u8>)]) -> Result<(), BatchError> {
        let mut stmt = self.0.prepare_cached(
            "INSERT INTO lead_inputs (lead_id, events, rev) VALUES (?1, ?2, 1) \
             ON CONFLICT (lead_id) DO UPDATE SET events = excluded.events, rev = lead_inputs.rev + 1",
        )?;
        for (id, events) in rows {
            stmt.execute(rusqlite::params![id, events])?;
        }
        Ok(())
    }

    async fn lead_statuses(&mut self, ids: &[Uuid]) -> Result<Vec<StatusRow>, BatchError> {
        let params: Vec<P> = ids.iter().map(|i| i as P).collect();
        self.select_in("SELECT id, status FROM leads WHERE id", &params, |r| Ok(StatusRow { id: r.get(0)?, status: r.get(1)? }))
    }

    async fn leads_of_visitors(&mut self, visitors: &[&str]) -> Result<Vec<VisitorLead>, BatchError> {
        let mut out = Vec::new();
        let mut stmt = self.0.prepare_cached("SELECT id, status FROM leads WHERE visitor_id = ?1 ORDER BY created_at DESC LIMIT 1")?;
        for v in visitors {
            let mut rows = stmt.query_map([v], |r| Ok(VisitorLead { visitor_id: v.to_string(), id: r.get(0)?, status: r.get(1)? }))?;
            if let Some(x) = rows.next() {
                out.push(x?);
            }
        }
        Ok(out)
    }

    async fn set_sales_ready(&mut self, ids: &[Uuid], at: Ts) -> Result<(), BatchError> {
        let mut stmt = self
            .0
            .prepare_cached("UPDATE leads SET status = 'sales_ready', updated_at = ?1 WHERE id = ?2 AND status IN ('new', 'nurturing')")?;
        for id in ids {
            stmt.execute(rusqlite::params![at, id])?;
        }
        Ok(())
    }

    async fn commit_tx(self) -> Result<(), BatchError> {
        self.0.commit().map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a burst has grown the WAL past `WAL_SIZE_LIMIT`, the first commit after a
    /// complete checkpoint starts the log over and cuts the file back.
    #[test]
    fn the_wal_file_is_cut_back_after_a_burst() {
        /// Removes the database and its WAL and shared-memory files, also when an assertion failed.
        struct Remove(std::path::PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = self.0.as_os_str().to_owned();
                    p.push(suffix);
                    let _ = std::fs::remove_file(std::path::PathBuf::from(p));
                }
            }
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("voronka-wal-{}-{nanos}.db", std::process::id()));
        let _remove = Remove(path.clone());
        drop(Connection::open(&path).expect("create the file"));
        let conn = open(&path).expect("open");
        conn.execute_batch("CREATE TABLE burst (b BLOB NOT NULL)").expect("create");
        let blob = vec![7u8; 1 << 20];
        conn.execute_batch("BEGIN").expect("begin");
        for _ in 0..(WAL_SIZE_LIMIT >> 20) + 16 {
            conn.execute("INSERT INTO burst (b) VALUES (?1)", [&blob]).expect("insert");
        }
        conn.execute_batch("COMMIT").expect("commit");
        let wal = wal_path(&path);
        let size = || std::fs::metadata(&wal).map(|m| m.len() as i64).unwrap_or(0);
        assert!(size() > WAL_SIZE_LIMIT, "the burst grew the WAL to {} bytes", size());
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).expect("checkpoint");
        conn.execute("INSERT INTO burst (b) VALUES (x'00')", []).expect("a later write");
        assert!(size() <= WAL_SIZE_LIMIT, "the WAL file kept {} bytes", size());
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM burst", [], |r| r.get(0)).expect("count");
        assert_eq!(rows, (WAL_SIZE_LIMIT >> 20) + 17);
    }

    /// A writer that never pauses never begins a transaction with everything copied, so
    /// SQLite alone never starts the log over: the checkpointer does, and the file stays
    /// near `WAL_SIZE_LIMIT` however much is written (without it, the file held all of it).
    #[test]
    fn the_checkpointer_starts_the_log_over_under_a_writer_that_never_pauses() {
        let scratch = Scratch::new("restart");
        let path = scratch.dir.join("w.db");
        drop(Connection::open(&path).expect("create the file"));
        let conn = open(&path).expect("open");
        conn.execute_batch("CREATE TABLE burst (id INTEGER PRIMARY KEY, b BLOB NOT NULL)").expect("create");
        let blob = vec![7u8; 256 << 10];
        for id in 0..16 {
            conn.execute("INSERT INTO burst (id, b) VALUES (?1, ?2)", rusqlite::params![id, &blob]).expect("insert");
        }
        let alive = std::sync::Arc::new(());
        checkpointer(&path, std::sync::Arc::downgrade(&alive), Default::default()).expect("checkpointer");
        // Readers come and go all the time, as intake's lookups do; one holding a snapshot
        // with frames of the log is what keeps SQLite from starting it over by itself.
        let reader = {
            let (path, stop) = (path.clone(), scratch.stop.clone());
            std::thread::spawn(move || {
                let conn = Connection::open(&path).expect("a reader");
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let n: i64 =
                        conn.query_row("SELECT length(b) FROM burst WHERE id = ?1", [reads as i64 % 16], |r| r.get(0)).expect("read");
                    assert_eq!(n, 256 << 10);
                    reads += 1;
                }
                reads
            })
        };
        let wal = wal_path(&path);
        let size = || std::fs::metadata(&wal).map(|m| m.len() as i64).unwrap_or(0);
        // Six times the restart size, in transactions of 256 KiB back to back (the rows are
        // rewritten in turn, so the database itself stays at 4 MiB).
        let written = 6 * WAL_RESTART_BYTES;
        let mut largest = 0;
        for i in 0..written / (256 << 10) {
            // Every byte changes: SQLite rewrites only the pages of a value that differ.
            let b = vec![i as u8; blob.len()];
            conn.execute("UPDATE burst SET b = ?1 WHERE id = ?2", rusqlite::params![b, i % 16]).expect("update");
            largest = largest.max(size());
            // At most about 85 MB a second, so that slow fsyncs (the restart makes three)
            // do not let the log outrun the checkpointer's rounds.
            std::thread::sleep(Duration::from_millis(3));
        }
        scratch.stop.store(true, Ordering::Relaxed);
        assert!(reader.join().expect("the reader") > 0);
        drop(alive);
        assert!(largest < written / 2, "the WAL file reached {largest} bytes while {written} were written: the log was not started over");
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM burst", [], |r| r.get(0)).expect("count");
        assert_eq!(rows, 16);
        drop(conn);
        // The checkpointer's last round ends.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// A writer whose transactions follow each other with no pause and each hold the lock
    /// longer than the checkpointer's few milliseconds of tries, as the intake's during an
    /// import, still lets the restart in: the checkpointer's tries while the writer holds the
    /// lock (`Shared::writing`) do not count, it asks for a turn, and the writer holds back
    /// before its next transaction (`turns::let_others_in`). Without both the log was never
    /// started over and grew by every transaction.
    #[test]
    fn the_log_is_started_over_between_long_back_to_back_transactions() {
        let scratch = Scratch::new("back-to-back");
        let path = scratch.dir.join("w.db");
        drop(Connection::open(&path).expect("create the file"));
        let mut conn = open(&path).expect("open");
        conn.execute_batch("CREATE TABLE burst (id INTEGER PRIMARY KEY, b BLOB NOT NULL)").expect("create");
        let size = 256 << 10;
        // 64 rows of 256 KiB, each transaction rewriting all of them (a transaction's own
        // frames are overwritten in place, so rewriting a few rows would add little log).
        let rows = 64;
        for id in 0..rows {
            conn.execute("INSERT INTO burst (id, b) VALUES (?1, ?2)", rusqlite::params![id, vec![1u8; size]]).expect("insert");
        }
        let alive = std::sync::Arc::new(());
        let shared = Shared::default();
        checkpointer(&path, std::sync::Arc::downgrade(&alive), shared.clone()).expect("checkpointer");
        // A reader coming and going, as intake's lookups do (rarely enough that a restart
        // seldom finds it reading and is put off: on a loaded machine that could let the
        // log pass the bound below).
        let reader = {
            let (path, stop) = (path.clone(), scratch.stop.clone());
            std::thread::spawn(move || {
                let conn = Connection::open(&path).expect("a reader");
                while !stop.load(Ordering::Relaxed) {
                    let n: i64 = conn.query_row("SELECT COUNT(*) FROM burst", [], |r| r.get(0)).expect("read");
                    assert_eq!(n, rows);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let wal = wal_path(&path);
        let wal_size = || std::fs::metadata(&wal).map(|m| m.len() as i64).unwrap_or(0);
        let written = 6 * WAL_RESTART_BYTES;
        // 16 MiB a transaction, written into the log as it goes (a small page cache spills
        // it), so that the passive copies never catch up with the log between two
        // transactions.
        conn.pragma_update(None, "cache_size", 64).expect("cache size");
        let per_tx = rows;
        let mut seen = crate::turns::asks();
        let mut largest = 0;
        for t in 0..written / (per_tx * size as i64) {
            crate::turns::let_others_in(&mut seen);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
            shared.writing.store(true, Ordering::Release);
            // Far longer than the checkpointer's 50 tries, as an import's batch of 4,096
            // rows; the transaction's snapshot is older than its writes, so SQLite cannot
            // start the log over by itself when they begin.
            std::thread::sleep(Duration::from_millis(100));
            for k in 0..per_tx {
                let i = t * per_tx + k;
                tx.execute("UPDATE burst SET b = ?1 WHERE id = ?2", rusqlite::params![vec![i as u8; size], k]).expect("update");
            }
            tx.commit().expect("commit");
            shared.writing.store(false, Ordering::Release);
            largest = largest.max(wal_size());
        }
        scratch.stop.store(true, Ordering::Relaxed);
        reader.join().expect("the reader");
        drop(alive);
        // Started over within a transaction or two of passing the restart size, the file
        // stays under 100 MB; never started over, it holds all 288 MB.
        assert!(
            largest < written / 2,
            "the WAL file reached {largest} bytes while {written} were written: the log was not started over in time"
        );
        drop(conn);
        std::thread::sleep(Duration::from_millis(300));
    }

    /// A reader that keeps a snapshot with frames of the log makes a restart wait for it:
    /// the checkpointer gives up after a few milliseconds and puts the restart off, so the
    /// writer is never held for long (with SQLite's usual busy handler each try held it
    /// for the whole timeout); once the reader has gone the log is started over.
    #[test]
    fn a_long_reader_puts_the_restart_off_without_holding_the_writer() {
        let scratch = Scratch::new("long-reader");
        let path = scratch.dir.join("w.db");
        drop(Connection::open(&path).expect("create the file"));
        let conn = open(&path).expect("open");
        conn.execute_batch("CREATE TABLE burst (id INTEGER PRIMARY KEY, b BLOB NOT NULL)").expect("create");
        let size = 256 << 10;
        for id in 0..16 {
            conn.execute("INSERT INTO burst (id, b) VALUES (?1, ?2)", rusqlite::params![id, vec![1u8; size]]).expect("insert");
        }
        // The reader's snapshot holds the frames written so far.
        let reader = Connection::open(&path).expect("a reader");
        reader.execute_batch("BEGIN").expect("begin");
        let n: i64 = reader.query_row("SELECT COUNT(*) FROM burst", [], |r| r.get(0)).expect("read");
        assert_eq!(n, 16);
        let alive = std::sync::Arc::new(());
        checkpointer(&path, std::sync::Arc::downgrade(&alive), Default::default()).expect("checkpointer");
        let wal = wal_path(&path);
        let wal_size = || std::fs::metadata(&wal).map(|m| m.len() as i64).unwrap_or(0);
        let mut longest = Duration::ZERO;
        let mut write = |i: i64| {
            let started = std::time::Instant::now();
            conn.execute("UPDATE burst SET b = ?1 WHERE id = ?2", rusqlite::params![vec![i as u8; size], i % 16]).expect("update");
            longest = longest.max(started.elapsed());
        };
        // Three times the restart size while the reader stays: every restart is put off.
        let mut i = 0;
        while i < 3 * WAL_RESTART_BYTES / size as i64 {
            write(i);
            i += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(wal_size() > 2 * WAL_RESTART_BYTES, "the reader's snapshot kept the log from being started over");
        reader.execute_batch("COMMIT").expect("the reader ends");
        // The restart was put off for at most 5 s; slower writes until the file is cut back.
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while wal_size() > WAL_SIZE_LIMIT && std::time::Instant::now() < until {
            write(i);
            i += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(alive);
        assert!(wal_size() <= WAL_SIZE_LIMIT, "the log was started over once the reader had gone ({} bytes)", wal_size());
        // A try held the writer for about 5–8 ms at most; this bound only catches a hold of
        // the whole 10 s busy timeout.
        assert!(longest < Duration::from_secs(2), "a write waited {longest:?} for the checkpointer");
        drop(conn);
        drop(reader);
        std::thread::sleep(Duration::from_millis(300));
    }

    /// A failed flush of the database file stops the checkpointer for good: the log is not
    /// started over (it still holds every commit), and the flag the flushing threads share
    /// is set, so nothing more is acknowledged. Without the stop, the next round's fsync
    /// succeeds (the kernel reports a lost write once) and the restart overwrites the frames
    /// of pages the disk never took.
    #[test]
    fn a_failed_flush_of_the_database_file_keeps_the_log_and_stops_acknowledgements() {
        let scratch = Scratch::new("ckpt-fail");
        let path = scratch.dir.join("w.db");
        drop(Connection::open(&path).expect("create the file"));
        let conn = open(&path).expect("open");
        conn.execute_batch("CREATE TABLE burst (id INTEGER PRIMARY KEY, b BLOB NOT NULL)").expect("create");
        let size = 256 << 10;
        // A reader's snapshot keeps SQLite from starting the log over by itself (it would
        // when a passive copy caught up with the writer between two inserts).
        let reader = Connection::open(&path).expect("a reader");
        reader.execute_batch("BEGIN").expect("begin");
        let _: i64 = reader.query_row("SELECT COUNT(*) FROM burst", [], |r| r.get(0)).expect("read");
        let alive = std::sync::Arc::new(());
        let failed = std::sync::Arc::new(AtomicBool::new(false));
        static SYNCS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        fn failing_sync(_: &Connection) -> anyhow::Result<()> {
            SYNCS.fetch_add(1, Ordering::SeqCst);
            anyhow::bail!("fsync: Input/output error (injected)")
        }
        checkpointer_with(&path, std::sync::Arc::downgrade(&alive), Shared { failed: failed.clone(), ..Default::default() }, failing_sync)
            .expect("checkpointer");
        let wal = wal_path(&path);
        let wal_size = || std::fs::metadata(&wal).map(|m| m.len() as i64).unwrap_or(0);
        // Three times the restart size, in new rows: the log only ever grows.
        let rows = 3 * WAL_RESTART_BYTES / size as i64;
        let mut largest = 0;
        for id in 0..rows {
            conn.execute("INSERT INTO burst (id, b) VALUES (?1, ?2)", rusqlite::params![id, vec![id as u8; size]]).expect("insert");
            largest = largest.max(wal_size());
            std::thread::sleep(Duration::from_millis(2));
        }
        // The checkpointer's rounds are 100 ms apart.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while !failed.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(failed.load(Ordering::SeqCst), "the failed flush was not reported to the flushing threads");
        // Later rounds try nothing more.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(SYNCS.load(Ordering::SeqCst), 1, "the checkpointer went on after the failed flush");
        assert!(wal_size() >= largest && largest > 2 * WAL_RESTART_BYTES, "the log was started over after the failed flush");
        // The flushing threads share the flag: a batch flushed now is not acknowledged.
        let (tx, rx) = std::sync::mpsc::channel::<Committed>();
        let shared = Flushers { rx: std::sync::Mutex::new(rx), failed: failed.clone() };
        let (reply, answered) = tokio::sync::oneshot::channel();
        let done = super::super::Done::Events(super::super::EventsReply { accepted: 1, lead_id: None });
        tx.send((vec![Ok(done)], vec![reply], Vec::new())).expect("send");
        drop(tx);
        flusher(&wal, &shared, std::sync::Arc::new(()));
        assert!(matches!(answered.blocking_recv().expect("an answer"), Err(IntakeError::Storage(_))));
        drop(alive);
        reader.execute_batch("COMMIT").expect("the reader ends");
        // Every commit is still there.
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM burst", [], |r| r.get(0)).expect("count");
        assert_eq!(n, rows);
    }

    /// A test's directory, removed when the test ends, passed or failed; and a flag its
    /// helper threads stop at, set then too.
    struct Scratch {
        dir: std::path::PathBuf,
        stop: std::sync::Arc<AtomicBool>,
    }

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("voronka-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("dir");
            Scratch { dir, stop: Default::default() }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A flushing thread answers a batch only after its fsync succeeded and while no flush
    /// has ever failed: after the first failure nothing more is acknowledged.
    #[test]
    fn nothing_is_acknowledged_after_a_failed_flush() {
        let file = std::env::temp_dir().join(format!("voronka-flush-{}.wal", std::process::id()));
        std::fs::write(&file, b"wal").expect("write");
        use super::super::Done;
        let answer = |wal: &Path, failed: bool| -> (Result<Done, IntakeError>, bool) {
            let (tx, rx) = std::sync::mpsc::channel::<Committed>();
            let shared = Flushers { rx: std::sync::Mutex::new(rx), failed: std::sync::Arc::new(AtomicBool::new(failed)) };
            let (reply, answered) = tokio::sync::oneshot::channel();
            let done = Done::Events(super::super::EventsReply { accepted: 1, lead_id: None });
            tx.send((vec![Ok(done)], vec![reply], Vec::new())).expect("send");
            drop(tx);
            flusher(wal, &shared, std::sync::Arc::new(()));
            (answered.blocking_recv().expect("an answer"), shared.failed.load(Ordering::SeqCst))
        };
        let (ok, failed) = answer(&file, false);
        assert!(ok.is_ok() && !failed, "a flushed batch is acknowledged");
        let (err, failed) = answer(&file.with_extension("missing"), false);
        assert!(matches!(err, Err(IntakeError::Storage(_))) && failed, "a failed flush answers an error and is remembered");
        let (err, _) = answer(&file, true);
        assert!(matches!(err, Err(IntakeError::Storage(_))), "after a failed flush a good one acknowledges nothing");
        let _ = std::fs::remove_file(&file);
    }
}
