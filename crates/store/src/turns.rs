//! Turns at SQLite's write lock between the intake writer and the process's other writers.
//!
//! The intake writer commits batch after batch under load (an import keeps it busy for
//! minutes) and takes the lock again microseconds after each commit. Another connection
//! waiting with SQLite's own busy handler sleeps 1, 2, 5 … 100 ms between tries and got in
//! only when a try happened to fall into that gap: during a 300,000-row import the
//! import's progress write (its heartbeat, which keeps the run claimed for 10 s) waited
//! 2.9 and 6.5 s, and a manager's write waits as long — after 10 s it would fail with
//! "database is locked".
//!
//! So the other writing connections of this process (the shared write pool, the
//! re-score's, and the bookkeeping connection for an import's progress and rejected rows;
//! the search index and the outbox may fall behind and wait as SQLite does) wait with
//! [`others_wait`]: they try again every
//! 100 µs, and from 2–3 ms of waiting on count each try in [`ASKS`] (a shorter wait ends
//! in one of the intake's own pauses between requests, and a let-in costs the intake a
//! pause). The intake writer, before each batch, calls
//! [`let_others_in`]: when someone asked since its last batch, it holds back until the
//! asking stops for a moment (the waiter got the lock) or a few milliseconds have passed,
//! then begins its batch, which waits for that writer's commit with its own busy handler.
//! A waiter that missed the moment asks again and is let in before the next batch.
//!
//! The intake's checkpointer asks too, from its first try, when it starts the log over
//! (`intake::sqlite::checkpointer`): during an import the writer's batches follow each other
//! with no gap it could find in its few milliseconds of tries, so the log was never started
//! over and grew by every batch (1.5 GB for 400,000 rows).
//!
//! The count is one for the process: with several databases open in one process (tests)
//! a writer of one may make another's intake hold back for a moment, which costs nothing
//! else.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Tries of waiting writers, ever.
static ASKS: AtomicU64 = AtomicU64::new(0);

/// How often a waiting writer tries again.
const POLL: Duration = Duration::from_micros(100);
/// A waiter asks to be let in from this try on (after 2–3 ms).
const ASK_AFTER_TRIES: i32 = 20;
/// The intake writer lets a waiter in once nobody has asked for this long (three of its
/// tries, with the kernel's timer slack).
const QUIET: Duration = Duration::from_micros(400);
/// At most this long per batch (a waiter held up by a third connection, the re-score's
/// long transaction say, is not waited for here: the intake's own busy handler does that).
const MOST: Duration = Duration::from_millis(5);

thread_local! {
    /// When the current wait of this thread began.
    static SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The busy handler of a writer other than the intake: tries again after [`POLL`], asking
/// for a turn once it has waited [`ASK_AFTER_TRIES`] tries, for at most `limit` in all
/// (then SQLite answers `SQLITE_BUSY`).
pub(crate) fn others_wait(tries: i32, limit: Duration) -> bool {
    let now = Instant::now();
    let since = SINCE.with(|s| {
        if tries == 0 || s.get().is_none() {
            s.set(Some(now));
        }
        s.get().unwrap_or(now)
    });
    if now.duration_since(since) >= limit {
        return false;
    }
    // A wait of a few tries ends in one of the intake's own pauses (for requests); only a
    // longer one asks to be let in, which costs the intake a pause of its own.
    if tries >= ASK_AFTER_TRIES {
        ASKS.fetch_add(1, Ordering::Release);
    }
    std::thread::sleep(POLL);
    true
}

/// [`others_wait`] for up to 10 s, as the write pool's busy timeout was.
fn pool_wait(tries: i32) -> bool {
    others_wait(tries, Duration::from_secs(10))
}

/// [`others_wait`] for up to 30 s: the re-score's connections and an import's bookkeeping.
pub(crate) fn long_wait(tries: i32) -> bool {
    others_wait(tries, Duration::from_secs(30))
}

extern "C" fn pool_wait_c(_data: *mut std::ffi::c_void, tries: std::ffi::c_int) -> std::ffi::c_int {
    // A panic must not cross into C; there is none to catch here, but be sure.
    std::panic::catch_unwind(|| pool_wait(tries)).unwrap_or(false) as std::ffi::c_int
}

/// Makes a connection of the shared write pool wait with [`others_wait`] (replacing the
/// busy timeout sqlx set).
pub(crate) async fn install(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is the open connection's handle, locked for this call; the handler is a
    // plain function with no data, valid for the life of the program.
    let rc = unsafe { rusqlite::ffi::sqlite3_busy_handler(db, Some(pool_wait_c), std::ptr::null_mut()) };
    if rc != rusqlite::ffi::SQLITE_OK {
        return Err(sqlx::Error::Protocol(format!("cannot set the SQLite busy handler (code {rc})")));
    }
    Ok(())
}

/// The intake writer's side, before each batch: when another writer asked for the lock
/// since the last call, waits until it stopped asking (it got the lock) or [`MOST`] has
/// passed. Returns how long it held back.
pub(crate) fn let_others_in(seen: &mut u64) -> Duration {
    let mut last = ASKS.load(Ordering::Acquire);
    if last == *seen {
        return Duration::ZERO;
    }
    let start = Instant::now();
    loop {
        std::thread::sleep(QUIET);
        let now = ASKS.load(Ordering::Acquire);
        if now == last || start.elapsed() >= MOST {
            *seen = now;
            return start.elapsed();
        }
        last = now;
    }
}

/// Asks the intake writer to hold back before its next batch (see [`let_others_in`]): for
/// a waiter with a busy handler of its own, the intake's checkpointer.
pub(crate) fn ask() {
    ASKS.fetch_add(1, Ordering::Release);
}

/// Tries counted so far (for the intake writer's first `seen`).
pub(crate) fn asks() -> u64 {
    ASKS.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, TransactionBehavior};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn open(path: &std::path::Path) -> Connection {
        let c = Connection::open(path).expect("open");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.pragma_update(None, "synchronous", "NORMAL").expect("sync");
        c
    }

    /// The intake writer's own busy handler: it polls, it does not ask.
    fn intake_wait(_tries: i32) -> bool {
        std::thread::sleep(Duration::from_micros(100));
        true
    }

    #[test]
    fn a_waiting_writer_is_let_in_between_the_intake_writers_transactions() {
        // The intake writer holds the lock 10 ms a batch and takes it again microseconds
        // after each commit; another writer polling every 100 µs hit that gap only now and
        // then (and with SQLite's own busy handler, sleeping up to 100 ms, almost never). Let
        // in before each batch, it writes at least once in most of the intake's batches.
        let path = std::env::temp_dir().join(format!(
            "vk-turns-{}-{}.db",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        let intake = open(&path);
        intake.execute_batch("CREATE TABLE a (x INTEGER); CREATE TABLE b (x INTEGER);").expect("schema");
        let stop = Arc::new(AtomicBool::new(false));
        let other = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = open(&path);
                c.busy_handler(Some(long_wait)).expect("handler");
                let mut writes = 0;
                while !stop.load(Ordering::SeqCst) {
                    c.execute("INSERT INTO b (x) VALUES (1)", []).expect("the other writer's write");
                    writes += 1;
                    // A manager's edits come apart, not back to back.
                    std::thread::sleep(Duration::from_millis(2));
                }
                writes
            })
        };
        let mut intake = intake;
        intake.busy_handler(Some(intake_wait)).expect("handler");
        // The other writer is waiting before the first batch.
        std::thread::sleep(Duration::from_millis(20));
        let mut seen = asks();
        let batches = 40;
        for i in 0..batches {
            let_others_in(&mut seen);
            let tx = intake.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
            tx.execute("INSERT INTO a (x) VALUES (?1)", [i]).expect("insert");
            std::thread::sleep(Duration::from_millis(10));
            tx.commit().expect("commit");
        }
        stop.store(true, Ordering::SeqCst);
        let writes = other.join().expect("the other writer");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        assert!(writes >= batches / 2, "the other writer wrote {writes} times in the intake's {batches} batches");
    }
}
