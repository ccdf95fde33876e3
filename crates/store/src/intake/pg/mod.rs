//! The PostgreSQL intake writers: several tasks share one queue; each batch is one
//! transaction (or one statement, see `batch`), retried on a unique-key conflict or deadlock
//! with another writer or process.

mod batch;
mod search;

use super::{
    Attempt, Done, IntakeOutcome, Job, MAX_ATTEMPTS, Meta, Results, WriterCtx, backoff, commit_jobs, drain_batch, reply_all, run_batch,
};
use crate::scoring::ModelCache;
use anyhow::Context;
use batch::PgBatch;
use search::SearchCleaner;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};

/// `pool` is the writers' own (a connection each); `main`, the store's, serves the search
/// index's merges, so that a merge never holds a writer's connection.
pub(super) fn start(pool: PgPool, main: PgPool, rx: mpsc::Receiver<Job>, writers: usize, models: Arc<ModelCache>) {
    let rx = Arc::new(Mutex::new(rx));
    let busy = Arc::new(AtomicUsize::new(0));
    let cleaner = Arc::new(SearchCleaner::new(main));
    for _ in 0..writers {
        let rx = rx.clone();
        let busy = busy.clone();
        let pool = pool.clone();
        let mut writer =
            PgWriter { pool, ctx: WriterCtx { models: models.clone(), targets: Default::default() }, cleaner: cleaner.clone() };
        tokio::spawn(async move {
            loop {
                let (metas, replies) = {
                    let mut rx = rx.lock().await;
                    let Some(first) = rx.recv().await else { return };
                    let (mut metas, mut replies) = drain_batch(first, &mut rx, super::PG_MAX_BATCH);
                    if metas.len() < GATHER && busy.load(Ordering::Acquire) > 0 {
                        gather(&mut rx, &mut metas, &mut replies).await;
                    }
                    (metas, replies)
                };
                let results = {
                    // Counted down however the commit ends (a panic included), or every
                    // later small batch would wait.
                    let _busy = Busy::new(&busy);
                    commit_jobs(&metas, &mut writer).await
                };
                reply_all(results, replies);
            }
        });
    }
}

/// A batch smaller than this, taken while another writer is committing, waits up to
/// `GATHER_WAIT` for more submissions. PostgreSQL spends about half a millisecond of CPU on
/// a transaction whatever its size (its statements, its commit): `bench intake`'s floor
/// shows 134 µs of PostgreSQL's CPU a lead at 8 leads a transaction and 68 µs at 64. With
/// four writers each taking whatever had queued, batches averaged 8 leads and PostgreSQL
/// took 240 µs a lead; gathering, about 30 and 150–190 µs. Under a light load no other
/// writer is busy, so a lone submission never waits.
const GATHER: usize = 32;
const GATHER_WAIT: Duration = Duration::from_micros(1500);

/// One writer committing, for as long as it lives.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(n: &'a AtomicUsize) -> Busy<'a> {
        n.fetch_add(1, Ordering::AcqRel);
        Busy(n)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn gather(rx: &mut mpsc::Receiver<Job>, metas: &mut Vec<Meta>, replies: &mut Vec<super::ReplyTx>) {
    let deadline = tokio::time::Instant::now() + GATHER_WAIT;
    while metas.len() < GATHER {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(j)) => {
                metas.push(j.meta);
                replies.push(j.reply);
            }
            Ok(None) | Err(_) => break,
        }
    }
}

struct PgWriter {
    pool: PgPool,
    ctx: WriterCtx,
    cleaner: Arc<SearchCleaner>,
}

impl Attempt for PgWriter {
    async fn attempt(&mut self, jobs: &[Meta]) -> anyhow::Result<Results> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = self.pool.acquire().await.context("failed to take an intake connection")?;
            match run_batch(PgBatch::new(conn), jobs, &mut self.ctx).await {
                Ok(v) => {
                    let created = v
                        .iter()
                        .filter(
                            |r| matches!(r, Ok(Done::Lead(l)) if matches!(l.outcome, IntakeOutcome::Created | IntakeOutcome::Returning)),
                        )
                        .count();
                    self.cleaner.created(created as u64);
                    return Ok(v);
                }
                Err(e) if attempt < MAX_ATTEMPTS && e.is_retryable() => {
                    tracing::debug!(error = %e, attempt, "intake write conflict; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(anyhow::Error::new(e).context("failed to commit intake batch")),
            }
        }
    }
}
