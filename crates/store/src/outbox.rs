//! The transactional outbox read back: background workers claim messages written in the
//! same transactions as the changes that caused them, handle them, and delete them. A
//! claim is a lease in the database, so each message is handled by one process at a time.

use crate::db::Db;
use crate::ts::Ts;
use crate::{Store, StoreError};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub topic: String,
    pub aggregate_id: Option<Uuid>,
    pub payload: Value,
    pub attempts: i32,
}

impl Store {
    /// Claims up to `limit` pending messages for `lease`.
    pub async fn claim_outbox(&self, worker: &str, limit: i64, lease: chrono::Duration) -> Result<Vec<OutboxItem>, StoreError> {
        let now = self.now();
        let until = Ts::from(now.0 + lease);
        let rows: Vec<(i64, String, Option<Uuid>, Value, i32)> = match &self.db {
            // A claim is bookkeeping: lost in a crash, it only lapses.
            Db::Sqlite { .. } => {
                let worker = worker.to_string();
                self.bookkeeping(move |c| {
                    let mut stmt = c.prepare_cached(
                        "UPDATE outbox SET locked_by = ?1, locked_until = ?2, attempts = attempts + 1 WHERE id IN \
                         (SELECT id FROM outbox WHERE done_at IS NULL AND available_at <= ?3 AND (locked_until IS NULL OR locked_until < ?3) ORDER BY id LIMIT ?4) \
                         RETURNING id, topic, aggregate_id, payload, attempts",
                    )?;
                    let rows = stmt.query_map(rusqlite::params![worker, until, now, limit], |r| {
                        let payload: String = r.get(3)?;
                        let payload = serde_json::from_str(&payload)
                            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e)))?;
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, payload, r.get(4)?))
                    })?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                })
                .await?
            }
            Db::Pg(pool) => {
                // Walk the pending index in id order and stop at `limit`. With stale
                // statistics the planner would collect every pending entry in a bitmap and
                // sort them, and a bitmap scan never marks the dead entries that handled
                // messages leave behind until the next vacuum, so each claim reads them again.
                let mut tx = pool.begin().await?;
                sqlx::raw_sql("SET LOCAL enable_bitmapscan = off").execute(&mut *tx).await?;
                let rows = sqlx::query_as(
                    "UPDATE outbox SET locked_by = $1, locked_until = $2, attempts = attempts + 1 WHERE id IN \
                     (SELECT id FROM outbox WHERE done_at IS NULL AND available_at <= $3 AND (locked_until IS NULL OR locked_until < $3) ORDER BY id LIMIT $4 \
                      FOR UPDATE SKIP LOCKED) \
                     RETURNING id, topic, aggregate_id, payload, attempts",
                )
                .bind(worker).bind(until).bind(now).bind(limit)
                .fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows
            }
        };
        let mut items: Vec<OutboxItem> = rows
            .into_iter()
            .map(|(id, topic, aggregate_id, payload, attempts)| OutboxItem { id, topic, aggregate_id, payload, attempts })
            .collect();
        items.sort_by_key(|i| i.id);
        Ok(items)
    }

    /// Deletes handled messages: a message is work to do, not a record (the lead's timeline
    /// is that), and kept rows would grow the table by a row per lead forever.
    pub async fn finish_outbox(&self, ids: &[i64]) -> Result<(), StoreError> {
        if self.db.is_sqlite() {
            // Bookkeeping: a done mark lost in a crash means the message is handled again.
            let ids = ids.to_vec();
            return self
                .bookkeeping(move |c| {
                    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    {
                        let mut stmt = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
                        for id in ids {
                            stmt.execute(rusqlite::params![id])?;
                        }
                    }
                    tx.commit()
                })
                .await;
        }
        if let Db::Pg(pool) = &self.db {
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(ids).execute(pool).await?;
            vacuum_outbox_now_and_then(pool, ids.len() as u64);
        }
        Ok(())
    }

    /// The temperature stored with each of `ids` whose score row was made with the active
    /// model (as of its last scoring: for a lead just created, its temperature now; decay
    /// moves it over days, not within a dispatch). Leads scored with another model are left
    /// out, for the caller to read whole. One query for a whole claim of messages, where
    /// reading each lead whole cost the dispatcher about 0.1 ms a lead.
    pub async fn stored_temperatures(&self, ids: &[Uuid]) -> Result<std::collections::HashMap<Uuid, String>, StoreError> {
        let (version, _) = self.models.active();
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let rows: Vec<(Uuid, String)> = match &self.db {
                Db::Sqlite { read, .. } => {
                    let list = (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
                    let n = chunk.len() + 1;
                    let sql = format!("SELECT lead_id, temperature FROM lead_scores WHERE lead_id IN ({list}) AND model_version = ${n}");
                    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    q.bind(version).fetch_all(read).await?
                }
                Db::Pg(pool) => {
                    sqlx::query_as("SELECT lead_id, temperature FROM lead_scores WHERE lead_id = ANY($1) AND model_version = $2")
                        .bind(chunk)
                        .bind(version)
                        .fetch_all(pool)
                        .await?
                }
            };
            out.extend(rows);
        }
        Ok(out)
    }

    /// Puts a message back for a later try.
    pub async fn retry_outbox(&self, id: i64, at: Ts, error: &str) -> Result<(), StoreError> {
        crate::db::with_write!(&self.db, p => {
            sqlx::query("UPDATE outbox SET available_at = $1, locked_until = NULL, last_error = $2 WHERE id = $3").bind(at).bind(error).bind(id).execute(p).await?;
        });
        Ok(())
    }
}

/// Vacuums the outbox after every 20,000 deleted messages, one vacuum at a time. Each
/// handled message leaves a dead row and dead index entries behind until a vacuum, and every
/// claim walks past them: with autovacuum off (this project's reference machines run
/// PostgreSQL so) a claim cost 50 µs a message after 100,000 leads instead of about 5, and
/// autovacuum's own threshold (a fifth of a table this small) would come too late anyway. A
/// vacuum of the outbox reads only its few live rows' pages and takes milliseconds.
fn vacuum_outbox_now_and_then(pool: &sqlx::PgPool, deleted: u64) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    static DELETED: AtomicU64 = AtomicU64::new(0);
    static VACUUMING: AtomicBool = AtomicBool::new(false);
    if DELETED.fetch_add(deleted, Ordering::AcqRel) + deleted < 20_000 || VACUUMING.swap(true, Ordering::AcqRel) {
        return;
    }
    DELETED.store(0, Ordering::Release);
    let pool = pool.clone();
    /// Clears the flag however the task ends (a runtime shut down under it included).
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            VACUUMING.store(false, Ordering::Release);
        }
    }
    let done = Done;
    tokio::spawn(async move {
        let _done = done;
        // SKIP_LOCKED: when autovacuum is at it already, this one is not needed.
        if let Err(e) = sqlx::raw_sql("VACUUM (SKIP_LOCKED) outbox").execute(&pool).await {
            tracing::warn!(error = %e, "vacuum of the outbox failed");
        }
    });
}
