//! The re-scoring pass on PostgreSQL.

use super::{CHUNK, Input, Output, PROFILE_NAMES, Pass, RescoreReport, profile_columns, read_sql};
use crate::ts::Ts;
use crate::{Store, StoreError};
use std::collections::HashMap;
use std::time::Instant;
use uuid::Uuid;
use voronka_domain::scoring::Profile;

/// One re-score at a time on a database, whichever process runs it (a session lock). The
/// note trigger's function (migration 0016) tests it by its decimal value.
const RESCORE_LOCK: i64 = 8_534_165_641_809_846_529;
/// The trigger that notes writes to the score table while its new version is built.
const NOTE_TRIGGER: &str = "lead_scores_rebuild_note";

impl Store {
    /// The pass on PostgreSQL. A pipeline of three stages that overlap reads chunks in lead
    /// order (one task), scores them (this one, on all cores, off the runtime's threads) and
    /// copies the changed rows into a temporary table of the pass's own connection. Then the
    /// changed rows are written: a few in place; many (`rescore_bulk_rows` or more) by
    /// building the score table anew beside the old one and swapping the two (see
    /// `rebuild`), because an update in place of every row is slow here — the sorted
    /// columns are indexed, so no update is HOT, and each leaves a dead row in the table and
    /// its five indexes (52–58 s for 1 M rows with nothing else running, against 8 s for a
    /// build). Intake and the lists go on throughout, but for the swap itself.
    pub(super) async fn pg_pass(&self, pool: &sqlx::PgPool, pass: &Pass) -> Result<RescoreReport, StoreError> {
        // A connection of the pass's own, closed at the end: its temporary table and its
        // session lock go with it, whatever happens.
        let conn = pool.acquire().await?.detach();
        let (conn, r) = self.pg_pass_on(pool, conn, pass).await;
        if let Some(conn) = conn {
            let _ = sqlx::Connection::close(conn).await;
        }
        r
    }

    async fn pg_pass_on(
        &self,
        pool: &sqlx::PgPool,
        mut conn: sqlx::PgConnection,
        pass: &Pass,
    ) -> (Option<sqlx::PgConnection>, Result<RescoreReport, StoreError>) {
        let prepared = async {
            sqlx::query("SELECT pg_advisory_lock($1)").bind(RESCORE_LOCK).execute(&mut conn).await?;
            // A process that died during a swap leaves the note trigger behind.
            drop_note_trigger(&mut conn).await?;
            sqlx::raw_sql(
                "CREATE TEMPORARY TABLE rescore_out (lead_id UUID NOT NULL, score FLOAT8 NOT NULL, priority FLOAT8 NOT NULL, \
                 profile FLOAT8 NOT NULL, temperature TEXT NOT NULL, grade TEXT NOT NULL, ledger BYTEA NOT NULL); \
                 CREATE INDEX rescore_out_lead ON rescore_out (lead_id)",
            )
            .execute(&mut conn)
            .await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = prepared {
            return (Some(conn), Err(e));
        }
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
        let writer = tokio::spawn(async move {
            let mut r = Ok(());
            while let Some(outputs) = write_rx.recv().await {
                r = copy_out(&mut conn, &outputs).await;
                if r.is_err() {
                    break;
                }
            }
            (conn, r)
        });
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
        let read = reader.await.map_err(stopped);
        let (mut conn, copied) = match writer.await {
            Ok(w) => w,
            Err(e) => return (None, Err(stopped(e))),
        };
        let done = (|| Ok::<_, StoreError>((scored?, read??, copied?)))();
        if let Err(e) = done {
            return (Some(conn), Err(e));
        }
        tracing::debug!(changed = report.changed, "re-score: rows scored and copied");
        let (version, bulk) = (pass.version, report.changed as usize >= self.rescore_bulk_rows);
        if report.changed == 0 {
            return (Some(conn), Ok(report));
        }
        if bulk {
            match rebuild(&mut conn, version, at).await {
                Ok(true) => return (Some(conn), Ok(report)),
                // The swap's lock could not be had, or the build failed: the same rows in place.
                Ok(false) => {}
                Err(e) => {
                    // The connection is broken: closed, its transaction and lock gone. A note
                    // trigger left behind notes nothing without a pass and the next pass drops
                    // it, under the lock (dropping it here, without the lock, could drop the
                    // trigger of a pass another process has just begun).
                    let _ = sqlx::Connection::close(conn).await;
                    return (None, Err(e));
                }
            }
        }
        let r = in_place(&mut conn, version, at).await;
        if r.is_ok() && report.changed >= 10_000 {
            vacuum_later(pool);
        }
        (Some(conn), r.map(|()| report))
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
    // The bound is given to the packed events' side of the join too: without it the merge
    // join read `lead_inputs` from its first row for every chunk (1.0 s a chunk half-way
    // through 1 M leads, 0.12 s with it).
    let sql = format!(
        "{} WHERE s.lead_id > $1 ORDER BY s.lead_id LIMIT {CHUNK}",
        read_sql(pass)
            .replace("NULL AS events", "NULL::bytea AS events")
            .replace("ON i.lead_id = s.lead_id", "ON i.lead_id = s.lead_id AND i.lead_id > $1")
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
            created: None,
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
        // The chunk's leads are a range of the key: read as one (a lookup per id took
        // 0.19 s a chunk), and only the fields the profile rules read.
        use sqlx::Row;
        let (first, last) = (inputs[0].lead_id, inputs[inputs.len() - 1].lead_id);
        let sql = format!("SELECT id, {}, created_at FROM leads WHERE id BETWEEN $1 AND $2", profile_columns(&pass.model, true));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(first).bind(last).fetch_all(pool).await?;
        let empty = serde_json::Map::new();
        let mut by_id: HashMap<Uuid, (Profile, Ts)> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let mut top: Vec<(&str, Option<String>)> = Vec::with_capacity(PROFILE_NAMES.len());
            for (i, n) in PROFILE_NAMES.iter().enumerate() {
                top.push((n, r.try_get(i + 1)?));
            }
            let budget: Option<f64> = r.try_get(PROFILE_NAMES.len() + 1)?;
            let fields: serde_json::Value = r.try_get(PROFILE_NAMES.len() + 2)?;
            let created: Ts = r.try_get(PROFILE_NAMES.len() + 3)?;
            by_id.insert(r.try_get(0)?, (Profile::new(&top, budget, fields.as_object().unwrap_or(&empty)), created));
        }
        for i in inputs.iter_mut() {
            if let Some((profile, created)) = by_id.remove(&i.lead_id) {
                i.profile = Some(profile);
                i.created = Some(created.micros());
            }
        }
    }
    Ok(inputs)
}

/// The changed rows as one `COPY … (FORMAT binary)` into the pass's temporary table.
async fn copy_out(conn: &mut sqlx::PgConnection, rows: &[Output]) -> Result<(), StoreError> {
    let mut copy = conn.copy_in_raw("COPY rescore_out FROM STDIN (FORMAT binary)").await?;
    copy.send(encode_copy(rows)).await?;
    copy.finish().await?;
    Ok(())
}

/// PostgreSQL's binary copy format: a header, then each row as its field count and each
/// field as its length and bytes (in network order), then -1.
fn encode_copy(rows: &[Output]) -> Vec<u8> {
    fn field(b: &mut Vec<u8>, v: &[u8]) {
        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
        b.extend_from_slice(v);
    }
    let mut b = Vec::with_capacity(21 + rows.iter().map(|r| 74 + r.ledger.len() + r.temperature.len() + r.grade.len()).sum::<usize>());
    b.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    for r in rows {
        b.extend_from_slice(&7i16.to_be_bytes());
        field(&mut b, r.lead_id.as_bytes());
        field(&mut b, &r.score.to_be_bytes());
        field(&mut b, &r.priority.to_be_bytes());
        field(&mut b, &r.profile.to_be_bytes());
        field(&mut b, r.temperature.as_bytes());
        field(&mut b, r.grade.as_bytes());
        field(&mut b, &r.ledger);
    }
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b
}

/// Whether a stored row `s` takes the pass's result `u`: it was scored with this model or
/// an older one, and not since the pass began (a lead scored live meanwhile keeps its row).
const FRESH: &str = "u.lead_id IS NOT NULL AND s.model_version <= $1 AND s.scored_at <= $2";

/// Writes the pass's rows into the score table in place, 5,000 to a transaction.
async fn in_place(conn: &mut sqlx::PgConnection, version: i64, at: Ts) -> Result<(), StoreError> {
    let mut after = Uuid::nil();
    loop {
        let last: Option<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "WITH u AS (SELECT * FROM rescore_out WHERE lead_id > $3 ORDER BY lead_id LIMIT 5000), \
             w AS (UPDATE lead_scores s SET score = u.score, priority = u.priority, profile = u.profile, \
             temperature = u.temperature, grade = u.grade, ledger = u.ledger, model_version = $1, scored_at = $2 \
             FROM u WHERE s.lead_id = u.lead_id AND {FRESH}) \
             SELECT lead_id FROM u ORDER BY lead_id DESC LIMIT 1"
        )))
        .bind(version)
        .bind(at)
        .bind(after)
        .fetch_optional(&mut *conn)
        .await?;
        match last {
            Some(l) => after = l,
            None => return Ok(()),
        }
    }
}

/// After many rows were updated in place: the table vacuumed in the background, one at a
/// time (a second would only queue behind the first's lock, holding a connection).
fn vacuum_later(pool: &sqlx::PgPool) {
    static VACUUMING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if VACUUMING.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
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

async fn note_trigger_exists(conn: &mut sqlx::PgConnection) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'lead_scores'::regclass AND tgname = $1)")
        .bind(NOTE_TRIGGER)
        .fetch_one(&mut *conn)
        .await?)
}

/// Drops a note trigger left behind (checked first: dropping a trigger locks the table
/// whole); false when the table stayed locked by others and the trigger is still there.
async fn drop_note_trigger(conn: &mut sqlx::PgConnection) -> Result<bool, StoreError> {
    let drop = format!("DROP TRIGGER IF EXISTS {NOTE_TRIGGER} ON lead_scores");
    if note_trigger_exists(conn).await? && !with_lock_tries(conn, &drop, 3).await? {
        tracing::warn!("re-score: the note trigger could not be dropped now; the next pass drops it");
        return Ok(false);
    }
    sqlx::raw_sql("DELETE FROM lead_scores_rebuild_delta").execute(&mut *conn).await?;
    Ok(true)
}

/// The statement that fills the new score table from the old one and the pass's rows,
/// column by column as the table has them (a column this pass does not know is copied).
fn merge_sql(columns: &[String], filter: &str) -> String {
    let quote = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let list: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let exprs: Vec<String> = columns
        .iter()
        .map(|c| {
            let q = quote(c);
            match c.as_str() {
                "score" | "priority" | "profile" | "temperature" | "grade" | "ledger" => {
                    format!("CASE WHEN f.fresh THEN u.{q} ELSE s.{q} END")
                }
                "model_version" => format!("CASE WHEN f.fresh THEN $1 ELSE s.{q} END"),
                "scored_at" => format!("CASE WHEN f.fresh THEN $2 ELSE s.{q} END"),
                _ => format!("s.{q}"),
            }
        })
        .collect();
    format!(
        "INSERT INTO lead_scores_rebuild ({}) SELECT {} FROM lead_scores s LEFT JOIN rescore_out u ON u.lead_id = s.lead_id \
         CROSS JOIN LATERAL (SELECT {FRESH} AS fresh) f {filter}",
        list.join(", "),
        exprs.join(", ")
    )
}

/// `def` (an index's or a trigger's definition) made for the new table: the table named
/// after its first ` ON ` (bare or with its schema, after an optional `ONLY`) replaced.
fn for_new_table(def: &str, name: &str, new_name: &str) -> Result<String, StoreError> {
    let bad = || StoreError::Other(anyhow::anyhow!("re-score: cannot read the definition {def:?}"));
    let i = def.find(" ON ").ok_or_else(bad)? + 4;
    let mut rest = &def[i..];
    let only = if let Some(r) = rest.strip_prefix("ONLY ") {
        rest = r;
        "ONLY "
    } else {
        ""
    };
    let j = rest.find(' ').ok_or_else(bad)?;
    let table = &rest[..j];
    if table != "lead_scores" && !table.ends_with(".lead_scores") {
        return Err(bad());
    }
    let head = def[..i].replacen(&format!(" {name} "), &format!(" {new_name} "), 1);
    Ok(format!("{head}{only}lead_scores_rebuild{}", &rest[j..]))
}

/// Builds the score table anew beside the old one and swaps the two. Writes to the old
/// table from just before the build are noted (by a trigger, into
/// `lead_scores_rebuild_delta`) and carried over under the swap's lock, which readers wait
/// for only during the swap. The new table gets the old one's columns, constraints,
/// indexes and triggers from the catalog, so migrations need not know of this. Returns
/// false, with nothing changed, when the table's locks could not be had in ten tries of 2 s
/// (a long write holding it), the table has something a copy would lose, or the build
/// failed.
async fn rebuild(conn: &mut sqlx::PgConnection, version: i64, at: Ts) -> Result<bool, StoreError> {
    let started = Instant::now();
    // A note trigger still there (one left behind that could not be dropped) is not made twice.
    if !copyable(conn).await? || note_trigger_exists(conn).await? {
        return Ok(false);
    }
    let create = format!(
        "DELETE FROM lead_scores_rebuild_delta; CREATE TRIGGER {NOTE_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON lead_scores \
         FOR EACH ROW EXECUTE FUNCTION lead_scores_note_change()"
    );
    match with_lock_tries(conn, &create, 10).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("re-score: the score table stayed locked by others; the rows are written in place");
            return Ok(false);
        }
        Err(e) => {
            tracing::warn!(error = %e, "re-score: the note trigger could not be made; the rows are written in place");
            return Ok(false);
        }
    }
    let built = build_and_swap(conn, version, at, started).await;
    let swapped = match built {
        Ok(true) => return Ok(true),
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(error = %e, "re-score: building the score table anew failed; the rows are written in place");
            false
        }
    };
    // Nothing changed: the build is rolled back, the note trigger dropped (or, when the
    // table stays locked, left to the next pass: it notes nothing without a pass).
    sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
    drop_note_trigger(conn).await?;
    Ok(swapped)
}

/// Runs `sql` in a transaction of its own whose locks are waited for at most 2 s, up to
/// `tries` times; false when the locks could not be had. (Past PostgreSQL's 1 s
/// `deadlock_timeout`, so that an autovacuum in the way is cancelled for it.)
async fn with_lock_tries(conn: &mut sqlx::PgConnection, sql: &str, tries: u32) -> Result<bool, StoreError> {
    for _ in 0..tries {
        let r =
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; SET LOCAL lock_timeout = '2s'; {sql}; COMMIT"))).execute(&mut *conn).await;
        match r {
            Ok(_) => return Ok(true),
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("55P03") => {
                sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                return Err(e.into());
            }
        }
    }
    Ok(false)
}

/// Whether the score table has nothing a new table built beside it would lose: grants of
/// its own, row security, a publication naming it, a trigger switched off, an invalid
/// index; and whether it lives in the schema a new table is made in (the first of the
/// search path). (Voronka's own schema has none of these; the check guards a database
/// someone changed.)
async fn copyable(conn: &mut sqlx::PgConnection) -> Result<bool, StoreError> {
    let ok: bool = sqlx::query_scalar(
        "SELECT c.relacl IS NULL AND NOT c.relrowsecurity AND c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema()) \
         AND NOT EXISTS (SELECT 1 FROM pg_publication_rel r WHERE r.prrelid = c.oid) \
         AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgenabled <> 'O') \
         AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND NOT i.indisvalid) \
         FROM pg_class c WHERE c.oid = 'lead_scores'::regclass",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !ok {
        tracing::info!(
            "re-score: the score table has grants, row security, a publication, a disabled trigger or an invalid index, or is outside \
             the first schema of the search path; the rows are written in place"
        );
    }
    Ok(ok)
}

async fn build_and_swap(conn: &mut sqlx::PgConnection, version: i64, at: Ts, started: Instant) -> Result<bool, StoreError> {
    sqlx::raw_sql(
        "BEGIN; SET LOCAL maintenance_work_mem = '256MB'; \
         CREATE TABLE lead_scores_rebuild (LIKE lead_scores INCLUDING ALL EXCLUDING INDEXES)",
    )
    .execute(&mut *conn)
    .await?;
    // Storage parameters (fill factor, autovacuum settings) as the old table's.
    let options: Option<Vec<String>> =
        sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = 'lead_scores'::regclass").fetch_one(&mut *conn).await?;
    if let Some(o) = options.filter(|o| !o.is_empty()) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER TABLE lead_scores_rebuild SET ({})", o.join(", ")))).execute(&mut *conn).await?;
    }
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = 'lead_scores'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .fetch_all(&mut *conn)
    .await?;
    // A merge join of the two tables in key order (the pass's rows come in key order, and
    // their index is filled as they come): the hash join the planner chose spilled 1 M
    // rows to disk in 32 batches, 2.9 s against 1.8 s (EXPLAIN ANALYZE on a copy).
    sqlx::raw_sql("SET LOCAL enable_hashjoin = off").execute(&mut *conn).await?;
    sqlx::query(sqlx::AssertSqlSafe(merge_sql(&columns, ""))).bind(version).bind(at).execute(&mut *conn).await?;
    sqlx::raw_sql("SET LOCAL enable_hashjoin TO DEFAULT").execute(&mut *conn).await?;
    let filled = started.elapsed();
    // Constraints first (the primary key's index), then the other indexes, then triggers;
    // each under a name of its own until the swap.
    let constraints: Vec<(String, String)> = sqlx::query_as(
        "SELECT quote_ident(conname)::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = 'lead_scores'::regclass AND contype IN ('p', 'u', 'f', 'x') ORDER BY contype <> 'p', conname",
    )
    .fetch_all(&mut *conn)
    .await?;
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT quote_ident(c.relname)::text, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = 'lead_scores'::regclass \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid) ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let triggers: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'lead_scores'::regclass AND NOT tgisinternal AND tgname <> $1 ORDER BY tgname",
    )
    .bind(NOTE_TRIGGER)
    .fetch_all(&mut *conn)
    .await?;
    let mut renames = Vec::new();
    for (n, (name, def)) in constraints.iter().enumerate() {
        let tmp = format!("lead_scores_rebuild_c{n}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER TABLE lead_scores_rebuild ADD CONSTRAINT {tmp} {def}")))
            .execute(&mut *conn)
            .await?;
        renames.push(format!("ALTER TABLE lead_scores RENAME CONSTRAINT {tmp} TO {name}"));
    }
    for (n, (name, def)) in indexes.iter().enumerate() {
        let tmp = format!("lead_scores_rebuild_i{n}");
        let sql = for_new_table(def, name, &tmp)?;
        if !sql.contains(&tmp) {
            return Err(StoreError::Other(anyhow::anyhow!("re-score: cannot rename the index in {def:?}")));
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await?;
        renames.push(format!("ALTER INDEX {tmp} RENAME TO {name}"));
    }
    for def in &triggers {
        sqlx::raw_sql(sqlx::AssertSqlSafe(for_new_table(def, "", "")?)).execute(&mut *conn).await?;
    }
    sqlx::raw_sql("ANALYZE lead_scores_rebuild").execute(&mut *conn).await?;
    let built = started.elapsed();
    // The swap: the old table locked whole (readers wait from here to the commit), in
    // tries of 2 s (past the 1 s `deadlock_timeout`, so that an autovacuum in the way is
    // cancelled), so that a long write holding the table does not hold the readers queued
    // behind this lock with it for long.
    let mut tries = 0;
    loop {
        sqlx::raw_sql("SAVEPOINT swap; SET LOCAL lock_timeout = '2s'").execute(&mut *conn).await?;
        match sqlx::raw_sql("LOCK TABLE lead_scores IN ACCESS EXCLUSIVE MODE").execute(&mut *conn).await {
            Ok(_) => break,
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("55P03") && tries + 1 < 10 => {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT swap").execute(&mut *conn).await?;
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("55P03") => {
                tracing::warn!(tries, "re-score: the score table stayed locked by others; the rows are written in place");
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let locked = started.elapsed();
    sqlx::raw_sql(
        "SET LOCAL lock_timeout = 0; DELETE FROM lead_scores_rebuild r USING lead_scores_rebuild_delta d WHERE r.lead_id = d.lead_id",
    )
    .execute(&mut *conn)
    .await?;
    let carried =
        sqlx::query(sqlx::AssertSqlSafe(merge_sql(&columns, "WHERE s.lead_id IN (SELECT lead_id FROM lead_scores_rebuild_delta)")))
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DELETE FROM lead_scores_rebuild_delta; DROP TABLE lead_scores; ALTER TABLE lead_scores_rebuild RENAME TO lead_scores; {}; COMMIT",
        renames.join("; ")
    )))
    .execute(&mut *conn)
    .await?;
    tracing::debug!(
        fill_ms = filled.as_millis() as u64,
        indexes_ms = (built - filled).as_millis() as u64,
        lock_wait_ms = (locked - built).as_millis() as u64,
        swap_ms = (started.elapsed() - locked).as_millis() as u64,
        carried,
        "re-score: the score table built anew and swapped"
    );
    Ok(true)
}
