//! The re-scoring pass on PostgreSQL.

use super::{CHUNK, Input, Output, Pass, RescoreReport, read_sql};
use crate::ts::Ts;
use crate::{Store, StoreError};
use std::collections::HashMap;
use std::time::Instant;
use uuid::Uuid;
use voronka_domain::scoring::Profile;

impl Store {
    /// The pass on PostgreSQL, as a pipeline of three stages that overlap: one task reads
    /// chunks in lead order, this one scores them (on all cores, off the runtime's threads),
    /// one task writes the changed rows. Each write is its own short transaction, so
    /// intake and the lists go on throughout. Every updated row leaves a dead version in
    /// the table and its five indexes (the sorted columns are indexed, so no update is HOT);
    /// after a pass that changed many rows the table is vacuumed in the background.
    pub(super) async fn pg_pass(&self, pool: &sqlx::PgPool, pass: &Pass) -> Result<RescoreReport, StoreError> {
        let mut report = RescoreReport::default();
        // A lead scored live since the pass began (with this model) keeps its row.
        let at = self.now();
        let (read_tx, mut read_rx) = tokio::sync::mpsc::channel::<Vec<Input>>(2);
        let reader = {
            let (pool, pass) = (pool.clone(), pass.clone());
            tokio::spawn(async move {
                let mut after: Option<Uuid> = None;
                loop {
                    let inputs = pg_read(&pool, after, &pass).await?;
                    let Some(last) = inputs.last().map(|i| i.lead_id) else { return Ok::<_, StoreError>(()) };
                    after = Some(last);
                    if read_tx.send(inputs).await.is_err() {
                        return Ok(());
                    }
                }
            })
        };
        let (write_tx, mut write_rx) = tokio::sync::mpsc::channel::<Vec<Output>>(2);
        let writer = {
            let (pool, version) = (pool.clone(), pass.version);
            tokio::spawn(async move {
                while let Some(outputs) = write_rx.recv().await {
                    pg_write(&pool, &outputs, version, at).await?;
                }
                Ok::<_, StoreError>(())
            })
        };
        let scored = async {
            while let Some(inputs) = read_rx.recv().await {
                // A failed write ends the pass at once, not at the next changed chunk.
                if write_tx.is_closed() {
                    break;
                }
                report.rescored += inputs.len() as u64;
                let outputs = self.compute(pass, inputs).await?;
                report.changed += outputs.len() as u64;
                if !outputs.is_empty() && write_tx.send(outputs).await.is_err() {
                    break;
                }
            }
            Ok::<_, StoreError>(())
        }
        .await;
        drop(write_tx);
        drop(read_rx);
        let stopped = |e: tokio::task::JoinError| StoreError::Other(anyhow::anyhow!("re-score stopped: {e}"));
        let written = writer.await.map_err(stopped)?;
        let read = reader.await.map_err(stopped)?;
        scored?;
        read?;
        written?;
        // One at a time: a second would only queue behind the first's lock, holding a
        // connection.
        static VACUUMING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if report.changed >= 10_000 && !VACUUMING.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let pool = pool.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                match sqlx::raw_sql("VACUUM (ANALYZE) lead_scores").execute(&pool).await {
                    Ok(_) => tracing::debug!(millis = started.elapsed().as_millis() as u64, "vacuumed lead_scores after a re-score"),
                    Err(e) => tracing::warn!(error = %e, "vacuum of lead_scores after a re-score failed"),
                }
                VACUUMING.store(false, std::sync::atomic::Ordering::Release);
            });
        }
        Ok(report)
    }
}

#[derive(sqlx::FromRow)]
struct PgInput {
    lead_id: Uuid,
    ledger: Vec<u8>,
    model_version: i64,
    score: f64,
    priority: f64,
    events: Option<Vec<u8>>,
}

async fn pg_read(pool: &sqlx::PgPool, after: Option<Uuid>, pass: &Pass) -> Result<Vec<Input>, StoreError> {
    // Ledgers made with other models get their profiles in `compute`.
    let sql = format!(
        "{} WHERE s.lead_id > $1 ORDER BY s.lead_id LIMIT {CHUNK}",
        read_sql(pass).replace("NULL AS events", "NULL::bytea AS events")
    );
    let profile = pass.profile;
    let rows: Vec<PgInput> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(after.unwrap_or(Uuid::nil())).fetch_all(pool).await?;
    let mut inputs: Vec<Input> = rows
        .into_iter()
        .map(|r| Input {
            lead_id: r.lead_id,
            ledger: r.ledger,
            version: r.model_version,
            score: r.score,
            priority: r.priority,
            events: r.events,
            profile: None,
        })
        .collect();
    if !pass.behaviour {
        let stale: Vec<Uuid> = inputs.iter().filter(|i| !pass.can_carry(i.version)).map(|i| i.lead_id).collect();
        if !stale.is_empty() {
            let rows: Vec<(Uuid, Vec<u8>)> =
                sqlx::query_as("SELECT lead_id, events FROM lead_inputs WHERE lead_id = ANY($1)").bind(&stale).fetch_all(pool).await?;
            let mut by_id: HashMap<Uuid, Vec<u8>> = rows.into_iter().collect();
            for i in inputs.iter_mut() {
                if let Some(e) = by_id.remove(&i.lead_id) {
                    i.events = Some(e);
                }
            }
        }
    }
    if profile && !inputs.is_empty() {
        let ids: Vec<Uuid> = inputs.iter().map(|i| i.lead_id).collect();
        let sql = format!("SELECT {} FROM {} WHERE l.id = ANY($1)", crate::leads::LEAD_COLUMNS, crate::leads::LEAD_FROM);
        let rows: Vec<crate::leads::LeadRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(&ids).fetch_all(pool).await?;
        let mut by_id: HashMap<Uuid, Profile> = rows.iter().map(|r| (r.id, crate::intake::profile_of_row(r))).collect();
        for i in inputs.iter_mut() {
            i.profile = by_id.remove(&i.lead_id);
        }
    }
    Ok(inputs)
}

async fn pg_write(pool: &sqlx::PgPool, rows: &[Output], version: i64, at: Ts) -> Result<(), StoreError> {
    for chunk in rows.chunks(5_000) {
        let id: Vec<Uuid> = chunk.iter().map(|o| o.lead_id).collect();
        let score: Vec<f64> = chunk.iter().map(|o| o.score).collect();
        let priority: Vec<f64> = chunk.iter().map(|o| o.priority).collect();
        let profile: Vec<f64> = chunk.iter().map(|o| o.profile).collect();
        let temperature: Vec<&str> = chunk.iter().map(|o| o.temperature).collect();
        let grade: Vec<&str> = chunk.iter().map(|o| o.grade).collect();
        let ledger: Vec<&[u8]> = chunk.iter().map(|o| o.ledger.as_slice()).collect();
        sqlx::query(
            "UPDATE lead_scores s SET score = u.score, priority = u.priority, profile = u.profile, temperature = u.temperature, \
             grade = u.grade, ledger = u.ledger, model_version = $8, scored_at = $9 \
             FROM UNNEST($1::uuid[], $2::float8[], $3::float8[], $4::float8[], $5::text[], $6::text[], $7::bytea[]) \
             AS u(id, score, priority, profile, temperature, grade, ledger) \
             WHERE s.lead_id = u.id AND s.model_version <= $8 AND s.scored_at <= $9",
        )
        .bind(&id)
        .bind(&score)
        .bind(&priority)
        .bind(&profile)
        .bind(&temperature)
        .bind(&grade)
        .bind(&ledger)
        .bind(version)
        .bind(at)
        .execute(pool)
        .await?;
    }
    Ok(())
}
