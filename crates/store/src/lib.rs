//! The only place that speaks SQL: SQLite and PostgreSQL behind one `Store`, their
//! migrations, the intake writer (group commit) and the read models.

mod admin;
pub mod analytics;
pub mod audit;
pub mod convert;
mod db;
pub mod hooks;
pub mod imports;
pub mod intake;
pub mod leads;
pub mod merge;
pub mod outbox;
pub mod provision;
pub mod rescore;
pub mod routing;
pub mod scoring;
pub mod seed;
pub mod sessions;
pub mod triage;
pub mod ts;
mod turns;
pub mod users;
pub mod workflow;

use anyhow::Result;
use std::sync::Arc;
use voronka_domain::Clock;

pub use admin::{CountOf, Form, FormSpec, SCOPES, Site, TokenInfo, TokenListed, hash_token, random_key};
pub use db::{Backend, PoolOptions, redact, sqlite_path};
pub use intake::{EventsCommand, EventsReply, TrackedEvent};
pub use intake::{IdempotencyKey, IntakeCommand, IntakeError, IntakeHandle, IntakeOutcome, IntakeReply, PendingReply, Submission};
pub use leads::{Cursor, ExactContact, Lead, LeadFilter, LeadPage, LeadSort, TimelineItem, TimelinePage, decode_timeline_cursor};
pub use rescore::RescoreReport;
pub use ts::Ts;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub pool: PoolOptions,
    /// Intake writer tasks; SQLite has one writer whatever is asked.
    pub writers: usize,
    /// Score-index entries a priority or score list walks on SQLite before it reads the
    /// filters' matches and sorts them instead (see `Store::leads`).
    pub list_walk_rows: i64,
    /// Changed score rows from which a SQLite re-score writes in one transaction that
    /// rebuilds the score indexes (see `rescore::sqlite_pass`), when they are also a tenth
    /// of the leads.
    pub rescore_bulk_rows: usize,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig { url: url.into(), pool: PoolOptions::default(), writers: 4, list_walk_rows: 10_000, rescore_bulk_rows: 50_000 }
    }
}

/// The storage of one Voronka installation. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: db::Db,
    intake: IntakeHandle,
    clock: Arc<dyn Clock>,
    pub(crate) models: Arc<scoring::ModelCache>,
    /// The SQLite file, for the passes that read it directly.
    pub(crate) sqlite_path: Option<std::path::PathBuf>,
    pub(crate) list_walk_rows: i64,
    pub(crate) rescore_bulk_rows: usize,
    /// The SQLite connection for bookkeeping writes (see `Store::bookkeeping`).
    pub(crate) bookkeeping_conn: Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
    /// Set by `close`: the bookkeeping connection is not opened again.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    /// Opens the database named by the URL, applies pending migrations and starts the
    /// intake writers.
    pub async fn open(cfg: &StoreConfig, clock: Arc<dyn Clock>) -> Result<Store> {
        let db = db::Db::connect(&cfg.url, &cfg.pool).await?;
        db.migrate().await?;
        let models = Arc::new(scoring::ModelCache::default());
        let intake = intake::start(&db, &cfg.url, clock.clone(), cfg.writers, models.clone()).await?;
        let sqlite_path = db::sqlite_path(&cfg.url)?;
        let store = Store {
            db,
            intake,
            clock,
            models,
            sqlite_path,
            list_walk_rows: cfg.list_walk_rows.max(1),
            rescore_bulk_rows: cfg.rescore_bulk_rows,
            bookkeeping_conn: Default::default(),
            closed: Default::default(),
        };
        store.refresh_model().await?;
        store.seed_reasons().await?;
        Ok(store)
    }

    /// Applies pending migrations and returns; for `voronka migrate`.
    pub async fn migrate(url: &str) -> Result<()> {
        let db = db::Db::connect(url, &PoolOptions { max_connections: 2 }).await?;
        let r = db.migrate().await;
        db.close().await;
        r
    }

    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    pub fn intake(&self) -> &IntakeHandle {
        &self.intake
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn now(&self) -> Ts {
        Ts::from(self.clock.now())
    }

    /// Answers when the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        db::with_read!(&self.db, p => {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }

    /// Runs `f` on the SQLite connection kept for bookkeeping writes: the search index's
    /// batches, the outbox's claims and done marks, and an import's progress and rejected
    /// rows. Its commits do not fsync
    /// (`synchronous=NORMAL`), so they hold the database's write lock, which the intake
    /// waits for, only for their own work; the next durable commit (the intake's fsync of
    /// the WAL, which holds the frames in commit order) puts them on disk. Only writes
    /// whose loss in a crash is harmless go here: an index batch lost is made again, a
    /// claim lost lapses, a done mark lost means the message is handled again, which its
    /// handlers allow (delivery is at least once), an import's progress or rejected row
    /// lost is made again by the resumed run. The search index and the outbox wait for
    /// the lock as SQLite does (sleeping, ever longer, up to 30 s): while the intake writer
    /// is busy they fall behind, which they may. SQLite only.
    pub(crate) async fn bookkeeping<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.bookkeeping_as(false, f).await
    }

    /// `bookkeeping` for a write that may not fall behind a busy intake (an import's
    /// heartbeat): it waits for the lock in turns with the intake writer (see `turns`).
    pub(crate) async fn bookkeeping_in_turn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.bookkeeping_as(true, f).await
    }

    async fn bookkeeping_as<T: Send + 'static>(
        &self,
        in_turn: bool,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = self.sqlite_file()?;
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Other(anyhow::anyhow!("the store is closed")));
        }
        let conn = self.bookkeeping_conn.clone();
        let r = tokio::task::spawn_blocking(move || -> rusqlite::Result<T> {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            let c = match guard.as_mut() {
                Some(c) => c,
                None => {
                    let c = rusqlite::Connection::open_with_flags(
                        &path,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    c.pragma_update(None, "synchronous", "NORMAL")?;
                    c.pragma_update(None, "wal_autocheckpoint", 0)?;
                    c.pragma_update(None, "journal_size_limit", crate::intake::WAL_SIZE_LIMIT)?;
                    guard.insert(c)
                }
            };
            const WAIT: std::time::Duration = std::time::Duration::from_secs(30);
            if in_turn {
                c.busy_handler(Some(turns::long_wait))?;
                let r = f(c);
                c.busy_timeout(WAIT)?;
                r
            } else {
                c.busy_timeout(WAIT)?;
                f(c)
            }
        })
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("a bookkeeping write stopped: {e}")))?;
        r.map_err(|e| StoreError::Other(anyhow::anyhow!("a bookkeeping write failed: {e}")))
    }

    /// Closes the pools; every acknowledged write is already committed.
    pub async fn close(&self) {
        // The bookkeeping connection closes with the pools (a write in progress finishes
        // first: it holds the lock), and is not opened again.
        self.closed.store(true, std::sync::atomic::Ordering::Relaxed);
        let conn = self.bookkeeping_conn.clone();
        let _ = tokio::task::spawn_blocking(move || drop(conn.lock().unwrap_or_else(|p| p.into_inner()).take())).await;
        self.db.close().await;
        // After a failed flush the log must stay as it is (see `intake::sqlite::checkpointer`).
        if let Some(path) = self.sqlite_path.clone().filter(|_| !self.intake.has_failed()) {
            // Everything the log holds is copied into the database file, flushed, and the
            // log emptied: the file alone then holds every write, as a copy of it expects.
            // Without it the log kept the last writes (after a `bench seed`, 360 MB of it:
            // the last of the search index), and a copy of the file alone lacked them. It
            // never waits for a lock: tried again for up to a second while the intake's
            // checkpointer copies, and given up when another process is using the database.
            let done = tokio::task::spawn_blocking(move || -> rusqlite::Result<bool> {
                let c = rusqlite::Connection::open_with_flags(
                    &path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::ZERO)?;
                c.pragma_update(None, "synchronous", "FULL")?;
                for _ in 0..20 {
                    match c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok(r.get::<_, i64>(0)? == 0)) {
                        Ok(true) => return Ok(true),
                        Ok(false) => {}
                        Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DatabaseBusy => {}
                        Err(e) => return Err(e),
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Ok(false)
            })
            .await;
            match done {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    tracing::warn!("the SQLite log is in use by another connection; it was not emptied at close (it is copied back later)")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot empty the SQLite log at close"),
                Err(e) => tracing::warn!(error = %e, "cannot empty the SQLite log at close"),
            }
        }
    }
}
