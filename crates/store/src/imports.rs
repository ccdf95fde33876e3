//! File imports in the database: each run with its counts, every row's outcome (written with
//! the row's lead, in the intake transaction), the mapping last used per source, and the
//! undo of a whole import.

use crate::db::{with_read, with_write};
use crate::ts::Ts;
use crate::workflow::write_tx;
use crate::{Store, StoreError};
use serde::Serialize;
use uuid::Uuid;

/// An import as shown to its user: where it came from, how far it is, what it did.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ImportInfo {
    pub id: Uuid,
    pub source: String,
    pub file_name: String,
    #[serde(skip)]
    pub file_hash: String,
    /// `csv` or `xlsx`.
    pub format: String,
    /// Column → lead field, as used.
    #[schema(value_type = Object)]
    #[sqlx(try_from = "String")]
    pub mapping: JsonText,
    /// The campaign every row's lead is given (unless the row names one).
    pub campaign: Option<String>,
    pub dry_run: bool,
    /// `running`, `done`, `failed` or `undone`.
    pub status: String,
    pub total_rows: Option<i64>,
    pub processed: i64,
    pub created: i64,
    pub repeats: i64,
    pub returned: i64,
    pub rejected: i64,
    /// After an undo: leads removed, and leads kept because people had worked on them.
    pub removed: Option<i64>,
    pub kept: Option<i64>,
    pub actor: String,
    pub error: Option<String>,
    #[schema(value_type = String)]
    pub created_at: Ts,
    #[schema(value_type = Option<String>)]
    pub finished_at: Option<Ts>,
    #[schema(value_type = Option<String>)]
    pub undone_at: Option<Ts>,
}

const IMPORT_COLUMNS: &str = "id, source, file_name, file_hash, format, mapping, campaign, dry_run, status, total_rows, processed, \
    created, repeats, returned, rejected, removed, kept, actor, error, created_at, finished_at, undone_at";

/// A JSON document kept in a TEXT column.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(transparent)]
pub struct JsonText(pub serde_json::Value);

impl TryFrom<String> for JsonText {
    type Error = serde_json::Error;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&s).map(JsonText)
    }
}

/// A new import run.
pub struct NewImport<'a> {
    pub source: &'a str,
    pub file_name: &'a str,
    pub file_hash: &'a str,
    pub format: &'a str,
    pub mapping: &'a serde_json::Value,
    pub campaign: Option<&'a str>,
    pub dry_run: bool,
    pub actor: &'a str,
    /// The file itself when the server runs the import (so it can resume after a restart).
    pub file: Option<&'a [u8]>,
    pub worker: &'a str,
}

/// A row's outcome written outside the intake (rejections, and every row of a dry run).
#[derive(Debug, Clone)]
pub struct RowOutcome {
    pub row: i64,
    pub outcome: &'static str,
    pub lead_id: Option<Uuid>,
    pub reason: Option<String>,
    /// JSON: the bad fields with their messages.
    pub detail: Option<String>,
}

/// One line of an import's report.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReportRow {
    pub row_no: i64,
    pub outcome: String,
    pub lead_id: Option<Uuid>,
    pub reason: Option<String>,
    pub detail: Option<String>,
}

/// Counts of an import's outcomes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ImportCounts {
    pub created: i64,
    pub repeats: i64,
    pub returned: i64,
    pub rejected: i64,
}

impl ImportCounts {
    pub fn total(&self) -> i64 {
        self.created + self.repeats + self.returned + self.rejected
    }
    pub fn add(&mut self, outcome: &str) {
        match outcome {
            "created" => self.created += 1,
            "repeat" => self.repeats += 1,
            "returning" => self.returned += 1,
            _ => self.rejected += 1,
        }
    }
}

/// What an undo did.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct UndoReport {
    /// Leads the import created and the undo removed, with their timelines.
    pub removed: i64,
    /// Leads the import created that people have worked on since: kept.
    pub kept: i64,
    /// Repeat-request events the import added, removed from their leads.
    pub repeats_removed: i64,
}

/// An identity's current lead, for a dry run's forecast.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdentityStatus {
    pub ident: String,
    pub lead_id: Uuid,
    pub status: String,
}

/// Actors whose events on a lead mean somebody worked with it or the person came back:
/// such leads survive an undo of the import that created them.
const WORKED_ON: &str = "(e.actor LIKE 'user:%' OR e.actor LIKE 'token:%' OR e.actor LIKE 'form:%' \
    OR e.actor LIKE 'import:%' OR e.actor LIKE 'webhook:%')";

impl Store {
    pub async fn create_import(&self, n: &NewImport<'_>) -> Result<ImportInfo, StoreError> {
        let id = Uuid::now_v7();
        let now = self.now();
        let mapping = n.mapping.to_string();
        with_write!(&self.db, p => {
            sqlx::query(
                "INSERT INTO imports (id, source, file_name, file_hash, format, mapping, campaign, dry_run, status, actor, file, worker, heartbeat_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', $9, $10, $11, $12, $12)",
            )
            .bind(id).bind(n.source).bind(n.file_name).bind(n.file_hash).bind(n.format).bind(&mapping).bind(n.campaign).bind(n.dry_run)
            .bind(n.actor).bind(n.file).bind(n.worker).bind(now)
            .execute(p).await?;
        });
        self.import_info(id).await?.ok_or(StoreError::NotFound)
    }

    pub async fn import_info(&self, id: Uuid) -> Result<Option<ImportInfo>, StoreError> {
        let sql = format!("SELECT {IMPORT_COLUMNS} FROM imports WHERE id = $1");
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(id).fetch_optional(p).await?))
    }

    /// The newest imports first.
    pub async fn imports(&self, limit: i64) -> Result<Vec<ImportInfo>, StoreError> {
        let sql = format!("SELECT {IMPORT_COLUMNS} FROM imports ORDER BY created_at DESC, id DESC LIMIT $1");
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(limit.clamp(1, 500)).fetch_all(p).await?))
    }

    /// An unfinished import of the same file from the same source, to resume.
    pub async fn resumable_import(&self, file_hash: &str, source: &str) -> Result<Option<ImportInfo>, StoreError> {
        let sql = format!(
            "SELECT {IMPORT_COLUMNS} FROM imports WHERE file_hash = $1 AND source = $2 AND status IN ('running', 'failed') \
             AND dry_run = $3 ORDER BY created_at DESC LIMIT 1"
        );
        Ok(
            with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(file_hash).bind(source).bind(false).fetch_optional(p).await?),
        )
    }

    /// Unfinished imports whose file the server keeps (uploads): resumed at start.
    pub async fn stalled_uploads(&self, stale_before: Ts) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<(Uuid,)> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT id FROM imports WHERE status = 'running' AND dry_run = $2 AND file IS NOT NULL AND (heartbeat_at IS NULL OR heartbeat_at < $1)")
                .bind(stale_before).bind(false).fetch_all(p).await?
        });
        Ok(ids.into_iter().map(|r| r.0).collect())
    }

    pub async fn import_file(&self, id: Uuid) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Option<Vec<u8>>,)> =
            with_read!(&self.db, p => sqlx::query_as("SELECT file FROM imports WHERE id = $1").bind(id).fetch_optional(p).await?);
        Ok(row.and_then(|r| r.0))
    }

    /// Takes the import for `worker` unless another worker's heartbeat is newer than
    /// `stale_before`. Returns whether it is now this worker's.
    pub async fn claim_import(&self, id: Uuid, worker: &str, stale_before: Ts) -> Result<bool, StoreError> {
        let now = self.now();
        let n = with_write!(&self.db, p => {
            sqlx::query(
                "UPDATE imports SET worker = $2, heartbeat_at = $3, status = 'running', error = NULL \
                 WHERE id = $1 AND status IN ('running', 'failed') AND (worker IS NULL OR heartbeat_at IS NULL OR heartbeat_at < $4)",
            )
            .bind(id).bind(worker).bind(now).bind(stale_before).execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Progress, written by the worker that holds the import (which also keeps it claimed).
    /// Returns false when the worker no longer holds it (another took it over): stop.
    pub async fn import_progress(
        &self,
        id: Uuid,
        worker: &str,
        total: Option<i64>,
        processed: i64,
        c: &ImportCounts,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        if self.db.is_sqlite() {
            // Bookkeeping (see `bookkeeping`): a progress lost in a crash is made again by the
            // resumed run, whose counts come from the rows; a heartbeat lost lets the run be
            // resumed sooner. So the write holds SQLite's lock only for itself, not for an
            // fsync of the intake's log, twice a second through an import.
            let (worker, c) = (worker.to_string(), *c);
            let n = self
                .bookkeeping_in_turn(move |conn| {
                    conn.prepare_cached(
                        "UPDATE imports SET heartbeat_at = ?3, total_rows = COALESCE(?4, total_rows), processed = ?5, created = ?6, \
                         repeats = ?7, returned = ?8, rejected = ?9 WHERE id = ?1 AND worker = ?2 AND status = 'running'",
                    )?
                    .execute(rusqlite::params![id, worker, now, total, processed, c.created, c.repeats, c.returned, c.rejected])
                })
                .await?;
            return Ok(n == 1);
        }
        let n = with_write!(&self.db, p => {
            sqlx::query(
                "UPDATE imports SET heartbeat_at = $3, total_rows = COALESCE($4, total_rows), processed = $5, created = $6, repeats = $7, \
                 returned = $8, rejected = $9 WHERE id = $1 AND worker = $2 AND status = 'running'",
            )
            .bind(id).bind(worker).bind(now).bind(total).bind(processed).bind(c.created).bind(c.repeats).bind(c.returned).bind(c.rejected)
            .execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Ends this worker's run: `done` with the counts read back from the rows, or `failed`
    /// with why. A run the worker no longer holds is left to its new holder.
    pub async fn finish_import(&self, id: Uuid, worker: &str, error: Option<&str>) -> Result<ImportInfo, StoreError> {
        let now = self.now();
        let c = self.import_counts(id).await?;
        let status = if error.is_some() { "failed" } else { "done" };
        with_write!(&self.db, p => {
            sqlx::query(
                "UPDATE imports SET status = $2, error = $3, finished_at = $4, worker = NULL, processed = $5, created = $6, repeats = $7, \
                 returned = $8, rejected = $9, file = CASE WHEN $2 = 'done' THEN NULL ELSE file END \
                 WHERE id = $1 AND worker = $10 AND status = 'running'",
            )
            .bind(id).bind(status).bind(error).bind(now).bind(c.total()).bind(c.created).bind(c.repeats).bind(c.returned).bind(c.rejected)
            .bind(worker).execute(p).await?;
        });
        self.import_info(id).await?.ok_or(StoreError::NotFound)
    }

    /// Lets go of a run without ending it (the database or the process is going away): it
    /// stays `running` and the next worker resumes it.
    pub async fn release_import(&self, id: Uuid, worker: &str) -> Result<(), StoreError> {
        with_write!(&self.db, p => {
            sqlx::query("UPDATE imports SET worker = NULL, heartbeat_at = NULL WHERE id = $1 AND worker = $2")
                .bind(id).bind(worker).execute(p).await?;
        });
        Ok(())
    }

    pub async fn import_counts(&self, id: Uuid) -> Result<ImportCounts, StoreError> {
        let rows: Vec<(String, i64)> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT outcome, COUNT(*) FROM import_rows WHERE import_id = $1 GROUP BY outcome").bind(id).fetch_all(p).await?
        });
        let mut c = ImportCounts::default();
        for (outcome, n) in rows {
            match outcome.as_str() {
                "created" => c.created += n,
                "repeat" => c.repeats += n,
                "returning" => c.returned += n,
                _ => c.rejected += n,
            }
        }
        Ok(c)
    }

    /// Row numbers already done (committed), for a resumed run to skip.
    pub async fn import_done_rows(&self, id: Uuid) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64,)> =
            with_read!(&self.db, p => sqlx::query_as("SELECT row_no FROM import_rows WHERE import_id = $1").bind(id).fetch_all(p).await?);
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Writes outcomes decided outside the intake (a rejected row; a dry run's forecast).
    /// A row already written keeps its first outcome.
    pub async fn record_import_rows(&self, id: Uuid, rows: &[RowOutcome]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.db.is_sqlite() {
            // Bookkeeping, as the progress: a row lost in a crash is not among the done
            // rows, so the resumed run reads and records it again; `finish_import`'s durable
            // commit puts every one before it on disk.
            let rows: Vec<RowOutcome> = rows.to_vec();
            return self
                .bookkeeping_in_turn(move |conn| {
                    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    {
                        let mut stmt = tx.prepare_cached(
                            "INSERT INTO import_rows (import_id, row_no, outcome, lead_id, reason, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                             ON CONFLICT (import_id, row_no) DO NOTHING",
                        )?;
                        for r in &rows {
                            stmt.execute(rusqlite::params![id, r.row, r.outcome, r.lead_id, r.reason, r.detail])?;
                        }
                    }
                    tx.commit()
                })
                .await;
        }
        write_tx!(&self.db, tx => {
            for r in rows {
                sqlx::query(
                    "INSERT INTO import_rows (import_id, row_no, outcome, lead_id, reason, detail) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (import_id, row_no) DO NOTHING",
                )
                .bind(id).bind(r.row).bind(r.outcome).bind(r.lead_id).bind(r.reason.as_deref()).bind(r.detail.as_deref())
                .execute(&mut *tx).await?;
            }
        });
        Ok(())
    }

    /// The report, in row order, from after `after_row`.
    pub async fn import_report(&self, id: Uuid, after_row: i64, limit: i64) -> Result<Vec<ReportRow>, StoreError> {
        Ok(with_read!(&self.db, p => {
            sqlx::query_as(
                "SELECT row_no, outcome, lead_id, reason, detail FROM import_rows WHERE import_id = $1 AND row_no > $2 ORDER BY row_no LIMIT $3",
            )
            .bind(id).bind(after_row).bind(limit).fetch_all(p).await?
        }))
    }

    /// The column mapping last used for a source.
    pub async fn import_mapping(&self, source: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let row: Option<(String,)> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT mapping FROM import_mappings WHERE source = $1").bind(source).fetch_optional(p).await?
        });
        Ok(row.and_then(|r| serde_json::from_str(&r.0).ok()))
    }

    pub async fn save_import_mapping(&self, source: &str, mapping: &serde_json::Value) -> Result<(), StoreError> {
        let now = self.now();
        let m = mapping.to_string();
        with_write!(&self.db, p => {
            sqlx::query(
                "INSERT INTO import_mappings (source, mapping, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (source) DO UPDATE SET mapping = excluded.mapping, updated_at = excluded.updated_at",
            )
            .bind(source).bind(&m).bind(now).execute(p).await?;
        });
        Ok(())
    }

    /// The current lead and status of each identity key that has one (a dry run's forecast).
    pub async fn identity_statuses(&self, idents: &[String]) -> Result<Vec<IdentityStatus>, StoreError> {
        let mut out = Vec::with_capacity(idents.len());
        for chunk in idents.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT i.ident, i.lead_id, l.status FROM identities i JOIN leads l ON l.id = i.lead_id WHERE i.ident IN ({})",
                placeholders.join(", ")
            );
            let rows: Vec<IdentityStatus> = with_read!(&self.db, p => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()));
                for i in chunk {
                    q = q.bind(i);
                }
                q.fetch_all(p).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// Undoes a finished or failed import in one transaction: the leads it created go, with
    /// their timelines, scores and identities (a returning lead's identities go back to the
    /// earlier lead), unless someone has worked on them since — those are kept and counted;
    /// the repeat requests it added to other leads are removed and their counts lowered.
    pub async fn undo_import(&self, id: Uuid, actor: &str) -> Result<UndoReport, StoreError> {
        let info = self.import_info(id).await?.ok_or(StoreError::NotFound)?;
        if info.dry_run {
            return Err(StoreError::Invalid("a dry run created nothing to undo".into()));
        }
        let me = format!("import:{id}");
        let now = self.now();
        // The leads this import created (or opened as returning) and has not yet marked kept.
        const MINE: &str =
            "SELECT lead_id FROM import_rows WHERE import_id = $1 AND outcome IN ('created', 'returning') AND reason IS NULL";
        let stale = Ts::from(now.0 - chrono::Duration::seconds(30));
        let report = write_tx!(&self.db, tx => {
            // Taken inside the transaction: no worker may add rows while they are undone; a
            // run whose worker was killed (no heartbeat for a while) may be undone too.
            let mine = sqlx::query(
                "UPDATE imports SET status = 'undoing' WHERE id = $1 AND dry_run = $2 AND (status IN ('done', 'failed') \
                 OR (status = 'running' AND (worker IS NULL OR heartbeat_at IS NULL OR heartbeat_at < $3)))",
            )
            .bind(id).bind(false).bind(stale).execute(&mut *tx).await?.rows_affected();
            if mine != 1 {
                return Err(StoreError::Invalid("the import is running or already undone".into()));
            }
            let kept = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE import_rows SET reason = 'kept' WHERE import_id = $1 AND outcome IN ('created', 'returning') AND ( \
                   EXISTS (SELECT 1 FROM events e WHERE e.lead_id = import_rows.lead_id AND e.actor <> $2 AND {WORKED_ON}) \
                   OR EXISTS (SELECT 1 FROM tasks t WHERE t.lead_id = import_rows.lead_id AND t.created_by LIKE 'user:%') \
                   OR EXISTS (SELECT 1 FROM leads l WHERE l.id = import_rows.lead_id AND l.status = 'converted') \
                   OR EXISTS (SELECT 1 FROM deals d WHERE d.lead_id = import_rows.lead_id) \
                   OR EXISTS (SELECT 1 FROM leads r WHERE r.returning_of = import_rows.lead_id))"
            )))
            .bind(id).bind(&me).execute(&mut *tx).await?.rows_affected() as i64;

            // Repeat requests on leads that stay.
            sqlx::query(
                "UPDATE leads SET repeat_count = CASE WHEN repeat_count > c.n THEN repeat_count - c.n ELSE 0 END \
                 FROM (SELECT e.lead_id, COUNT(*) AS n FROM events e WHERE e.kind = 'repeat_request' AND e.actor = $2 \
                       AND e.lead_id IN (SELECT lead_id FROM import_rows WHERE import_id = $1 AND outcome = 'repeat') GROUP BY e.lead_id) AS c \
                 WHERE leads.id = c.lead_id",
            )
            .bind(id).bind(&me).execute(&mut *tx).await?;
            let repeats_removed = sqlx::query(
                "DELETE FROM events WHERE kind IN ('repeat_request', 'lead_returned') AND actor = $2 AND lead_id IN ( \
                   SELECT lead_id FROM import_rows WHERE import_id = $1 AND outcome = 'repeat' \
                   UNION SELECT l.returning_of FROM import_rows r JOIN leads l ON l.id = r.lead_id \
                         WHERE r.import_id = $1 AND r.outcome = 'returning' AND r.reason IS NULL AND l.returning_of IS NOT NULL)",
            )
            .bind(id).bind(&me).execute(&mut *tx).await?.rows_affected() as i64;

            // A returning lead took its person's identities from the earlier lead: give those back
            // (the ones older than the returning lead); the rest go with it.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE identities SET lead_id = (SELECT l.returning_of FROM leads l WHERE l.id = identities.lead_id) \
                 WHERE lead_id IN ({MINE} AND outcome = 'returning') \
                 AND EXISTS (SELECT 1 FROM leads l WHERE l.id = identities.lead_id AND l.returning_of IS NOT NULL \
                             AND identities.created_at < l.created_at)"
            )))
            .bind(id).execute(&mut *tx).await?;
            for table in ["events", "identities", "lead_scores", "lead_inputs", "tasks", "notifications", "escalations", "deals"] {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE lead_id IN ({MINE})"))).bind(id).execute(&mut *tx).await?;
            }
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM outbox WHERE done_at IS NULL AND aggregate_id IN ({MINE})")))
                .bind(id).execute(&mut *tx).await?;
            let removed = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM leads WHERE id IN ({MINE})")))
                .bind(id).execute(&mut *tx).await?.rows_affected() as i64;
            sqlx::query("UPDATE imports SET status = 'undone', undone_at = $2, removed = $3, kept = $4, file = NULL, worker = NULL WHERE id = $1")
                .bind(id).bind(now).bind(removed).bind(kept).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO audit_log (at, actor, action, detail) VALUES ($1, $2, 'import.undo', $3)")
                .bind(now).bind(actor)
                .bind(serde_json::json!({"import_id": id, "removed": removed, "kept": kept, "repeats_removed": repeats_removed}).to_string())
                .execute(&mut *tx).await?;
            UndoReport { removed, kept, repeats_removed }
        });
        Ok(report)
    }
}
