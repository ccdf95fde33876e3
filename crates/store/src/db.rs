//! The two backends behind one enum. SQLite keeps a pool of readers and one writer
//! connection (SQLite has one writer anyway; queueing in-process avoids SQLITE_BUSY);
//! PostgreSQL uses one pool for both.

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            anyhow::bail!("unsupported database URL {:?}: use sqlite://PATH or postgres://…", redact(url))
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The file of a `sqlite://` URL (None for other backends).
pub fn sqlite_path(url: &str) -> Result<Option<std::path::PathBuf>> {
    if Backend::of_url(url)? != Backend::Sqlite {
        return Ok(None);
    }
    let opts = SqliteConnectOptions::from_str(url).with_context(|| format!("invalid SQLite URL {url:?}"))?;
    let path = opts.get_filename().to_path_buf();
    if path.as_os_str().is_empty() || path.to_string_lossy().contains(":memory:") {
        anyhow::bail!("an in-memory SQLite database cannot be shared by the server's connections: use sqlite://PATH");
    }
    Ok(Some(path))
}

#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite { read: SqlitePool, write: SqlitePool },
    Pg(PgPool),
}

impl Db {
    pub(crate) fn is_sqlite(&self) -> bool {
        matches!(self, Db::Sqlite { .. })
    }
}

/// Runs `$body` with `$p` bound to the pool that serves reads on either backend; the body
/// is compiled once per backend, so one SQL text with `$1` placeholders serves both.
macro_rules! with_read {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite { read: $p, .. } => $body,
            $crate::db::Db::Pg($p) => $body,
        }
    };
}

/// Like `with_read!`, with the pool for writes (SQLite's single writer connection).
macro_rules! with_write {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite { write: $p, .. } => $body,
            $crate::db::Db::Pg($p) => $body,
        }
    };
}

pub(crate) use {with_read, with_write};

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions { max_connections: 16 }
    }
}

impl Db {
    pub(crate) async fn connect(url: &str, opts: &PoolOptions) -> Result<Db> {
        match Backend::of_url(url)? {
            Backend::Sqlite => {
                let base = SqliteConnectOptions::from_str(url)
                    .with_context(|| format!("invalid SQLite URL {url:?}"))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a commit is on disk (WAL fsynced) before it is acknowledged.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .pragma("cache_size", "-65536")
                    .pragma("temp_store", "memory")
                    // The WAL file is cut back when the log starts over after a burst.
                    .pragma("journal_size_limit", crate::intake::WAL_SIZE_LIMIT.to_string())
                    // The intake's checkpointer copies the log back (every store runs it); a
                    // commit here does not, and after a failed flush nothing but it decides
                    // whether the log may be started over (see `intake::sqlite::checkpointer`).
                    .pragma("wal_autocheckpoint", "0")
                    .statement_cache_capacity(200);
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    // Waits for the intake writer's lock in turns (see `turns`), not by
                    // SQLite's sleeping busy handler.
                    .after_connect(|conn, _| Box::pin(crate::turns::install(conn)))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(base.clone())
                    .await
                    .with_context(|| format!("cannot open SQLite database {url:?}"))?;
                let read = SqlitePoolOptions::new()
                    .max_connections(opts.max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(base.pragma("query_only", "true"))
                    .await
                    .with_context(|| format!("cannot open SQLite database {url:?}"))?;
                Ok(Db::Sqlite { read, write })
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .with_context(|| format!("invalid PostgreSQL URL {:?}", redact(url)))?
                    // Plan every execution with the real parameters and table sizes: a cached
                    // generic plan made while a table was small (a fresh installation) would
                    // keep sequential scans long after the table has grown.
                    .options([("plan_cache_mode", "force_custom_plan")]);
                // One direct connection first: an unreachable server is a clear error now,
                // not a pool retrying until its acquire timeout.
                use sqlx::Connection;
                sqlx::PgConnection::connect_with(&options)
                    .await
                    .with_context(|| format!("cannot connect to PostgreSQL at {:?}", redact(url)))?
                    .close()
                    .await?;
                let pool = PgPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await
                    .with_context(|| format!("cannot connect to PostgreSQL at {:?}", redact(url)))?;
                Ok(Db::Pg(pool))
            }
        }
    }

    /// Connections for the PostgreSQL intake writers. Their statements are point lookups and
    /// inserts, for which a sequential scan is never right; forbidding it keeps cached plans
    /// (made once per connection) good even when a table was tiny at planning time.
    pub(crate) async fn pg_intake_pool(url: &str, connections: u32) -> Result<PgPool> {
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid PostgreSQL URL {:?}", redact(url)))?
            .options([("enable_seqscan", "off"), ("enable_hashjoin", "off")]);
        PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {:?}", redact(url)))
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Pg(_) => Backend::Postgres,
        }
    }

    pub(crate) async fn migrate(&self) -> Result<()> {
        match self {
            Db::Sqlite { write, .. } => {
                sqlx::migrate!("./migrations/sqlite").run(write).await.context("failed to migrate the SQLite database")
            }
            Db::Pg(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await.context("failed to migrate the PostgreSQL database"),
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Db::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Db::Pg(p) => p.close().await,
        }
    }
}

/// A write conflict that a retry resolves: a unique key taken by a concurrent transaction,
/// a deadlock or serialization failure (PostgreSQL), or a busy database (SQLite).
pub(crate) fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            if d.is_unique_violation() {
                return true;
            }
            matches!(d.code().as_deref(), Some("40001") | Some("40P01") | Some("5") | Some("6") | Some("517"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_their_backend() {
        assert_eq!(Backend::of_url("sqlite://./voronka.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of_url("postgresql://u@h/db").unwrap(), Backend::Postgres);
        assert!(Backend::of_url("mysql://u@h/db").is_err());
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
