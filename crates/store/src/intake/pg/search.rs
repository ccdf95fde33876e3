//! The search index's pending list, merged in the background while leads arrive, so that no
//! intake batch waits for the merge.

use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Leads created between two cleanings of the search index's pending list.
const CLEAN_EVERY: u64 = 1_000;

/// Empties the pending list of the trigram index of the lead search text in the background,
/// after every `CLEAN_EVERY` leads the intake created.
///
/// A GIN index takes new entries into an unsorted pending list and merges them into the index
/// in one go when the list passes `gin_pending_list_limit` (4 MB): the insert that finds the
/// list full does the merge, tens of milliseconds inside an intake transaction whose 30 or so
/// submissions all wait for it (with autovacuum off, as on this project's reference machines,
/// nothing else ever does it). About 1,600 leads fill the list. Merging it here instead, with
/// `gin_clean_pending_list`, is the same work on another connection (of the store's pool,
/// not the writers'): on 2026-11-25 it halved the intake's p99 at 1 M leads (46–52 ms →
/// 23–27 ms) at the same rate. Merging each entry as it comes (`fastupdate = off`) took 290 µs of PostgreSQL's CPU
/// a lead against 140, and a rate of 4,230 leads/s against 7,230–7,650.
pub(super) struct SearchCleaner {
    pool: PgPool,
    created: std::sync::atomic::AtomicU64,
    running: Arc<std::sync::atomic::AtomicBool>,
    off: Arc<std::sync::atomic::AtomicBool>,
}

impl SearchCleaner {
    pub(super) fn new(pool: PgPool) -> SearchCleaner {
        SearchCleaner { pool, created: Default::default(), running: Default::default(), off: Default::default() }
    }

    pub(super) fn created(&self, n: u64) {
        if n == 0 || self.created.fetch_add(n, Ordering::AcqRel) + n < CLEAN_EVERY || self.off.load(Ordering::Acquire) {
            return;
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.created.store(0, Ordering::Release);
        /// Clears the flag however the task ends (a runtime shut down under it included).
        struct Finished(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Finished {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let done = Finished(self.running.clone());
        let (pool, off) = (self.pool.clone(), self.off.clone());
        tokio::spawn(async move {
            let _done = done;
            let r: Result<Option<i64>, sqlx::Error> =
                sqlx::query_scalar("SELECT gin_clean_pending_list(c) FROM to_regclass('leads_search_trgm') AS c WHERE c IS NOT NULL")
                    .fetch_optional(&pool)
                    .await;
            match r {
                Ok(Some(pages)) => {
                    metrics::counter!("search_index_cleanings_total").increment(1);
                    metrics::counter!("search_index_pending_pages_merged_total").increment(pages.max(0) as u64);
                    tracing::debug!(pages, "merged the search index's pending list");
                }
                Ok(None) => {
                    off.store(true, Ordering::Release);
                    tracing::warn!("the search index leads_search_trgm is missing; its pending list is not merged in the background");
                }
                Err(e) if permanent(&e) => {
                    // Not the index's owner, say: PostgreSQL's inserts merge the list, as before.
                    off.store(true, Ordering::Release);
                    tracing::warn!(error = %e, "cannot merge the search index's pending list; PostgreSQL's inserts will");
                }
                // A lost connection, a timeout, a shutdown: tried again after the next thousand.
                Err(e) => tracing::warn!(error = %e, "merging the search index's pending list failed"),
            }
        });
    }
}

/// An error that another try would meet again: not the index's owner (42501), not a GIN
/// index (42809).
fn permanent(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("42501") | Some("42809")))
}
