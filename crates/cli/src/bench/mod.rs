//! `voronka bench …`: measurements of a real `voronka serve` process over loopback.
//! The load generator runs on one thread so that the server keeps the other core.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use voronka_domain::SystemClock;
use voronka_store::seed::SeedSpec;
use voronka_store::{CountOf, Store, StoreConfig};

mod floor;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable lead intake over HTTP (POST /api/v1/leads), and GET /healthz as the ceiling.
    Intake(IntakeArgs),
    /// Tracker events with live scoring over HTTP (POST /api/v1/events, batches of 50).
    Events(EventsArgs),
    /// Full re-scoring after model changes, on a generated dataset.
    Rescore(RescoreArgs),
    /// Server time of the web UI pages (inbox, lead card, kanban, dashboard) on a large database.
    Ui(UiArgs),
    /// Writes a generated dataset (leads, events, scores) into a database.
    Seed(SeedArgs),
    /// `voronka import` of a generated Windows-1251 `;` CSV (every row through the intake).
    Import(ImportBenchArgs),
    /// The SQLite intake floor's server, started by `bench intake` (see bench/floor.rs).
    #[command(hide = true)]
    FloorServe(floor::FloorServeArgs),
}

#[derive(Args, Clone)]
pub struct ImportBenchArgs {
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    #[arg(long, env = "VORONKA_BENCH_PG_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Rows in the file.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Share of rows that repeat an earlier row's person (repeat requests).
    #[arg(long, default_value_t = 0.1)]
    repeat_share: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Skip the floor measured after the import: PostgreSQL alone inserting the rows of a
    /// lead, as the import's writers batch them; on SQLite its one writer alone inserting
    /// the rows of every new lead of the file.
    #[arg(long)]
    no_floor: bool,
    /// Another writer beside the import, as a manager's edit would be: an audit row every
    /// this many milliseconds, each write timed (0: none).
    #[arg(long, default_value_t = 250)]
    other_write_every_ms: u64,
    /// Indexes of Voronka's schema PostgreSQL's floor runs without (repeat the option), to
    /// see what each costs.
    #[arg(long, value_name = "NAME")]
    floor_without_index: Vec<String>,
    /// How long PostgreSQL's floor runs, in seconds.
    #[arg(long, default_value_t = 20.0)]
    floor_secs: f64,
}

#[derive(Args, Clone)]
pub struct UiArgs {
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    #[arg(long, env = "VORONKA_BENCH_PG_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Leads in the database.
    #[arg(long, default_value_t = 100_000)]
    leads: u64,
    #[arg(long, default_value_t = 10)]
    events_per_lead: u32,
    /// Managers owning the leads that are past `new` and `nurturing`.
    #[arg(long, default_value_t = 20)]
    managers: u32,
    /// Requests per page, one at a time (latency, not throughput).
    #[arg(long, default_value_t = 300)]
    requests: u64,
    /// Measure on this existing database instead of a fresh generated one: one made by
    /// `bench seed --managers N` (its managers own the leads past `new`); `--leads` must be
    /// the number it was seeded with (the phones searched for are derived from it). The
    /// database is kept, and `--backend` is ignored.
    #[arg(long, value_name = "URL")]
    existing_database: Option<String>,
}

#[derive(Args, Clone)]
pub struct EventsArgs {
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    #[arg(long, env = "VORONKA_BENCH_PG_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Leads (with visitor ids) in the database before the run.
    #[arg(long, default_value_t = 20_000)]
    leads: u64,
    /// Events per request.
    #[arg(long, default_value_t = 50)]
    batch: usize,
}

#[derive(Args, Clone)]
pub struct RescoreArgs {
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    #[arg(long, env = "VORONKA_BENCH_PG_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    leads: u64,
    #[arg(long, default_value_t = 10)]
    events_per_lead: u32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Re-score this existing database (made by `bench seed`, say) instead of a fresh
    /// generated one; it is kept, and `--backend` is ignored.
    #[arg(long, value_name = "URL")]
    existing_database: Option<String>,
}

#[derive(Args, Clone)]
pub struct SeedArgs {
    /// The database to fill (it is created and migrated when missing).
    #[arg(long, env = "VORONKA_DATABASE_URL", default_value = "sqlite://./voronka.db")]
    database_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    leads: u64,
    #[arg(long, default_value_t = 10)]
    events_per_lead: u32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Give each lead a visitor id: `v` followed by the lead's number in the dataset.
    #[arg(long)]
    visitors: bool,
    /// Create this many managers (`m0@bench.local`, `m1@bench.local`, …, and an admin,
    /// `admin@bench.local`, all without a password) who own the leads past `new` and
    /// `nurturing`, as `bench ui` needs.
    #[arg(long, default_value_t = 0)]
    managers: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Args, Clone)]
pub struct IntakeArgs {
    /// Backends to measure; each gets a fresh database that is removed afterwards.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    /// PostgreSQL server to create the benchmark database on.
    #[arg(long, env = "VORONKA_BENCH_PG_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of measured load per scenario.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of unmeasured warm-up before each scenario.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Leads generated into the database before the run (`bench seed`'s dataset), so that the
    /// intake is measured against full tables and indexes; the target is stated at 1 M.
    #[arg(long, default_value_t = 1_000_000)]
    preload: u64,
    /// Behaviour events per preloaded lead, on average.
    #[arg(long, default_value_t = 10)]
    preload_events: u32,
    /// Measure on this existing database (made by `bench seed`, say) instead of a fresh
    /// one; nothing is preloaded, the database is kept, and `--backend` is ignored.
    #[arg(long, value_name = "URL")]
    existing_database: Option<String>,
    /// Skip the floors measured after the HTTP run: on SQLite a bare HTTP handler with group
    /// commit (one row a lead, then a lead's rows), on PostgreSQL the database alone
    /// inserting the rows of a lead.
    #[arg(long)]
    no_floor: bool,
    /// Indexes of Voronka's schema the SQLite floor of a lead's rows runs without (repeat
    /// the option), to see what each costs the writer.
    #[arg(long, value_name = "NAME")]
    floor_without_index: Vec<String>,
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Intake(a) => intake(a).await,
        BenchCommand::Events(a) => events(a).await,
        BenchCommand::Rescore(a) => rescore(a).await,
        BenchCommand::Ui(a) => ui(a).await,
        BenchCommand::Import(a) => import_bench(a).await,
        BenchCommand::FloorServe(a) => floor::serve(a).await,
        BenchCommand::Seed(a) => {
            let store = Store::open(&StoreConfig::new(&a.database_url), Arc::new(SystemClock)).await?;
            let owners = if a.managers > 0 { bench_users(&store, a.managers).await? } else { Vec::new() };
            let spec = SeedSpec { leads: a.leads, events_per_lead: a.events_per_lead, seed: a.seed, visitors: a.visitors, owners };
            let r = seed(&store, &spec).await?;
            store.close().await;
            println!("seeded {} leads and {} events in {:.1} s", r.leads, r.events, r.millis as f64 / 1000.0);
            Ok(())
        }
    }
}

fn backends(w: Which) -> Vec<Which> {
    match w {
        Which::Both => vec![Which::Sqlite, Which::Postgres],
        w => vec![w],
    }
}

fn backend_name(w: Which) -> &'static str {
    if w == Which::Sqlite { "sqlite" } else { "postgres" }
}

async fn seed(store: &Store, spec: &SeedSpec) -> Result<voronka_store::seed::SeedReport> {
    let total = spec.leads;
    let started = Instant::now();
    let r = store
        .seed(spec, |done| {
            let secs = started.elapsed().as_secs_f64().max(0.001);
            eprint!("\r  seeding: {done}/{total} leads ({:.0} leads/s)   ", done as f64 / secs);
        })
        .await?;
    eprintln!();
    Ok(r)
}

async fn rescore(a: RescoreArgs) -> Result<()> {
    if let Some(url) = &a.existing_database {
        println!("voronka bench rescore: the leads of {}", voronka_store::redact(url));
        let name = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
        return rescore_one(&a, name, url, false).await;
    }
    println!("voronka bench rescore: {} leads, about {} events each", a.leads, a.events_per_lead);
    for which in backends(a.backend) {
        let db = BenchDb::create(which, &a.pg_url).await?;
        let r = rescore_one(&a, backend_name(which), &db.url, true).await;
        db.remove().await;
        r?;
    }
    Ok(())
}

async fn rescore_one(a: &RescoreArgs, name: &str, url: &str, generate: bool) -> Result<()> {
    let store = Store::open(&StoreConfig::new(url), Arc::new(SystemClock)).await?;
    if generate {
        let spec = SeedSpec { leads: a.leads, events_per_lead: a.events_per_lead, seed: a.seed, visitors: false, ..Default::default() };
        let s = seed(&store, &spec).await?;
        println!(
            "[{name}] dataset: {} leads, {} behaviour events (+{} lead_created) written in {:.1} s",
            s.leads,
            s.events,
            s.leads,
            s.millis as f64 / 1000.0
        );
    }
    let starter = voronka_domain::scoring::starter_json();
    let mut behaviour = starter.clone();
    behaviour["rules"][0]["points"] = serde_json::json!(2);
    let mut profile = behaviour.clone();
    profile["rules"][15]["points"] = serde_json::json!(3);
    // Changes of points carry the entries over; a change of what a rule matches evaluates
    // the leads' events (a behaviour rule) or fields (a profile or geography rule) again.
    let mut cap = starter.clone();
    cap["rules"][0]["cap"] = serde_json::json!(12);
    let mut geo = cap.clone();
    if let Some(cities) =
        geo["rules"].as_array_mut().and_then(|r| r.iter_mut().find(|r| r["id"] == "capital_city")).and_then(|r| r["cities"].as_array_mut())
    {
        cities.push(serde_json::json!("Казань"));
    }
    for (what, model) in [
        ("a behaviour rule's points (page_view +1 → +2)", &behaviour),
        ("a profile rule's points (company +2 → +3)", &profile),
        ("back to the starter model's points", &starter),
        ("a behaviour rule's cap (page_view 10 → 12: the events read again)", &cap),
        ("a geography rule's cities (Kazan added: the leads' fields read again)", &geo),
    ] {
        let t = Instant::now();
        let (version, report) = store.put_model(model).await?.map_err(|e| anyhow::anyhow!("model refused: {e:?}"))?;
        println!(
            "[{name}] re-score after changing {what}: {} leads in {:.2} s ({} changed), model v{version}",
            report.rescored,
            t.elapsed().as_secs_f64(),
            report.changed
        );
    }
    let t = Instant::now();
    let r = store.refresh_scores().await?;
    println!(
        "[{name}] refresh of stored scores (decay): {} leads in {:.2} s ({} changed)",
        r.rescored,
        t.elapsed().as_secs_f64(),
        r.changed
    );
    println!("[{name}] peak RSS of this process {}", self_peak_rss_mib().map(|r| format!("{r:.0} MiB")).unwrap_or_else(|| "n/a".into()));
    store.close().await;
    if name == "postgres" {
        let floor = pg_rescore_floor(url, r.rescored).await?;
        println!(
            "[{name}] the floor: PostgreSQL alone, in one transaction, building a table of {} narrow score rows \
             (id, score, priority, state, owner) anew from the old one with the score and priority changed, its key and the \
             lists' four indexes, and swapping it in: {:.2} s (fill {:.2}, indexes {:.2}, swap and commit {:.2})",
            r.rescored, floor.total, floor.update, floor.indexes, floor.commit
        );
    }
    if name == "sqlite" {
        let leads = r.rescored;
        // Beside the database under test: the same disk.
        let dir = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|p| p.split('?').next().unwrap_or(p))
            .and_then(|p| std::path::Path::new(p).parent().map(|d| d.to_path_buf()))
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(std::env::temp_dir);
        let floor = tokio::task::spawn_blocking(move || sqlite_floor(leads, &dir)).await??;
        println!(
            "[{name}] the floor: SQLite alone, in one transaction, updating the sorted columns of {leads} narrow score rows \
             (id, score, priority, state, owner) and building the lists' four indexes again: {:.2} s \
             (update {:.2}, indexes {:.2}, commit {:.2})",
            floor.total, floor.update, floor.indexes, floor.commit
        );
    }
    Ok(())
}

struct Floor {
    total: f64,
    update: f64,
    indexes: f64,
    commit: f64,
}

/// What the full re-score's write costs at the least on this machine: a table holding only
/// what the lists sort and filter by, in a scratch SQLite file beside the database under
/// test, every row's score and priority changed and the four list indexes built again in one
/// durable transaction — the re-score's write with nothing of Voronka's in it (no ledger, no
/// scoring, no reading of events).
fn sqlite_floor(rows: u64, beside: &std::path::Path) -> Result<Floor> {
    let dir = beside.join(format!("voronka-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let r = (|| -> Result<Floor> {
        let mut c = rusqlite::Connection::open(dir.join("floor.db"))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "FULL")?;
        c.pragma_update(None, "cache_size", -262_144)?;
        c.pragma_update(None, "temp_store", "FILE")?;
        c.pragma_update(None, "threads", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as i64)?;
        c.execute_batch(
            "CREATE TABLE s (lead_id BLOB PRIMARY KEY, score REAL NOT NULL, priority REAL NOT NULL, status TEXT, owner_id BLOB) WITHOUT ROWID",
        )?;
        const INDEXES: &str = "CREATE INDEX s_priority ON s (priority); CREATE INDEX s_score ON s (score); \
             CREATE INDEX s_status ON s (status, priority); CREATE INDEX s_owner ON s (owner_id, priority);";
        {
            let tx = c.transaction()?;
            {
                let mut ins = tx.prepare("INSERT INTO s VALUES (?1, ?2, ?3, ?4, ?5)")?;
                let owners: Vec<uuid::Uuid> = (0..20).map(|_| uuid::Uuid::now_v7()).collect();
                const STATES: [&str; 5] = ["new", "in_work", "nurturing", "refused", "qualified"];
                for i in 0..rows {
                    let score = rand::random_range(0.0..100.0f64);
                    let owner = (i % 3 != 0).then(|| owners[(i % 20) as usize]);
                    ins.execute(rusqlite::params![
                        uuid::Uuid::now_v7(),
                        score,
                        score + rand::random_range(0.0..20.0f64),
                        STATES[(i % 5) as usize],
                        owner
                    ])?;
                }
            }
            tx.execute_batch(INDEXES)?;
            tx.commit()?;
        }
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        let t = Instant::now();
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch("DROP INDEX s_priority; DROP INDEX s_score; DROP INDEX s_status; DROP INDEX s_owner;")?;
        tx.execute("UPDATE s SET score = score + 1, priority = priority + 1", [])?;
        let update = t.elapsed().as_secs_f64();
        // The sorter's runs as small as the re-score makes them, so that they are sorted on
        // every core (see `voronka_store::rescore::SORT_CACHE_KIB`).
        tx.pragma_update(None, "cache_size", voronka_store::rescore::SORT_CACHE_KIB)?;
        tx.execute_batch(INDEXES)?;
        let indexes = t.elapsed().as_secs_f64() - update;
        tx.commit()?;
        let total = t.elapsed().as_secs_f64();
        Ok(Floor { total, update, indexes, commit: total - update - indexes })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// The PostgreSQL counterpart of `sqlite_floor`: a table of only what the lists sort and
/// filter by, in a schema of its own in the database under test (dropped afterwards), built
/// anew from itself with every score and priority changed, its key and the four list
/// indexes built, and swapped in, in one transaction — what Voronka's re-score does on
/// PostgreSQL with nothing of Voronka's in it (no ledger, no scoring, no reading of events).
async fn pg_rescore_floor(url: &str, rows: u64) -> Result<Floor> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?;
    let schema = format!("voronka_floor_{}", std::process::id());
    let r = async {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
             CREATE TABLE {schema}.s (lead_id UUID NOT NULL, score FLOAT8 NOT NULL, priority FLOAT8 NOT NULL, status TEXT, owner_id UUID); \
             INSERT INTO {schema}.s SELECT gen_random_uuid(), r, r + random() * 20, \
               (ARRAY['new', 'in_work', 'nurturing', 'refused', 'qualified'])[1 + n % 5], \
               CASE WHEN n % 3 = 0 THEN NULL ELSE ('00000000-0000-0000-0000-0000000000' || lpad((n % 20)::text, 2, '0'))::uuid END \
             FROM (SELECT n, random() * 100 AS r FROM generate_series(1, {rows}) n) g; \
             ALTER TABLE {schema}.s ADD PRIMARY KEY (lead_id); \
             CREATE INDEX ON {schema}.s (priority, lead_id); CREATE INDEX ON {schema}.s (score, lead_id); \
             CREATE INDEX ON {schema}.s (status, priority, lead_id); CREATE INDEX ON {schema}.s (owner_id, priority, lead_id)"
        )))
        .execute(&pool)
        .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {schema}.s"))).execute(&pool).await?;
        let t = Instant::now();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "BEGIN; SET LOCAL maintenance_work_mem = '256MB'; CREATE TABLE {schema}.n (LIKE {schema}.s); \
             INSERT INTO {schema}.n SELECT lead_id, score + 1, priority + 1, status, owner_id FROM {schema}.s"
        )))
        .execute(&pool)
        .await?;
        let update = t.elapsed().as_secs_f64();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {schema}.n ADD PRIMARY KEY (lead_id); \
             CREATE INDEX ON {schema}.n (priority, lead_id); CREATE INDEX ON {schema}.n (score, lead_id); \
             CREATE INDEX ON {schema}.n (status, priority, lead_id); CREATE INDEX ON {schema}.n (owner_id, priority, lead_id)"
        )))
        .execute(&pool)
        .await?;
        let indexes = t.elapsed().as_secs_f64() - update;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {schema}.s; ALTER TABLE {schema}.n RENAME TO s; COMMIT")))
            .execute(&pool)
            .await?;
        let total = t.elapsed().as_secs_f64();
        anyhow::Ok(Floor { total, update, indexes, commit: total - update - indexes })
    }
    .await;
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ROLLBACK; DROP SCHEMA IF EXISTS {schema} CASCADE"))).execute(&pool).await;
    pool.close().await;
    r
}

/// Sends `requests` GETs one after another (after a short warm-up) and returns their latencies.
fn pages(addr: SocketAddr, requests: u64, make: MakeReq) -> Result<Stats> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut stats = Stats { ok: 0, errors: 0, secs: 0.0, lat_us: Vec::with_capacity(requests as usize) };
        let warmup = (requests / 10).max(3);
        let start = Instant::now();
        for n in 0..warmup + requests {
            let req = make(n);
            let t = Instant::now();
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            if n < warmup {
                continue;
            }
            if status == 200 && !body.is_empty() {
                stats.ok += 1;
                stats.lat_us.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            } else {
                stats.errors += 1;
            }
        }
        stats.secs = start.elapsed().as_secs_f64();
        stats.lat_us.sort_unstable();
        anyhow::Ok(stats)
    })
}

/// Ids of the first 100 leads of `GET /api/v1/leads?{query}`.
async fn lead_ids(addr: SocketAddr, token: &str, query: &str) -> Result<Vec<String>> {
    lead_field(addr, token, query, "id").await
}

/// A field of the leads of a list's first page (those that have it).
async fn lead_field(addr: SocketAddr, token: &str, query: &str, field: &str) -> Result<Vec<String>> {
    let v = get_json(addr, &format!("/api/v1/leads?limit=100&{query}"), token).await.context("lead list")?;
    Ok(v["items"].as_array().into_iter().flatten().filter_map(|l| l[field].as_str().map(str::to_string)).collect())
}

/// One `GET` on a connection of its own, its body read as JSON.
async fn get_json(addr: SocketAddr, path: &str, token: &str) -> Result<serde_json::Value> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// Surnames searched for in the inbox, URL-encoded: Смирнова, Кузнецов, Smith, "иван".
const NAMES_TYPED: &[&str] = &[
    "%D0%A1%D0%BC%D0%B8%D1%80%D0%BD%D0%BE%D0%B2%D0%B0",
    "%D0%9A%D1%83%D0%B7%D0%BD%D0%B5%D1%86%D0%BE%D0%B2",
    "Smith",
    "%D0%B8%D0%B2%D0%B0%D0%BD",
];

async fn ui(a: UiArgs) -> Result<()> {
    if let Some(url) = &a.existing_database {
        // The leads, events and managers are the database's own, not the options'.
        println!("voronka bench ui: the leads of {}, {} sequential requests per page", voronka_store::redact(url), a.requests);
        let name = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
        return ui_one(&a, name, url, false).await;
    }
    println!(
        "voronka bench ui: {} leads (about {} events each), {} managers, {} sequential requests per page",
        a.leads, a.events_per_lead, a.managers, a.requests
    );
    for which in backends(a.backend) {
        let db = BenchDb::create(which, &a.pg_url).await?;
        let r = ui_one(&a, backend_name(which), &db.url, true).await;
        db.remove().await;
        r?;
    }
    Ok(())
}

/// The bench users: an admin and `managers` managers (`m{i}@bench.local`), made when missing;
/// returns the managers' ids.
async fn bench_users(store: &Store, managers: u32) -> Result<Vec<uuid::Uuid>> {
    let user = |email: String, role: &str| voronka_store::users::UserSpec {
        email: Some(email),
        name: Some("Bench".into()),
        role: Some(role.into()),
        ..Default::default()
    };
    if store.user_by_email("admin@bench.local").await?.is_none() {
        store.create_user(&user("admin@bench.local".into(), "admin")).await?;
    }
    let mut owners = Vec::new();
    for m in 0..managers {
        let email = format!("m{m}@bench.local");
        let id = match store.user_by_email(&email).await? {
            Some(u) => u.id,
            None => store.create_user(&user(email, "manager")).await?.id,
        };
        owners.push(id);
    }
    Ok(owners)
}

async fn ui_one(a: &UiArgs, name: &str, url: &str, generate: bool) -> Result<()> {
    let (admin_cookie, manager_cookie, admin_token, manager_token) = {
        let store = Store::open(&StoreConfig::new(url), Arc::new(SystemClock)).await?;
        let (admin, manager) = if generate {
            let owners = bench_users(&store, a.managers.max(1)).await?;
            let spec =
                SeedSpec { leads: a.leads, events_per_lead: a.events_per_lead, seed: 42, owners: owners.clone(), ..Default::default() };
            let s = seed(&store, &spec).await?;
            println!("[{name}] dataset: {} leads, {} events, written in {:.1} s", s.leads, s.events, s.millis as f64 / 1000.0);
            (store.user_by_email("admin@bench.local").await?, Some(owners[0]))
        } else {
            (store.user_by_email("admin@bench.local").await?, store.user_by_email("m0@bench.local").await?.map(|u| u.id))
        };
        let (Some(admin), Some(manager)) = (admin, manager) else {
            bail!("the database has no bench users: seed it with `voronka bench seed --managers 20`");
        };
        let admin_cookie = format!("vk_session={}", store.create_session(admin.id).await?);
        let manager_cookie = format!("vk_session={}", store.create_session(manager).await?);
        let (_, admin_token) = store.create_user_token(admin.id, "bench", &["leads:read".to_string()]).await?;
        let (_, manager_token) = store.create_user_token(manager, "bench", &["leads:read".to_string()]).await?;
        store.close().await;
        (admin_cookie, manager_cookie, admin_token, manager_token)
    };
    let server = Server::start(url, &[]).await?;
    let waited = server.settle(Duration::from_secs(120)).await;
    println!("[{name}] start-up work (the first score refresh) took {:.1} s", waited.as_secs_f64());
    let addr = server.addr;
    let host = addr.to_string();
    // Leads to open: the first pages of several lists, so cards of every kind are measured.
    let mut ids: Vec<String> = Vec::new();
    for query in ["sort=priority", "sort=created", "status=in_progress", "status=refused", "status=converted", "status=new&sort=score"] {
        ids.extend(lead_ids(addr, &admin_token, query).await?);
    }
    let mine = Arc::new(lead_ids(addr, &manager_token, "limit=100").await?);
    // Whole e-mails of leads, typed as they are (the seed draws their domains at random).
    let mut emails: Vec<String> = Vec::new();
    for query in ["sort=created", "status=in_progress", "status=refused", "sort=created_asc"] {
        emails.extend(lead_field(addr, &admin_token, query, "email").await?.iter().map(|e| e.replace('@', "%40")));
    }
    if ids.is_empty() || mine.is_empty() || emails.is_empty() {
        bail!("the lead lists returned no leads");
    }
    let emails = Arc::new(emails);
    let ids = Arc::new(ids);
    // Phones of seeded leads, typed the way people type them: 8 (9XX) XXX-XX-XX.
    let leads = a.leads.max(1);
    let digits = move |n: u64| {
        let i = n.wrapping_mul(2_654_435_761) % leads;
        format!("9{:09}", (i.wrapping_mul(7_919).wrapping_add(42)) % 1_000_000_000)
    };
    let phone = move |n: u64| {
        let d = digits(n);
        format!("8+({})+{}-{}-{}", &d[0..3], &d[3..6], &d[6..8], &d[8..10])
    };
    type Path = Arc<dyn Fn(u64) -> String + Send + Sync>;
    let cases: Vec<(&str, bool, Path)> = vec![
        ("inbox, all, by priority", true, Arc::new(|_| "/inbox".to_string())),
        ("inbox, filtered", true, Arc::new(|_| "/inbox?status=in_progress&channel=web_form&temperature=warm".to_string())),
        ("inbox, unsorted", true, Arc::new(|_| "/inbox?tab=unsorted".to_string())),
        ("inbox, search by phone", true, Arc::new(move |n| format!("/inbox?q={}", phone(n)))),
        ("inbox, search by name", true, Arc::new(|n| format!("/inbox?q={}", NAMES_TYPED[n as usize % NAMES_TYPED.len()]))),
        // Words of one lead: the last 7 digits of a phone, the start of an e-mail.
        ("inbox, search by digits", true, Arc::new(move |n| format!("/inbox?q={}", &digits(n)[3..]))),
        ("inbox, search by e-mail", true, Arc::new(move |n| format!("/inbox?q=user{}%40", (n.wrapping_mul(40_503) + 17) % leads))),
        ("inbox, whole e-mail", true, Arc::new(move |n| format!("/inbox?q={}", emails[(n as usize * 7) % emails.len()]))),
        ("inbox, manager's phone", false, Arc::new(move |n| format!("/inbox?tab=mine&q={}", phone(n)))),
        ("inbox, new-leads poll", true, Arc::new(|_| "/inbox/rows".to_string())),
        ("inbox, manager's own", false, Arc::new(|_| "/inbox?tab=mine".to_string())),
        ("lead card", true, {
            let ids = ids.clone();
            Arc::new(move |n| format!("/leads/{}", ids[(n as usize * 7) % ids.len()]))
        }),
        ("lead card, manager's", false, Arc::new(move |n| format!("/leads/{}", mine[(n as usize * 7) % mine.len()]))),
        ("kanban", true, Arc::new(|_| "/kanban".to_string())),
        ("dashboard, quarter", true, Arc::new(|_| "/dashboard?days=90".to_string())),
    ];
    let mut worst = 0.0f64;
    for (what, as_admin, path) in cases {
        let cookie = if as_admin { admin_cookie.clone() } else { manager_cookie.clone() };
        let h = host.clone();
        let make: MakeReq = Arc::new(move |n| {
            Request::get(path(n))
                .header("host", h.as_str())
                .header("cookie", cookie.as_str())
                .body(Full::new(Bytes::new()))
                .expect("static request")
        });
        let requests = if what.starts_with("dashboard") || what == "kanban" { (a.requests / 5).max(20) } else { a.requests };
        let stats = tokio::task::spawn_blocking(move || pages(addr, requests, make)).await??;
        println!(
            "[{name}] {what:<26} p50 {:>7.2} ms   p95 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   ({} ok, {} errors)",
            stats.pct(0.50),
            stats.pct(0.95),
            stats.pct(0.99),
            stats.pct(1.0),
            stats.ok,
            stats.errors
        );
        if what.starts_with("inbox") || what.starts_with("lead card") {
            worst = worst.max(stats.pct(0.95));
        }
        if stats.errors > 0 {
            bail!("{what}: {} requests failed", stats.errors);
        }
    }
    let memory = server.memory_line();
    server.stop().await?;
    println!("[{name}] worst inbox/card p95 {worst:.2} ms (target ≤ 100 ms); server {memory}");
    Ok(())
}

async fn events(a: EventsArgs) -> Result<()> {
    println!(
        "voronka bench events: {} connections, batches of {}, {} s, {} leads with visitors",
        a.connections, a.batch, a.duration, a.leads
    );
    for which in backends(a.backend) {
        let name = backend_name(which);
        let db = BenchDb::create(which, &a.pg_url).await?;
        let r = async {
            let site_key = {
                let store = Store::open(&StoreConfig::new(&db.url), Arc::new(SystemClock)).await?;
                seed(&store, &SeedSpec { leads: a.leads, events_per_lead: 5, seed: 7, visitors: true, ..Default::default() }).await?;
                let site = store.create_site("bench", &[]).await?;
                store.close().await;
                site.site_key
            };
            let server = Server::start(&db.url, &[]).await?;
            let addr = server.addr;
            let host = addr.to_string();
            let (leads, batch) = (a.leads, a.batch);
            let kinds = ["page_view", "page_view", "page_view", "video_view", "download", "calculator", "chat_message", "email_open"];
            let paths = ["/", "/prices", "/catalog/flats", "/blog/x", "/akcii"];
            let make: MakeReq = Arc::new(move |n| {
                let visitor = format!("v{}", (n.wrapping_mul(2_654_435_761)) % leads.max(1));
                let events: Vec<serde_json::Value> = (0..batch)
                    .map(|j| {
                        let k = kinds[(n as usize + j) % kinds.len()];
                        serde_json::json!({"type": k, "url": format!("https://site.ru{}", paths[j % paths.len()]), "name": if k == "page_view" { None } else { Some("tour") }})
                    })
                    .collect();
                let body = serde_json::json!({"site_key": site_key, "visitor_id": visitor, "events": events}).to_string();
                Request::post("/api/v1/events")
                    .header("host", host.as_str())
                    .header("content-type", "text/plain")
                    .body(Full::new(Bytes::from(body)))
                    .expect("static request")
            });
            let (c, d) = (a.connections, a.duration as f64);
            let stats = tokio::task::spawn_blocking(move || -> Result<Stats> {
                load(addr, c, 1.0, make.clone(), &[202], 0)?;
                load(addr, c, d, make, &[202], 1_000_000)
            })
            .await??;
            println!("[{name}] {}", stats.line("POST /api/v1/events"));
            println!("[{name}] {:.0} events/s with live scoring ({} events per request)", stats.ok as f64 * a.batch as f64 / stats.secs, a.batch);
            let memory = server.memory_line();
            server.stop().await?;
            println!("[{name}] server {memory}");
            if stats.errors > 0 {
                bail!("{} event requests failed", stats.errors);
            }
            anyhow::Ok(())
        }
        .await;
        db.remove().await;
        r?;
    }
    Ok(())
}

struct Stats {
    ok: u64,
    errors: u64,
    secs: f64,
    lat_us: Vec<u32>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }
    fn line(&self, what: &str) -> String {
        format!(
            "{what:<28} {:>9.0} req/s   p50 {:>6.2} ms   p95 {:>6.2} ms   p99 {:>6.2} ms   ({} ok, {} errors in {:.1} s)",
            self.ok as f64 / self.secs,
            self.pct(0.50),
            self.pct(0.95),
            self.pct(0.99),
            self.ok,
            self.errors,
            self.secs
        )
    }
}

/// A file as purchased bases come: Windows-1251, `;`, Russian headers, phones in every
/// spelling, some rows the same person again, a few without any contact.
fn import_file(rows: u64, repeat_share: f64, seed: u64) -> Vec<u8> {
    const FIRST: &[&str] = &["Иван", "Мария", "Алексей", "Ольга", "Дмитрий", "Анна", "Сергей", "Елена", "John", "Kate"];
    const LAST: &[&str] = &["Иванов", "Петрова", "Смирнов", "Кузнецова", "Попов", "Соколова", "Лебедев", "Новикова", "Smith", "Brown"];
    const CITY: &[&str] = &["Москва", "Санкт-Петербург", "Казань", "Пермь", "Екатеринбург", "Новосибирск"];
    const POS: &[&str] = &["Директор", "Менеджер", "Главный инженер", "Бухгалтер", "Генеральный директор", ""];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut out = String::with_capacity(rows as usize * 110);
    out.push_str("ФИО;Телефон;Email;Компания;Должность;Город;Комментарий;utm_source\r\n");
    let mut people = 0u64;
    for i in 0..rows {
        let r = next();
        let person = if people > 0 && (r % 1000) as f64 / 1000.0 < repeat_share {
            next() % people
        } else {
            people += 1;
            people - 1
        };
        let n = 9_000_000_000u64 + person * 7 % 1_000_000_000;
        let phone = match person % 3 {
            0 => format!("8 ({}) {:03}-{:02}-{:02}", n / 10_000_000, n / 10_000 % 1000, n / 100 % 100, n % 100),
            1 => format!("+7 {} {:07}", n / 10_000_000, n % 10_000_000),
            _ => format!("8{n}"),
        };
        let no_contact = i % 100 == 99;
        let (phone, email) = if no_contact {
            (String::new(), String::new())
        } else {
            (phone, if person % 2 == 0 { format!("c{person}@mail.ru") } else { String::new() })
        };
        let name = format!("{} {}", LAST[(person % 10) as usize], FIRST[(person / 10 % 10) as usize]);
        out.push_str(&format!(
            "{name};{phone};{email};ООО \"Компания {}\";{};{};Строка {i};expo\r\n",
            person % 5000,
            POS[(person % 6) as usize],
            CITY[(person % 6) as usize]
        ));
    }
    encoding_rs::WINDOWS_1251.encode(&out).0.into_owned()
}

async fn import_bench(a: ImportBenchArgs) -> Result<()> {
    anyhow::ensure!(
        a.floor_secs.is_finite() && (0.1..=3600.0).contains(&a.floor_secs),
        "--floor-secs: a number of seconds from 0.1 to 3600, not {}",
        a.floor_secs
    );
    let t = Instant::now();
    let file = import_file(a.rows, a.repeat_share, a.seed);
    println!(
        "voronka bench import: {} rows ({:.0} MB, Windows-1251, ';') generated in {:.1} s",
        a.rows,
        file.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let bytes = Bytes::from(file);
    for which in backends(a.backend) {
        let name = backend_name(which);
        let db = BenchDb::create(which, &a.pg_url).await?;
        let r = async {
            let store = Store::open(&StoreConfig::new(&db.url), Arc::new(SystemClock)).await?;
            let req = voronka_server::import::ImportRequest {
                source: "bench".into(),
                file_name: "bench.csv".into(),
                bytes: bytes.clone(),
                mapping: Default::default(),
                campaign: None,
                dry_run: false,
                actor: "bench".into(),
                keep_file: false,
                region: Default::default(),
            };
            let started = Instant::now();
            let cpu0 = self_cpu_secs();
            let pg0 = postgres_cpu_ticks();
            let p = voronka_server::import::prepare(&store, req, "bench").await?;
            let prepared = started.elapsed().as_secs_f64();
            let total = p.sheet.total;
            let on_progress = move |pr: voronka_server::import::Progress| {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                eprint!("\r  {}/{total} rows ({:.0} rows/s)   ", pr.processed, pr.processed as f64 / secs);
            };
            // Another writer beside the import, as a manager's edit would be: an audit row
            // every 0.25 s, each write timed.
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let probe = tokio::spawn(other_writes(store.clone(), a.other_write_every_ms, stopped));
            let info = voronka_server::import::run(&store, p, "bench", &on_progress).await;
            let secs = started.elapsed().as_secs_f64();
            let _ = stop.send(());
            let waits = probe.await.unwrap_or_else(|e| Err(anyhow::anyhow!("the other writer stopped: {e}")));
            let info = info?;
            let waits = waits?;
            // CPU of this process (reading, intake, the SQLite writer; not PostgreSQL's own)
            // per row: steadier from run to run than the rate on a shared machine.
            let cpu = self_cpu_secs().zip(cpu0).map(|(b, a)| b - a);
            // PostgreSQL's processes (the writers' connections live until the store closes).
            let pg_us = postgres_cpu_ticks().saturating_sub(pg0) as f64 * 10_000.0 / info.processed.max(1) as f64;
            eprintln!();
            println!("[{name}] the file hashed, decoded and its rows counted in {prepared:.2} s (part of the time below)");
            let leads = store.count(CountOf::Leads).await?;
            println!(
                "[{name}] imported {} rows in {secs:.1} s = {:.0} rows/s (target: 1 M rows ≤ 60 s): {} created, {} repeat, {} rejected; {leads} leads; CPU {} µs a row; peak RSS {}",
                info.processed,
                info.processed as f64 / secs,
                info.created,
                info.repeats,
                info.rejected,
                cpu.map(|c| format!("{:.0}", c * 1e6 / info.processed.max(1) as f64)).unwrap_or_else(|| "?".into()),
                self_peak_rss_mib().map(|r| format!("{r:.0} MiB")).unwrap_or_else(|| "?".into())
            );
            if a.other_write_every_ms > 0 {
                println!("[{name}]   {}", other_writes_line(waits, a.other_write_every_ms));
            }
            store.close().await;
            if which == Which::Sqlite && !a.no_floor {
                match sqlite_import_floor(info.created.max(0) as u64, secs).await {
                    Ok(line) => println!("[{name}]   {line}"),
                    Err(e) => println!("[{name}]   the floor could not be measured: {e:#}"),
                }
            }
            if which == Which::Postgres {
                if pg_us > 0.0 {
                    println!("[{name}]   CPU a row: PostgreSQL {pg_us:.0} µs");
                } else {
                    println!("[{name}]   CPU a row: PostgreSQL's not seen (no `postgres` process on this machine)");
                }
                if !a.no_floor {
                    let us = cpu.map(|c| c * 1e6 / info.processed.max(1) as f64).unwrap_or(0.0);
                    let (rows, created) = (info.processed.max(0) as u64, info.created.max(0) as u64);
                    match import_floor_line(&db.url, us, rows, created, &a.floor_without_index, a.floor_secs).await {
                        Ok(line) => println!("[{name}]   {line}"),
                        Err(e) => println!("[{name}]   the floor could not be measured: {e:#}"),
                    }
                }
            }
            anyhow::Ok(())
        }
        .await;
        db.remove().await;
        r?;
    }
    Ok(())
}

/// Writes an audit row every `every_ms` until `stop`, through the store's shared write
/// path, and returns how long each took (none when `every_ms` is 0).
async fn other_writes(store: Store, every_ms: u64, mut stop: tokio::sync::oneshot::Receiver<()>) -> Result<Vec<Duration>> {
    let mut waits = Vec::new();
    if every_ms == 0 {
        return Ok(waits);
    }
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(waits),
            () = tokio::time::sleep(Duration::from_millis(every_ms)) => {}
        }
        let t = Instant::now();
        store.record_audit("bench", "bench_write", &serde_json::json!({"n": waits.len()})).await.context("another writer's write")?;
        waits.push(t.elapsed());
    }
}

fn other_writes_line(mut waits: Vec<Duration>, every_ms: u64) -> String {
    if waits.is_empty() {
        return "another writer beside the import: no write".into();
    }
    waits.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "another writer beside the import (an audit row every {every_ms} ms, as a manager's edit): {} writes, median {:.1} ms, p99 {:.1} ms, longest {:.1} ms",
        waits.len(),
        ms(waits[waits.len() / 2]),
        ms(waits[(waits.len() * 99 / 100).min(waits.len() - 1)]),
        ms(waits[waits.len() - 1])
    )
}

/// SQLite's floor for an import (`floor::import_floor`): its one writer alone inserting the
/// `created` new leads' rows into a fresh migrated database, 4,096 leads a transaction (the
/// largest batch Voronka's writer takes); against the import's `took` seconds.
async fn sqlite_import_floor(created: u64, took: f64) -> Result<String> {
    let db = BenchDb::create(Which::Sqlite, "").await?;
    let r = async {
        Store::open(&StoreConfig::new(&db.url), Arc::new(SystemClock)).await?.close().await;
        let Cleanup::File(dir) = &db.cleanup else { bail!("not an SQLite database") };
        let path = dir.join("bench.db");
        let f = tokio::task::spawn_blocking(move || floor::import_floor(&path, created, 4096)).await??;
        let rate = f.leads as f64 / f.secs.max(1e-9);
        Ok(format!(
            "the floor: SQLite's one writer alone looking up a new lead's contacts and inserting its rows (the lead, two \
             identities, an event, a score row, an outbox message, the row's outcome; same indexes and foreign keys; \
             no repeats, no scoring, no search index), 4,096 leads a durable transaction: {} leads in {:.1} s = {rate:.0} leads/s, \
             {:.0} % of the import's {took:.1} s",
            f.leads,
            f.secs,
            f.secs * 100.0 / took.max(1e-9)
        ))
    }
    .await;
    db.remove().await;
    r
}

/// PostgreSQL's floor for an import: PostgreSQL alone looking up a new lead's contacts and
/// inserting its rows, with the foreign keys, as the import's writers batch them (4
/// connections, 256 leads a transaction: 1,024 rows in flight over 4 writers), and the least time the import's `created` new leads could take on this
/// machine's cores with that much of PostgreSQL's CPU a lead and `voronka_us` of Voronka's
/// own for each of its `rows` rows (repeats and rejected rows counted at Voronka's cost only:
/// the floor errs low).
async fn import_floor_line(url: &str, voronka_us: f64, rows: u64, created: u64, without: &[String], secs: f64) -> Result<String> {
    let f = pg_intake_floor(url, 4, 256, secs, Some(without)).await?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let alone = created as f64 / f.rate.max(1e-9);
    let mut line = format!(
        "the floor: PostgreSQL alone looking up a new lead's contacts and inserting its rows (the lead, two identities, \
         an event, a score row, an outbox message, the row's outcome; same indexes and foreign keys; no repeats, no \
         scoring), 4 connections, 256 leads a transaction: {:.0} leads/s",
        f.rate
    );
    if f.pg_us_per_lead > 0.0 {
        let shared = (created as f64 * f.pg_us_per_lead + rows as f64 * voronka_us) / 1e6 / cores;
        line += &format!(
            ", PostgreSQL {:.0} µs of CPU a lead ({:.2} cores) — the import's {created} new leads at least {alone:.1} s \
             alone, and at least {:.1} s with its own {voronka_us:.0} µs a row on the same {cores} cores",
            f.pg_us_per_lead,
            f.pg_cores,
            alone.max(shared)
        );
    } else {
        line += &format!(" — the import's {created} new leads at least {alone:.1} s (PostgreSQL's CPU not seen on this machine)");
    }
    if !without.is_empty() {
        line += &format!("; without the indexes {} ({} copies dropped)", without.join(", "), f.dropped);
    }
    Ok(line)
}

/// User and system CPU seconds this process has used (`/proc/self/stat`, in clock ticks of
/// 1/100 s, the Linux default).
fn self_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn self_peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A database for one benchmark run, removed on `cleanup`.
struct BenchDb {
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    PgDatabase { admin_url: String, name: String },
}

impl BenchDb {
    async fn create(which: Which, pg_url: &str) -> Result<BenchDb> {
        let tag = format!("{}_{}", std::process::id(), chrono::Utc::now().timestamp_millis());
        match which {
            Which::Sqlite => {
                let dir = std::env::temp_dir().join(format!("voronka_bench_{tag}"));
                std::fs::create_dir_all(&dir)?;
                let path = dir.join("bench.db");
                Ok(BenchDb { url: format!("sqlite://{}", path.display()), cleanup: Cleanup::File(dir) })
            }
            _ => {
                let name = format!("voronka_bench_{tag}");
                let url = voronka_store::provision::create_pg_database(pg_url, &name).await?;
                Ok(BenchDb { url, cleanup: Cleanup::PgDatabase { admin_url: pg_url.to_string(), name } })
            }
        }
    }

    async fn remove(self) {
        match self.cleanup {
            Cleanup::File(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::PgDatabase { admin_url, name } => {
                if let Err(e) = voronka_store::provision::drop_pg_database(&admin_url, &name).await {
                    eprintln!("warning: could not drop {name}: {e:#}");
                }
            }
        }
    }
}

/// A `voronka serve` child process on a free loopback port.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Highest RssAnon and RssFile seen (KiB), sampled every 100 ms.
    peaks: Arc<(AtomicU64, AtomicU64)>,
    sampler: tokio::task::JoinHandle<()>,
}

/// A field of /proc/PID/status, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// User and system CPU time of a process, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) are counted from its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

impl Server {
    pub async fn start(url: &str, extra: &[&str]) -> Result<Server> {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--database-url", url];
        args.extend_from_slice(extra);
        Server::spawn(&args).await
    }

    /// This binary with `args`, once it prints "listening on http://ADDR".
    async fn spawn(args: &[&str]) -> Result<Server> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(args)
            .env("VORONKA_LOG", std::env::var("VORONKA_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the server did not start within 60 s")??
            .context("the server exited before listening")?;
        let addr = line.strip_prefix("listening on http://").context("unexpected first line")?.parse()?;
        let peaks = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let pid = child.id().unwrap_or(0);
        let sampler = tokio::spawn({
            let peaks = peaks.clone();
            async move {
                loop {
                    let (Some(anon), Some(file)) = (proc_status_kib(pid, "RssAnon:"), proc_status_kib(pid, "RssFile:")) else { return };
                    peaks.0.fetch_max(anon, Ordering::Relaxed);
                    peaks.1.fetch_max(file, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Ok(Server { child, addr, peaks, sampler })
    }

    /// Waits (up to `max`) until the server has been nearly idle (under a tenth of a core)
    /// for a second: start-up work such as the first score refresh is done. Returns the wait.
    pub async fn settle(&self, max: Duration) -> Duration {
        let started = Instant::now();
        let Some(pid) = self.child.id() else { return Duration::ZERO };
        let tick = 100.0; // clock ticks a second on Linux
        let mut quiet = 0;
        let mut last = proc_cpu_ticks(pid).unwrap_or(0);
        while started.elapsed() < max && quiet < 2 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = proc_cpu_ticks(pid).unwrap_or(0);
            quiet = if ((now.saturating_sub(last)) as f64) < 0.1 * tick * 0.5 { quiet + 1 } else { 0 };
            last = now;
        }
        started.elapsed()
    }

    /// Peak resident memory of the server process so far, in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        Some(proc_status_kib(self.child.id()?, "VmHWM:")? as f64 / 1024.0)
    }

    /// The peaks of the two parts of it: memory the process allocated (heap, stacks) and
    /// pages of files it maps (the SQLite file when memory-mapped; the binary), in MiB.
    pub fn peak_anon_file_mib(&self) -> (f64, f64) {
        (self.peaks.0.load(Ordering::Relaxed) as f64 / 1024.0, self.peaks.1.load(Ordering::Relaxed) as f64 / 1024.0)
    }

    /// "peak RSS N MiB (allocated A MiB, mapped files F MiB)".
    pub fn memory_line(&self) -> String {
        let (anon, file) = self.peak_anon_file_mib();
        match self.peak_rss_mib() {
            Some(r) => format!("peak RSS {r:.0} MiB (allocated {anon:.0} MiB, mapped files {file:.0} MiB)"),
            None => "peak RSS n/a".into(),
        }
    }

    pub async fn stop(mut self) -> Result<()> {
        self.sampler.abort();
        if let Some(pid) = self.child.id() {
            // SIGTERM: a graceful stop, in-flight requests finish.
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        Ok(())
    }
}

type MakeReq = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// Runs `connections` keep-alive clients against `addr` for `secs` seconds on one thread.
fn load(addr: SocketAddr, connections: usize, secs: f64, make: MakeReq, ok_status: &'static [u16], first: u64) -> Result<Stats> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let counter = Arc::new(AtomicU64::new(first));
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (make, counter) = (make.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 16);
                let (mut ok, mut errors) = (0u64, 0u64);
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let req = make(n);
                    let t = Instant::now();
                    sender.ready().await?;
                    let resp = sender.send_request(req).await?;
                    let status = resp.status().as_u16();
                    resp.into_body().collect().await?;
                    if ok_status.contains(&status) {
                        ok += 1;
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        errors += 1;
                    }
                }
                anyhow::Ok((ok, errors, lat))
            }));
        }
        let mut stats = Stats { ok: 0, errors: 0, secs: 0.0, lat_us: Vec::new() };
        for t in tasks {
            let (ok, errors, lat) = t.await??;
            stats.ok += ok;
            stats.errors += errors;
            stats.lat_us.extend(lat);
        }
        stats.secs = start.elapsed().as_secs_f64();
        stats.lat_us.sort_unstable();
        Ok(stats)
    })
}

fn lead_body(n: u64, salt: u64) -> Bytes {
    // Valid Russian mobile numbers, one per request: +79XXXXXXXXX.
    let phone = 9_000_000_000u64 + (salt * 7_919 + n) % 999_999_999;
    Bytes::from(format!(
        r#"{{"name":"Нагрузка {n}","phone":"+7{phone}","email":"bench{n}.{salt}@example.ru","company":"ООО Тест","channel":"web_form","campaign":"bench","utm":{{"source":"yandex","medium":"cpc","campaign":"bench"}},"message":"Хочу узнать цену"}}"#
    ))
}

async fn intake(a: IntakeArgs) -> Result<()> {
    let backends: Vec<Which> = match a.backend {
        Which::Both => vec![Which::Sqlite, Which::Postgres],
        w => vec![w],
    };
    println!(
        "voronka bench intake: {} connections, {} s per scenario (+{} s warm-up), {} cores",
        a.connections,
        a.duration,
        a.warmup,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    );
    if let Some(url) = &a.existing_database {
        let which = if url.starts_with("sqlite:") { Which::Sqlite } else { Which::Postgres };
        return intake_one(&IntakeArgs { preload: 0, ..a.clone() }, which, url).await;
    }
    for which in backends {
        let db = BenchDb::create(which, &a.pg_url).await?;
        let r = intake_one(&a, which, &db.url).await;
        db.remove().await;
        r?;
    }
    Ok(())
}

async fn intake_one(a: &IntakeArgs, which: Which, url: &str) -> Result<()> {
    let name = if which == Which::Sqlite { "sqlite" } else { "postgres" };
    let token = {
        let store = Store::open(&StoreConfig::new(url), Arc::new(SystemClock)).await?;
        if a.preload > 0 {
            let spec = SeedSpec { leads: a.preload, events_per_lead: a.preload_events, seed: 42, ..Default::default() };
            let s = seed(&store, &spec).await?;
            println!("[{name}] preloaded {} leads and {} events in {:.1} s", s.leads, s.events, s.millis as f64 / 1000.0);
        }
        let (_, t) = store.create_token("bench", &["leads:write".to_string()]).await?;
        println!("[{name}] {} leads in the database before the run", store.count(CountOf::Leads).await?);
        store.close().await;
        t
    };
    let server = Server::start(url, &[]).await?;
    let waited = server.settle(Duration::from_secs(120)).await;
    println!("[{name}] the server was busy with start-up work (the first score refresh) for {:.1} s", waited.as_secs_f64());
    let addr = server.addr;
    let host = addr.to_string();
    let health: MakeReq =
        Arc::new(move |_| Request::get("/healthz").header("host", host.as_str()).body(Full::new(Bytes::new())).expect("static request"));
    let post = lead_posts(addr, &token);

    let (c, d, w) = (a.connections, a.duration as f64, a.warmup as f64);
    let hs = tokio::task::spawn_blocking({
        let health = health.clone();
        move || -> Result<Stats> {
            load(addr, c, w.min(1.0), health.clone(), &[200], 0)?;
            load(addr, c, d.min(5.0), health, &[200], 0)
        }
    })
    .await??;
    println!("[{name}] {}", hs.line("GET /healthz (ceiling)"));

    let (is, cpu) = drive_intake(&server, post, c, d, w).await?;
    println!("[{name}] {}", is.line("POST /api/v1/leads"));
    println!("[{name}] {}", cpu.line(is.ok, which == Which::Postgres));
    let memory = server.memory_line();
    server.stop().await?;

    let store = Store::open(&StoreConfig::new(url), Arc::new(SystemClock)).await?;
    let leads = store.count(CountOf::Leads).await?;
    store.close().await;
    println!("[{name}] server {memory}; {leads} leads in the database after the run");
    if is.errors > 0 {
        bail!("{} intake requests failed", is.errors);
    }
    if which == Which::Sqlite && !a.no_floor {
        let beside = match voronka_store::sqlite_path(url)?.as_deref().and_then(std::path::Path::parent) {
            Some(p) if p.as_os_str().is_empty() => std::path::PathBuf::from("."),
            Some(p) => p.to_path_buf(),
            None => std::env::temp_dir(),
        };
        for rows in [floor::FloorRows::One, floor::FloorRows::Lead] {
            let without: &[String] = if rows == floor::FloorRows::Lead { &a.floor_without_index } else { &[] };
            let f = sqlite_intake_floor(rows, without, &beside, c, d, w).await?;
            let what = match rows {
                floor::FloorRows::One => "one row a lead".to_string(),
                floor::FloorRows::Lead if without.is_empty() => "a lead's rows".to_string(),
                floor::FloorRows::Lead => format!("a lead's rows, without the indexes {}", without.join(", ")),
            };
            println!(
                "[{name}] the floor: a bare HTTP handler and SQLite group commit (the WAL fsynced beside the writer, \
                 Voronka's checkpointer, no auth, no lookups, no scoring), {what}:"
            );
            println!("[{name}]   {}", f.stats.line("POST /api/v1/leads (floor)"));
            println!("[{name}]   {}", f.cpu.line(f.stats.ok, false));
            println!("[{name}]   {}", f.writer_line());
            if f.stats.errors > 0 {
                bail!("{} floor requests failed", f.stats.errors);
            }
        }
    }
    if which == Which::Postgres && !a.no_floor {
        for (conns, batch) in [(4, 8), (4, 64)] {
            let f = pg_intake_floor(url, conns, batch, d.min(10.0), None).await?;
            println!(
                "[{name}] the floor: PostgreSQL alone inserting the rows of a lead (the lead, two identities, an event, a score \
                 row, an outbox message; same indexes, no lookups, no HTTP, no scoring), {conns} connections, {batch} leads a \
                 transaction: {:.0} leads/s, PostgreSQL {:.0} µs of CPU a lead ({:.2} cores)",
                f.rate, f.pg_us_per_lead, f.pg_cores
            );
        }
    }
    Ok(())
}

/// Requests creating a new lead each (a distinct phone and e-mail for every number).
fn lead_posts(addr: SocketAddr, token: &str) -> MakeReq {
    let host = addr.to_string();
    let auth = format!("Bearer {token}");
    let salt = (chrono::Utc::now().timestamp_micros() as u64) % 1_000_003;
    Arc::new(move |n| {
        Request::post("/api/v1/leads")
            .header("host", host.as_str())
            .header("content-type", "application/json")
            .header("authorization", auth.as_str())
            .body(Full::new(lead_body(n, salt)))
            .expect("static request")
    })
}

/// `w` seconds of warm-up, then `d` measured seconds of `post` from `c` connections, and the
/// CPU the server, PostgreSQL and this process spent in the measured part.
async fn drive_intake(server: &Server, post: MakeReq, c: usize, d: f64, w: f64) -> Result<(Stats, CpuSplit)> {
    measure(server, post.clone(), c, w, 0).await?;
    // Distinct numbers for warm-up and measurement: every request makes a new lead.
    measure(server, post, c, d, 100_000_000).await
}

/// `secs` seconds of `post` from `c` connections, numbered from `first`, and the CPU spent.
async fn measure(server: &Server, post: MakeReq, c: usize, secs: f64, first: u64) -> Result<(Stats, CpuSplit)> {
    let (addr, server_pid) = (server.addr, server.child.id().unwrap_or(0));
    tokio::task::spawn_blocking(move || -> Result<(Stats, CpuSplit)> {
        let before = CpuSplit::now(server_pid);
        let s = load(addr, c, secs, post, &[200, 201], first)?;
        Ok((s, CpuSplit::now(server_pid).since(&before)))
    })
    .await?
}

/// A run of the SQLite intake floor: the load's figures, the CPU, and the floor's writer.
struct SqliteFloor {
    stats: Stats,
    cpu: CpuSplit,
    /// Leads, batches, ns inserting, ns committing, ns fsyncing, fsyncs, in the measured part.
    writer: [u64; 6],
}

impl SqliteFloor {
    const COUNTERS: [&str; 6] = ["leads", "batches", "insert_ns", "commit_ns", "fsync_ns", "fsyncs"];

    /// What the writer and the flushing thread did, and the most one writer could do.
    fn writer_line(&self) -> String {
        let [leads, batches, insert_ns, commit_ns, fsync_ns, fsyncs] = self.writer.map(|v| v as f64);
        let per_lead = |ns: f64| ns / 1000.0 / leads.max(1.0);
        format!(
            "the writer: {:.1} leads a batch, {:.1} µs a lead inserting and {:.1} µs committing (writing the WAL), busy \
             {:.0} % of the time: at most {:.0} leads/s for one writer; fsync {:.2} ms on average",
            leads / batches.max(1.0),
            per_lead(insert_ns),
            per_lead(commit_ns),
            (insert_ns + commit_ns) / 1e7 / self.stats.secs.max(1e-9),
            1e6 / per_lead(insert_ns + commit_ns).max(1e-9),
            fsync_ns / 1e6 / fsyncs.max(1.0),
        )
    }
}

/// The SQLite intake floor (see bench/floor.rs) on a fresh database in a directory of its own
/// in `beside` (the measured database's directory: the same disk), removed afterwards,
/// driven like `voronka serve`.
async fn sqlite_intake_floor(
    rows: floor::FloorRows,
    without: &[String],
    beside: &std::path::Path,
    c: usize,
    d: f64,
    w: f64,
) -> Result<SqliteFloor> {
    let tag = format!("{}_{}", std::process::id(), chrono::Utc::now().timestamp_millis());
    let dir = beside.join(format!("voronka_floor_{tag}"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("floor.db");
    let run = async {
        if rows == floor::FloorRows::Lead {
            // Voronka's schema, with every index of the tables the floor writes.
            Store::open(&StoreConfig::new(format!("sqlite://{}", path.display())), Arc::new(SystemClock)).await?.close().await;
        }
        let db = path.to_str().context("a temporary path that is not UTF-8")?;
        let mut args = vec!["bench", "floor-serve", "--database", db, "--rows", rows.arg()];
        for name in without {
            args.extend(["--without-index", name.as_str()]);
        }
        let server = Server::spawn(&args).await?;
        let post = lead_posts(server.addr, "floor");
        let counters = |v: serde_json::Value| SqliteFloor::COUNTERS.map(|k| v[k].as_u64().unwrap_or(0));
        let r = async {
            measure(&server, post.clone(), c, w, 0).await?;
            let before = counters(get_json(server.addr, "/floor/stats", "").await?);
            let (stats, cpu) = measure(&server, post, c, d, 100_000_000).await?;
            let after = counters(get_json(server.addr, "/floor/stats", "").await?);
            anyhow::Ok(SqliteFloor { stats, cpu, writer: std::array::from_fn(|i| after[i].saturating_sub(before[i])) })
        }
        .await;
        server.stop().await?;
        r
    };
    let r = run.await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// CPU time (clock ticks) of the server, of PostgreSQL's processes and of this process.
#[derive(Clone, Copy, Default)]
struct CpuSplit {
    server: u64,
    postgres: u64,
    bench: u64,
    at: Option<Instant>,
    secs: f64,
}

impl CpuSplit {
    fn now(server_pid: u32) -> CpuSplit {
        CpuSplit {
            server: proc_cpu_ticks(server_pid).unwrap_or(0),
            postgres: postgres_cpu_ticks(),
            bench: proc_cpu_ticks(std::process::id()).unwrap_or(0),
            at: Some(Instant::now()),
            secs: 0.0,
        }
    }

    fn since(&self, before: &CpuSplit) -> CpuSplit {
        CpuSplit {
            server: self.server.saturating_sub(before.server),
            postgres: self.postgres.saturating_sub(before.postgres),
            bench: self.bench.saturating_sub(before.bench),
            at: None,
            secs: match (self.at, before.at) {
                (Some(a), Some(b)) => a.duration_since(b).as_secs_f64(),
                _ => 0.0,
            },
        }
    }

    /// "CPU a lead: server N µs, PostgreSQL N µs, load generator N µs (cores …)".
    fn line(&self, leads: u64, postgres: bool) -> String {
        let per = |ticks: u64| ticks as f64 * 10_000.0 / leads.max(1) as f64; // 100 ticks a second
        let cores = |ticks: u64| ticks as f64 / 100.0 / self.secs.max(1e-9);
        let mut s = format!("CPU a lead: server {:.0} µs ({:.2} cores)", per(self.server), cores(self.server));
        if postgres {
            s += &format!(", PostgreSQL {:.0} µs ({:.2} cores)", per(self.postgres), cores(self.postgres));
        }
        s + &format!(", load generator {:.0} µs ({:.2} cores)", per(self.bench), cores(self.bench))
    }
}

/// CPU ticks of every process named `postgres` on this machine (the local server's backends,
/// its background processes; a backend that exited during the window is not counted).
fn postgres_cpu_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .filter_map(proc_cpu_ticks)
        .sum()
}

struct PgFloor {
    rate: f64,
    pg_us_per_lead: f64,
    pg_cores: f64,
    /// Index copies dropped for `--floor-without-index`.
    dropped: usize,
}

/// What a durable lead costs PostgreSQL at the least on this machine: `conns` connections
/// each committing `batch` leads a transaction for `secs` seconds, every lead the rows the
/// intake writes for it — the lead, its phone and e-mail identities, its arrival event, its
/// score row and its outbox message — through the same array statements into copies of the
/// tables with all their indexes (empty copies in a scratch schema, so the indexes are
/// shallower than at 1 M: the floor errs low), and nothing else: no HTTP, no dispatcher, no
/// scoring, and for the intake's floor (`import` None) no lookups and no foreign keys.
/// `import`: an import's floor (see `pg_floor_batch`), its copies without the named indexes
/// of Voronka's schema.
async fn pg_intake_floor(url: &str, conns: usize, batch: usize, secs: f64, import: Option<&[String]>) -> Result<PgFloor> {
    use sqlx::postgres::PgPoolOptions;
    let pool = PgPoolOptions::new().max_connections(conns as u32 + 1).connect(url).await?;
    let schema = format!("voronka_floor_{}", std::process::id());
    let mut ddl = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};");
    for t in ["leads", "identities", "events", "lead_scores", "outbox", "import_rows"] {
        ddl += &format!("CREATE TABLE {schema}.{t} (LIKE public.{t} INCLUDING ALL);");
    }
    if import.is_some() {
        // What an import cannot do without: the timeline and the identities belong to a lead
        // that exists (the schema's foreign keys).
        ddl += &format!(
            "ALTER TABLE {schema}.identities ADD FOREIGN KEY (lead_id) REFERENCES {schema}.leads(id); \
             ALTER TABLE {schema}.events ADD FOREIGN KEY (lead_id) REFERENCES {schema}.leads(id);"
        );
    }
    let drop_schema = || async {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).execute(&pool).await;
    };
    let set_up = async {
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl)).execute(&pool).await?;
        drop_floor_indexes(&pool, &schema, import.unwrap_or_default()).await
    };
    let dropped = match set_up.await {
        Ok(n) => n,
        Err(e) => {
            drop_schema().await;
            return Err(e);
        }
    };
    let import = import.is_some();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let counter = Arc::new(AtomicU64::new(0));
    let pg_before = postgres_cpu_ticks();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conns {
        let (pool, schema, counter) = (pool.clone(), schema.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut n: u64 = w as u64 * 100_000_000;
            while Instant::now() < deadline {
                pg_floor_batch(&pool, &schema, n, batch, import).await?;
                n += batch as u64;
                counter.fetch_add(batch as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let mut failed = None;
    for t in tasks {
        if let Err(e) = t.await.map_err(anyhow::Error::from).and_then(|r| r) {
            failed = Some(e);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let pg_ticks = postgres_cpu_ticks().saturating_sub(pg_before);
    drop_schema().await;
    pool.close().await;
    if let Some(e) = failed {
        return Err(e.context("the PostgreSQL floor failed"));
    }
    let done = counter.load(Ordering::Relaxed);
    let leads = done.max(1);
    Ok(PgFloor {
        rate: done as f64 / elapsed,
        pg_us_per_lead: pg_ticks as f64 * 10_000.0 / leads as f64,
        pg_cores: pg_ticks as f64 / 100.0 / elapsed,
        dropped,
    })
}

/// Drops the scratch copies of the named indexes of Voronka's schema; how many it dropped.
/// Keys (unique indexes) stay: the floor's lookups and foreign keys need them.
async fn drop_floor_indexes(pool: &sqlx::PgPool, schema: &str, names: &[String]) -> Result<usize> {
    if names.is_empty() {
        return Ok(0);
    }
    // The copies' indexes have names of their own: matched by their definitions.
    let copies: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT p.indexname::text, s.indexname::text, i.indisunique FROM pg_indexes p \
         JOIN pg_class c ON c.relname = p.indexname AND c.relnamespace = 'public'::regnamespace \
         JOIN pg_index i ON i.indexrelid = c.oid \
         JOIN pg_indexes s ON s.schemaname = $1 AND s.tablename = p.tablename \
         AND substring(s.indexdef from ' USING .*') = substring(p.indexdef from ' USING .*') \
         AND (s.indexdef LIKE 'CREATE UNIQUE %') = (p.indexdef LIKE 'CREATE UNIQUE %') \
         WHERE p.schemaname = 'public' AND p.indexname = ANY($2)",
    )
    .bind(schema)
    .bind(names)
    .fetch_all(pool)
    .await?;
    let unknown: Vec<&String> = names.iter().filter(|w| !copies.iter().any(|(p, _, _)| p == *w)).collect();
    anyhow::ensure!(unknown.is_empty(), "--floor-without-index: no such index of the floor's tables: {unknown:?}");
    let keys: Vec<&String> = copies.iter().filter(|(_, _, unique)| *unique).map(|(p, _, _)| p).collect();
    anyhow::ensure!(keys.is_empty(), "--floor-without-index: {keys:?} are keys, which the floor keeps");
    for (_, copy, _) in &copies {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX {schema}.\"{copy}\""))).execute(pool).await?;
    }
    Ok(copies.len())
}

/// One transaction of the floor: `batch` leads from number `n` on. An import's floor also
/// looks the contacts up (deduplication needs it), keeps the foreign keys, and records each
/// row's outcome (the import's report and undo need it).
async fn pg_floor_batch(pool: &sqlx::PgPool, schema: &str, n: u64, batch: usize, import: bool) -> Result<()> {
    let now = chrono::Utc::now();
    let ids: Vec<uuid::Uuid> = (0..batch).map(|_| uuid::Uuid::now_v7()).collect();
    let names: Vec<String> = (0..batch as u64).map(|i| format!("Нагрузка {}", n + i)).collect();
    let phones: Vec<String> = (0..batch as u64).map(|i| format!("+79{:09}", (n + i) % 1_000_000_000)).collect();
    let emails: Vec<String> = (0..batch as u64).map(|i| format!("floor{}@example.ru", n + i)).collect();
    let search: Vec<String> = (0..batch).map(|i| format!("{} ооо тест {} {}", names[i].to_lowercase(), emails[i], phones[i])).collect();
    let mut idents: Vec<String> = phones.iter().map(|p| format!("phone:{p}")).collect();
    idents.extend(emails.iter().map(|e| format!("email:{e}")));
    let kinds: Vec<&str> = (0..batch).map(|_| "phone").chain((0..batch).map(|_| "email")).collect();
    let ident_leads: Vec<uuid::Uuid> = ids.iter().chain(ids.iter()).copied().collect();
    let event = r#"{"channel":"web_form","campaign":"bench","utm":{"source":"yandex","medium":"cpc","campaign":"bench"},"message":"Хочу узнать цену"}"#;
    let ledger = vec![7u8; 24];
    let mut tx = pool.begin().await?;
    if import {
        let found = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT i.ident, i.lead_id, l.status, l.contact_id FROM {schema}.identities i JOIN {schema}.leads l ON l.id = i.lead_id \
             WHERE i.ident = ANY($1)"
        )))
        .bind(&idents)
        .fetch_all(&mut *tx)
        .await?;
        anyhow::ensure!(found.is_empty(), "the floor's contacts are new");
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.leads (id, name, phone, email, company, message, channel, campaign, utm_source, utm_medium, \
         utm_campaign, fields, status, search, created_at, updated_at, last_request_at) \
         SELECT i, n, p, e, 'ООО Тест', 'Хочу узнать цену', 'web_form', 'bench', 'yandex', 'cpc', 'bench', '{{}}'::jsonb, 'new', s, $5, $5, $5 \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $6::text[]) AS t(i, n, p, e, s)"
    )))
    .bind(&ids)
    .bind(&names)
    .bind(&phones)
    .bind(&emails)
    .bind(now)
    .bind(&search)
    .execute(&mut *tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.identities (ident, kind, lead_id, created_at) SELECT i, k, l, $4 FROM UNNEST($1::text[], $2::text[], $3::uuid[]) AS t(i, k, l)"
    )))
    .bind(&idents)
    .bind(&kinds)
    .bind(&ident_leads)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.events (lead_id, kind, at, data, created_at) SELECT l, 'lead_created', $2, $3::jsonb, $2 FROM UNNEST($1::uuid[]) AS t(l)"
    )))
    .bind(&ids)
    .bind(now)
    .bind(event)
    .execute(&mut *tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.lead_scores (lead_id, score, priority, profile, temperature, grade, ledger, model_version, scored_at, status) \
         SELECT l, 4, 4, 4, 'cold', 'C', $2, 1, $3, 'new' FROM UNNEST($1::uuid[]) AS t(l)"
    )))
    .bind(&ids)
    .bind(&ledger)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.outbox (topic, aggregate_id, payload, created_at, available_at) \
         SELECT 'lead.created', l, jsonb_build_object('lead_id', l), $2, $2 FROM UNNEST($1::uuid[]) AS t(l)"
    )))
    .bind(&ids)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if import {
        let rows: Vec<i64> = (0..batch as i64).map(|i| n as i64 + i).collect();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {schema}.import_rows (import_id, row_no, outcome, lead_id) \
             SELECT $1, r, 'created', l FROM UNNEST($2::bigint[], $3::uuid[]) AS t(r, l)"
        )))
        .bind(FLOOR_IMPORT)
        .bind(&rows)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The import the floor's rows are recorded under.
const FLOOR_IMPORT: uuid::Uuid = uuid::Uuid::from_u128(0x766f_726f_6e6b_6100_0000_0000_0000_0001);

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor's writer line from its counters: run 1 of the README's floor table.
    #[test]
    fn the_floor_writer_line_is_worked_out_from_its_counters() {
        let leads = 147_955u64;
        let f = SqliteFloor {
            stats: Stats { ok: leads, errors: 0, secs: 10.0, lat_us: Vec::new() },
            cpu: CpuSplit::default(),
            // 27.1 µs a lead inserting, 36.5 µs committing, 24.6 leads a batch, fsync 0.57 ms.
            writer: [leads, 6_014, 27_100 * leads, 36_500 * leads, 570_000 * 4_000, 4_000],
        };
        let line = f.writer_line();
        for part in
            ["24.6 leads a batch", "27.1 µs a lead inserting", "36.5 µs committing", "busy 94 %", "at most 15723 leads/s", "fsync 0.57 ms"]
        {
            assert!(line.contains(part), "{part:?} not in {line:?}");
        }
    }
}
