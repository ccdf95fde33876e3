//! The SQLite intake floor: what a durable lead over HTTP costs on this machine at the least.
//!
//! A bare axum handler — JSON in, no authentication, no normalising, no lookups, no scoring,
//! no background work — hands each lead to one writer thread, which commits whatever has
//! queued in one transaction (group commit, the design the foundation issue names as its
//! scale: "a bare axum handler inserting into SQLite with group commit"). Durability as in
//! Voronka's own SQLite intake, its most favourable arrangement: the writer commits without
//! waiting for the disk (`synchronous=NORMAL`) and a flushing thread fsyncs the WAL and only
//! then answers the batch, so the writer builds the next batch during the flush; and no
//! checkpoint runs at all during the run. `bench intake` starts it in a process of its own
//! (`voronka bench floor-serve`, hidden) and drives it exactly as it drives `voronka serve`,
//! so the two figures compare directly.
//!
//! Two kinds of rows a lead:
//! - `one`: one row in a table with an integer key and the request body — HTTP, JSON and the
//!   durable commit alone;
//! - `lead`: the rows Voronka writes for a new lead, into a migrated Voronka database with all
//!   its indexes: the lead, its phone and e-mail identities, its arrival event, its score row
//!   and its outbox message.

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::{Args, ValueEnum};
use rusqlite::{Connection, TransactionBehavior, params};
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
    Ok(())
}

fn open(path: &std::path::Path, rows: FloorRows) -> Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; PRAGMA busy_timeout = 5000;",
    )?;
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
        let answers = jobs.into_iter().zip(ids).map(|(j, id)| (j.reply, r.clone().map(|()| id))).collect();
        if done.send(answers).is_err() {
            return;
        }
    }
}

/// Fsyncs the WAL once for every batch committed before it began, then answers them.
fn flusher(wal: &std::path::Path, done: mpsc::Receiver<Answers>, counters: &Counters) {
    while let Ok(first) = done.recv() {
        let mut batches = vec![first];
        while let Ok(more) = done.try_recv() {
            batches.push(more);
        }
        let started = Instant::now();
        let synced = std::fs::OpenOptions::new().write(true).open(wal).and_then(|f| f.sync_data()).map_err(|e| e.to_string());
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
            let mut stmt = tx.prepare_cached("INSERT INTO floor_one (body) VALUES (?1)")?;
            for j in jobs {
                stmt.execute([&j.raw])?;
            }
        }
        FloorRows::Lead => {
            let mut lead = tx.prepare_cached(
                "INSERT INTO leads (id, name, phone, email, company, message, channel, campaign, utm_source, utm_medium, \
                 utm_campaign, status, search, created_at, updated_at, last_request_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'new', ?12, ?13, ?13, ?13)",
            )?;
            let mut ident = tx.prepare_cached("INSERT INTO identities (ident, kind, lead_id, created_at) VALUES (?1, ?2, ?3, ?4)")?;
            let mut event =
                tx.prepare_cached("INSERT INTO events (lead_id, kind, at, data, created_at) VALUES (?1, 'lead_created', ?2, ?3, ?2)")?;
            let mut score = tx.prepare_cached(
                "INSERT INTO lead_scores (lead_id, score, priority, profile, temperature, grade, ledger, model_version, scored_at, status) \
                 VALUES (?1, 4, 4, 4, 'cold', 'C', ?2, 1, ?3, 'new')",
            )?;
            let mut outbox = tx.prepare_cached(
                "INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) VALUES ('lead.created', ?1, ?2, ?3, ?3)",
            )?;
            let ledger = [7u8; 24];
            for (j, id) in jobs.iter().zip(ids) {
                let b = &j.body;
                let channel = b.channel.as_deref().unwrap_or("api");
                let search = [&b.name, &b.company, &b.email, &b.phone]
                    .iter()
                    .filter_map(|s| s.as_deref())
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase();
                lead.execute(params![
                    id,
                    b.name,
                    b.phone,
                    b.email,
                    b.company,
                    b.message,
                    channel,
                    b.campaign,
                    b.utm.source,
                    b.utm.medium,
                    b.utm.campaign,
                    search,
                    now
                ])?;
                if let Some(p) = &b.phone {
                    ident.execute(params![format!("phone:{p}"), "phone", id, now])?;
                }
                if let Some(e) = &b.email {
                    ident.execute(params![format!("email:{}", e.to_lowercase()), "email", id, now])?;
                }
                let data = serde_json::json!({ "channel": channel, "campaign": b.campaign, "message": b.message }).to_string();
                event.execute(params![id, now, data])?;
                score.execute(params![id, &ledger[..], now])?;
                outbox.execute(params![id, serde_json::json!({ "lead_id": id }).to_string(), now])?;
            }
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
