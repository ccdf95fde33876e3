//! The SQLite intake floor: what a durable lead over HTTP costs on this machine at the least.
//!
//! A bare axum handler — JSON in, no authentication, no normalising, no lookups, no scoring,
//! no background work — hands each lead to one writer thread, which commits whatever has
//! queued in one transaction (group commit, the design the foundation issue names as its
//! scale: "a bare axum handler inserting into SQLite with group commit"). Durability as in
//! Voronka's own SQLite intake, its most favourable arrangement: the writer commits without
//! waiting for the disk (`synchronous=NORMAL`) and a flushing thread fsyncs the WAL and only
//! then answers the batch, so the writer builds the next batch during the flush; and
//! Voronka's checkpointer copies the log back and starts it over in the background (with no
//! checkpoints at all the log only grew, and appending to it cost more than they do).
//! `bench intake` starts it in a process of its own
//! (`voronka bench floor-serve`, hidden) and drives it exactly as it drives `voronka serve`,
//! so the two figures compare directly.
//!
//! Two kinds of rows a lead:
//! - `one`: one row in a table with an integer key and the request body — HTTP, JSON and the
//!   durable commit alone;
//! - `lead`: the rows Voronka writes for a new lead, into a migrated Voronka database with all
//!   its indexes: the lead, its phone and e-mail identities, its arrival event, its score row
//!   and its outbox message.
//!
//! The writer's connection is set up as Voronka's (`cache_size` 64 MiB, statement journals in
//! memory) and inserts with the same multi-row statements (64, 16, 4 or 1 rows). It does less
//! than Voronka on purpose, so that it bounds it from above: no foreign-key checks, no search
//! index, no `lead_inputs` or idempotency rows. A batch is one transaction,
//! so one failing lead (a phone seen before breaks the identities' key) fails its batch; the
//! benchmark's leads are all distinct.

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::{Args, ValueEnum};
use rusqlite::{Connection, ToSql, TransactionBehavior};
use serde::Deserialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;
use uuid::Uuid;

#[derive(Args, Clone)]
pub struct FloorServeArgs {
    /// The SQLite file; for `--rows lead` a database `voronka migrate` made.
    #[arg(long)]
    database: PathBuf,
    #[arg(long, value_enum)]
    rows: FloorRows,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Indexes to drop before the run (`--rows lead`), to see what each costs the writer.
    #[arg(long = "without-index", value_name = "NAME")]
    without_index: Vec<String>,
}

/// What the writer did so far, served at `GET /floor/stats`.
#[derive(Default)]
struct Counters {
    leads: AtomicU64,
    batches: AtomicU64,
    /// Time inside the inserts (from the transaction's start to the commit), in ns.
    insert_ns: AtomicU64,
    /// Time inside the commits (writing the WAL frames; the fsync is the flusher's), in ns.
    commit_ns: AtomicU64,
    /// Time the flushing thread spent in fsyncs, and their number.
    fsync_ns: AtomicU64,
    fsyncs: AtomicU64,
}

#[derive(Clone)]
struct App {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

/// What the floor writes for each lead.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum FloorRows {
    /// One row: an integer key and the request body.
    One,
    /// A new lead's rows in Voronka's own tables (lead, two identities, event, score, outbox).
    Lead,
}

impl FloorRows {
    pub fn arg(self) -> &'static str {
        match self {
            FloorRows::One => "one",
            FloorRows::Lead => "lead",
        }
    }
}

#[derive(Deserialize)]
struct Body {
    name: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    company: Option<String>,
    channel: Option<String>,
    campaign: Option<String>,
    message: Option<String>,
    #[serde(default)]
    utm: Utm,
}

#[derive(Deserialize, Default)]
struct Utm {
    source: Option<String>,
    medium: Option<String>,
    campaign: Option<String>,
}

struct Job {
    body: Body,
    raw: String,
    reply: tokio::sync::oneshot::Sender<Result<Uuid, String>>,
}

/// Largest batch a commit takes, as in Voronka's SQLite writer.
const MAX_BATCH: usize = 4096;

pub async fn serve(a: FloorServeArgs) -> Result<()> {
    let conn = open(&a.database, a.rows)?;
    for name in &a.without_index {
        let exists: bool =
            conn.query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'index' AND name = ?1", [name], |r| r.get(0))?;
        anyhow::ensure!(exists, "--without-index: no index named {name}");
        conn.execute_batch(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))?;
    }
    let (tx, rx) = mpsc::channel::<Job>();
    let (done_tx, done_rx) = mpsc::channel::<Answers>();
    let (rows, counters) = (a.rows, Arc::new(Counters::default()));
    std::thread::Builder::new().name("vk-floor-writer".into()).spawn({
        let counters = counters.clone();
        move || writer(conn, rx, rows, &counters, done_tx)
    })?;
    // Voronka's checkpointer: with no checkpoints at all the log only grows, and on Linux
    // 6.18 with ext4 appending to it cost the writer more than they do (see the checkpointer
    // in voronka_store). The floor's writer waits for a lock with SQLite's own busy handler
    // and keeps no `journal_size_limit`, so a restart may cost it a little more than it
    // costs Voronka's writer.
    let alive = Arc::new(());
    voronka_store::intake::start_sqlite_checkpointer(&a.database, Arc::downgrade(&alive))?;
    let mut wal = a.database.clone().into_os_string();
    wal.push("-wal");
    std::thread::Builder::new().name("vk-floor-sync".into()).spawn({
        let counters = counters.clone();
        move || flusher(std::path::Path::new(&wal), done_rx, &counters)
    })?;
    let app = axum::Router::new()
        .route("/api/v1/leads", post(create))
        .route("/healthz", get(|| async { "ok" }))
        .route("/floor/stats", get(stats))
        .with_state(App { tx, counters });
    let listener = tokio::net::TcpListener::bind(&a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", listener.local_addr()?)?;
        out.flush()?;
    }
    axum::serve(listener, app).await?;
    drop(alive);
    Ok(())
}

fn open(path: &std::path::Path, rows: FloorRows) -> Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; PRAGMA busy_timeout = 5000; \
         PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(128);
    if rows == FloorRows::One {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS floor_one (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")?;
    }
    Ok(conn)
}

async fn stats(State(app): State<App>) -> Json<serde_json::Value> {
    let c = &app.counters;
    Json(serde_json::json!({
        "leads": c.leads.load(Ordering::Relaxed),
        "batches": c.batches.load(Ordering::Relaxed),
        "insert_ns": c.insert_ns.load(Ordering::Relaxed),
        "commit_ns": c.commit_ns.load(Ordering::Relaxed),
        "fsync_ns": c.fsync_ns.load(Ordering::Relaxed),
        "fsyncs": c.fsyncs.load(Ordering::Relaxed),
    }))
}

async fn create(State(App { tx, .. }): State<App>, body: String) -> (StatusCode, Json<serde_json::Value>) {
    let parsed: Body = match serde_json::from_str(&body) {
        Ok(b) => b,
        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({ "error": e.to_string() }))),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if tx.send(Job { body: parsed, raw: body, reply }).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": "the writer stopped" })));
    }
    match answer.await {
        Ok(Ok(id)) => (StatusCode::CREATED, Json(serde_json::json!({ "id": id }))),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": e }))),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": "the writer stopped" }))),
    }
}

/// Answers of a committed batch, sent once the WAL holding it is on disk.
type Answers = Vec<(tokio::sync::oneshot::Sender<Result<Uuid, String>>, Result<Uuid, String>)>;

/// Group commit: the first waiting lead and every lead queued behind it, in one transaction;
/// the answers go to the flushing thread.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Job>, rows: FloorRows, counters: &Counters, done: mpsc::Sender<Answers>) {
    let mut failed_once = false;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
        let r = write(&mut conn, &jobs, &ids, rows, counters).map_err(|e| format!("{e:#}"));
        if let Err(e) = &r
            && !failed_once
        {
            eprintln!("floor: a batch of {} failed: {e}", jobs.len());
            failed_once = true;
        }
        let answers = jobs.into_iter().zip(ids).map(|(j, id)| (j.reply, r.clone().map(|()| id))).collect();
        if done.send(answers).is_err() {
            return;
        }
    }
}

/// Fsyncs the WAL once for every batch committed before it began, then answers them. After
/// a failed fsync nothing more is acknowledged (as in Voronka's own flusher).
fn flusher(wal: &std::path::Path, done: mpsc::Receiver<Answers>, counters: &Counters) {
    let mut failed: Option<String> = None;
    while let Ok(first) = done.recv() {
        let mut batches = vec![first];
        while let Ok(more) = done.try_recv() {
            batches.push(more);
        }
        let started = Instant::now();
        let synced = std::fs::OpenOptions::new().write(true).open(wal).and_then(|f| f.sync_data()).map_err(|e| e.to_string());
        if let Err(e) = &synced
            && failed.is_none()
        {
            eprintln!("floor: cannot flush the WAL: {e}; nothing more is acknowledged");
            failed = Some(format!("an earlier flush of the WAL failed: {e}"));
        }
        let synced = match &failed {
            Some(e) => Err(e.clone()),
            None => synced,
        };
        counters.fsync_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        for (reply, r) in batches.into_iter().flatten() {
            let _ = reply.send(synced.clone().and(r));
        }
    }
}

fn write(conn: &mut Connection, jobs: &[Job], ids: &[Uuid], rows: FloorRows, counters: &Counters) -> Result<()> {
    let started = Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = chrono::Utc::now().timestamp_micros();
    match rows {
        FloorRows::One => {
            let bodies: Vec<&dyn ToSql> = jobs.iter().map(|j| &j.raw as &dyn ToSql).collect();
            insert_rows(&tx, "INSERT INTO floor_one (body)", 1, &bodies)?;
        }
        FloorRows::Lead => {
            /// A lead's values that are not in its request as they are.
            struct Made {
                channel: String,
                search: String,
                idents: Vec<(String, &'static str)>,
                data: String,
                payload: String,
            }
            let made: Vec<Made> = jobs
                .iter()
                .zip(ids)
                .map(|(j, id)| {
                    let b = &j.body;
                    let channel = b.channel.clone().unwrap_or_else(|| "api".into());
                    let search = [&b.name, &b.company, &b.email, &b.phone]
                        .iter()
                        .filter_map(|s| s.as_deref())
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase();
                    let mut idents = Vec::new();
                    if let Some(p) = &b.phone {
                        idents.push((format!("phone:{p}"), "phone"));
                    }
                    if let Some(e) = &b.email {
                        idents.push((format!("email:{}", e.to_lowercase()), "email"));
                    }
                    let data = serde_json::json!({ "channel": channel, "campaign": b.campaign, "message": b.message }).to_string();
                    Made { channel, search, idents, data, payload: serde_json::json!({ "lead_id": id }).to_string() }
                })
                .collect();
            let (new, created, cold, grade, topic) = ("new", "lead_created", "cold", "C", "lead.created");
            let (points, version, ledger) = (4i64, 1i64, [7u8; 24]);
            let ledger = &ledger[..];
            let mut leads: Vec<&dyn ToSql> = Vec::with_capacity(jobs.len() * 16);
            let mut identities: Vec<&dyn ToSql> = Vec::with_capacity(jobs.len() * 8);
            let mut events: Vec<&dyn ToSql> = Vec::with_capacity(jobs.len() * 5);
            let mut scores: Vec<&dyn ToSql> = Vec::with_capacity(jobs.len() * 10);
            let mut outbox: Vec<&dyn ToSql> = Vec::with_capacity(jobs.len() * 5);
            for ((j, id), m) in jobs.iter().zip(ids).zip(&made) {
                let b = &j.body;
                leads.extend_from_slice(&[
                    id as &dyn ToSql,
                    &b.name,
                    &b.phone,
                    &b.email,
                    &b.company,
                    &b.message,
                    &m.channel,
                    &b.campaign,
                    &b.utm.source,
                    &b.utm.medium,
                    &b.utm.campaign,
                    &new,
                    &m.search,
                    &now,
                    &now,
                    &now,
                ]);
                for (ident, kind) in &m.idents {
                    identities.extend_from_slice(&[ident as &dyn ToSql, kind, id, &now]);
                }
                events.extend_from_slice(&[id as &dyn ToSql, &created, &now, &m.data, &now]);
                scores.extend_from_slice(&[id as &dyn ToSql, &points, &points, &points, &cold, &grade, &ledger, &version, &now, &new]);
                outbox.extend_from_slice(&[&topic as &dyn ToSql, id, &m.payload, &now, &now]);
            }
            insert_rows(
                &tx,
                "INSERT INTO leads (id, name, phone, email, company, message, channel, campaign, utm_source, utm_medium, \
                 utm_campaign, status, search, created_at, updated_at, last_request_at)",
                16,
                &leads,
            )?;
            insert_rows(&tx, "INSERT INTO identities (ident, kind, lead_id, created_at)", 4, &identities)?;
            insert_rows(&tx, "INSERT INTO events (lead_id, kind, at, data, created_at)", 5, &events)?;
            insert_rows(
                &tx,
                "INSERT INTO lead_scores (lead_id, score, priority, profile, temperature, grade, ledger, model_version, scored_at, status)",
                10,
                &scores,
            )?;
            insert_rows(&tx, "INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at)", 5, &outbox)?;
        }
    }
    let inserted = Instant::now();
    tx.commit()?;
    counters.insert_ns.fetch_add(inserted.duration_since(started).as_nanos() as u64, Ordering::Relaxed);
    counters.commit_ns.fetch_add(inserted.elapsed().as_nanos() as u64, Ordering::Relaxed);
    counters.leads.fetch_add(jobs.len() as u64, Ordering::Relaxed);
    counters.batches.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Rows per multi-row statement, as in Voronka's SQLite writer (fixed sizes, so that the
/// prepared statements are reused).
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// Inserts rows of `cols` values each (flattened in `values`) with `{head} VALUES (…), (…)`.
fn insert_rows(tx: &rusqlite::Transaction, head: &str, cols: usize, values: &[&dyn ToSql]) -> Result<()> {
    let mut rest = values;
    while !rest.is_empty() {
        let rows = rest.len() / cols;
        let n = CHUNKS.into_iter().find(|c| *c <= rows).unwrap_or(1);
        let (chunk, tail) = rest.split_at(n * cols);
        let row = format!("({})", vec!["?"; cols].join(", "));
        tx.prepare_cached(&format!("{head} VALUES {}", vec![row; n].join(", ")))?.execute(rusqlite::params_from_iter(chunk))?;
        rest = tail;
    }
    Ok(())
}

/// What the SQLite import floor measured.
pub struct ImportFloor {
    pub leads: u64,
    pub secs: f64,
}

/// The SQLite import floor: one writer, as Voronka's, doing the least an import with
/// deduplication must do for each new lead of a file — look its phone and e-mail up, insert
/// the lead, its two identities, its arrival event, its score row, its outbox message and
/// the row's outcome (the import's report and undo read it) — into the migrated database at
/// `path` with all its indexes, `batch` leads a durable transaction, `leads` leads in all.
/// With the schema's foreign keys (as Voronka's writer), nothing else: no parsing,
/// normalising or scoring, no repeats, no search index; so the import's writer cannot take
/// less. Voronka's checkpointer runs beside it, as beside the import (with no checkpoints
/// the log only grew, and appending to it cost the writer more than they do).
pub fn import_floor(path: &std::path::Path, leads: u64, batch: usize) -> Result<ImportFloor> {
    let mut conn = open(path, FloorRows::Lead)?;
    let alive = Arc::new(());
    voronka_store::intake::start_sqlite_checkpointer(path, Arc::downgrade(&alive))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON")?;
    let import_id = Uuid::now_v7();
    let started = Instant::now();
    let mut done = 0u64;
    while done < leads {
        let n = (leads - done).min(batch as u64);
        let now = chrono::Utc::now().timestamp_micros();
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        let names: Vec<String> = (done..done + n).map(|i| format!("Импорт {i}")).collect();
        let phones: Vec<String> = (done..done + n).map(|i| format!("+79{:09}", i % 1_000_000_000)).collect();
        let emails: Vec<String> = (done..done + n).map(|i| format!("floor{i}@example.ru")).collect();
        let search: Vec<String> =
            (0..n as usize).map(|i| format!("{} ооо тест {} {}", names[i].to_lowercase(), emails[i], phones[i])).collect();
        let idents: Vec<(String, &str, &Uuid)> = (0..n as usize)
            .flat_map(|i| [(format!("phone:{}", phones[i]), "phone", &ids[i]), (format!("email:{}", emails[i]), "email", &ids[i])])
            .collect();
        let rows: Vec<i64> = (done..done + n).map(|i| i as i64 + 2).collect();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for chunk in idents.chunks(64) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT i.lead_id, l.status FROM identities i JOIN leads l ON l.id = i.lead_id WHERE i.ident IN ({marks})"
            ))?;
            let found =
                stmt.query(rusqlite::params_from_iter(chunk.iter().map(|(ident, _, _)| ident)))?.mapped(|r| r.get::<_, Uuid>(0)).count();
            anyhow::ensure!(found == 0, "the floor's contacts are new");
        }
        let (new, created, cold, grade, topic, channel, company, message) =
            ("new", "lead_created", "cold", "C", "lead.created", "import", "ООО Тест", "Хочу узнать цену");
        // Scores spread over 12 values, as many as the profiles of `bench import`'s file make
        // (6 positions with their cities, with or without a free-mail address): with one
        // value for every lead the score indexes were only appended to, and cheaper than
        // any real import's (200,000 score rows into a table of 1 M: 2.07 s against
        // 3.44–3.57 s spread over 100 values, `sqlite3`).
        let points: Vec<i64> = (done..done + n).map(|i| (i.wrapping_mul(2_654_435_761) % 12) as i64).collect();
        let (version, ledger, outcome) = (1i64, [7u8; 24], "created");
        let (ledger, data) = (&ledger[..], r#"{"channel":"import","source":"bench"}"#);
        let payloads: Vec<String> = ids.iter().map(|id| serde_json::json!({ "lead_id": id }).to_string()).collect();
        let none: Option<String> = None;
        let mut lead_rows: Vec<&dyn ToSql> = Vec::with_capacity(n as usize * 16);
        let mut ident_rows: Vec<&dyn ToSql> = Vec::with_capacity(idents.len() * 4);
        let mut events: Vec<&dyn ToSql> = Vec::with_capacity(n as usize * 5);
        let mut scores: Vec<&dyn ToSql> = Vec::with_capacity(n as usize * 10);
        let mut outbox: Vec<&dyn ToSql> = Vec::with_capacity(n as usize * 5);
        let mut outcomes: Vec<&dyn ToSql> = Vec::with_capacity(n as usize * 4);
        for i in 0..n as usize {
            let id = &ids[i];
            lead_rows.extend_from_slice(&[
                id as &dyn ToSql,
                &names[i],
                &phones[i],
                &emails[i],
                &company,
                &message,
                &channel,
                &none,
                &none,
                &none,
                &none,
                &new,
                &search[i],
                &now,
                &now,
                &now,
            ]);
            events.extend_from_slice(&[id as &dyn ToSql, &created, &now, &data, &now]);
            let p = &points[i];
            scores.extend_from_slice(&[id as &dyn ToSql, p, p, p, &cold, &grade, &ledger, &version, &now, &new]);
            outbox.extend_from_slice(&[&topic as &dyn ToSql, id, &payloads[i], &now, &now]);
            outcomes.extend_from_slice(&[&import_id as &dyn ToSql, &rows[i], &outcome, id]);
        }
        for (ident, kind, id) in &idents {
            ident_rows.extend_from_slice(&[ident as &dyn ToSql, kind, *id, &now]);
        }
        insert_rows(
            &tx,
            "INSERT INTO leads (id, name, phone, email, company, message, channel, campaign, utm_source, utm_medium, \
             utm_campaign, status, search, created_at, updated_at, last_request_at)",
            16,
            &lead_rows,
        )?;
        insert_rows(&tx, "INSERT INTO identities (ident, kind, lead_id, created_at)", 4, &ident_rows)?;
        insert_rows(&tx, "INSERT INTO events (lead_id, kind, at, data, created_at)", 5, &events)?;
        insert_rows(
            &tx,
            "INSERT INTO lead_scores (lead_id, score, priority, profile, temperature, grade, ledger, model_version, scored_at, status)",
            10,
            &scores,
        )?;
        insert_rows(&tx, "INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at)", 5, &outbox)?;
        insert_rows(&tx, "INSERT INTO import_rows (import_id, row_no, outcome, lead_id)", 4, &outcomes)?;
        tx.commit()?;
        done += n;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(alive);
    Ok(ImportFloor { leads: done, secs })
}
