//! The intake writer: lead submissions and tracker events are committed — lead, identities,
//! timeline events, the score and outbox rows — in one transaction, before anyone is
//! answered. Concurrent submissions are batched into one transaction (group commit), so one
//! fsync acknowledges many of them.
//!
//! Dedup is enforced by the database: `identities.ident` is a primary key, so two
//! submissions with one phone that race in two processes cannot both create a lead; the
//! loser's transaction fails on the key, is retried, and finds the winner's lead.
//!
//! The writer is the one serial part of intake, so it only decides and writes: everything
//! that can be computed per submission (identity keys, search text, the event's JSON) is
//! computed by the caller's task before the submission is queued, and answers are
//! serialised by the caller too.

mod events;
mod leads;
mod pg;
mod score;
mod sqlite;

pub use events::{EventsCommand, EventsReply, TrackedEvent, path_of};
pub(crate) use score::profile_of_row;
pub(crate) use sqlite::WAL_SIZE_LIMIT;

use crate::db::{Db, is_retryable};
use crate::leads::{Lead, LeadRow};
use crate::scoring::ModelCache;
use crate::ts::Ts;
use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use voronka_domain::scoring::Model;
use voronka_domain::{Clock, NewLead};

/// Starts the SQLite checkpointer of `voronka serve`'s intake on the database at `path`
/// (passive copies in the background, the log started over once it holds 48 MB); it runs
/// until `alive` can no longer be upgraded. For the benchmark's floor, which writes its
/// rows with a writer of its own.
pub fn start_sqlite_checkpointer(path: &std::path::Path, alive: std::sync::Weak<()>) -> anyhow::Result<()> {
    sqlite::checkpointer(path, alive, Default::default())
}

/// Most jobs committed in one transaction: SQLite's one writer gains from large batches
/// (fewer commits, each with its WAL fsync, for a file import); PostgreSQL's concurrent
/// writers do better with smaller ones (less held at once, fewer conflicts to retry).
pub(crate) const SQLITE_MAX_BATCH: usize = 4096;
pub(crate) const PG_MAX_BATCH: usize = 512;
const MAX_ATTEMPTS: u32 = 8;

/// The key a client sent in `Idempotency-Key`, scoped to its token, and the body's hash.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub scope_key: String,
    pub request_hash: [u8; 32],
}

/// One submission to commit.
#[derive(Debug, Clone)]
pub struct IntakeCommand {
    pub lead: NewLead,
    pub idempotency: Option<IdempotencyKey>,
    /// Who sent it, for the timeline (`token:NAME`, `form:NAME`…).
    pub actor: Option<String>,
    /// The public form it came through, if any.
    pub form_id: Option<Uuid>,
    /// The file import and row it came from: the row's outcome is written in the same
    /// transaction, so a resumed import knows exactly which rows are done.
    pub import: Option<ImportMark>,
}

/// A row of a file import.
#[derive(Debug, Clone, Copy)]
pub struct ImportMark {
    pub import_id: Uuid,
    pub row: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntakeOutcome {
    /// A new lead.
    Created,
    /// A repeat request on an open lead of the same person.
    Repeat,
    /// A new lead for a person whose earlier lead was refused, junk or converted.
    Returning,
    /// An idempotent retry answered with the first answer.
    Replayed,
}

impl IntakeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            IntakeOutcome::Created => "created",
            IntakeOutcome::Repeat => "repeat",
            IntakeOutcome::Returning => "returning",
            IntakeOutcome::Replayed => "replayed",
        }
    }
}

/// The committed answer: HTTP status and the lead (or the stored body of a replay).
#[derive(Debug, Clone)]
pub struct IntakeReply {
    pub outcome: IntakeOutcome,
    pub lead_id: Option<Uuid>,
    pub status: u16,
    answer: Answer,
}

#[derive(Debug, Clone)]
enum Answer {
    Stored(Arc<Vec<u8>>),
    Lead(Arc<Lead>),
    /// Only the outcome (an imported row: the import counts outcomes, it shows no lead).
    Outcome,
}

/// The answer body of `POST /api/v1/leads`: the lead, and whether it was a repeat request.
#[derive(Serialize)]
struct AnswerBody<'a> {
    #[serde(flatten)]
    lead: &'a Lead,
    repeat: bool,
    returning: bool,
}

fn answer_json(lead: &Lead, outcome: IntakeOutcome) -> Vec<u8> {
    serde_json::to_vec(&AnswerBody { lead, repeat: outcome == IntakeOutcome::Repeat, returning: outcome == IntakeOutcome::Returning })
        .unwrap_or_default()
}

impl IntakeReply {
    /// The JSON body of the answer.
    pub fn body(&self) -> Vec<u8> {
        match &self.answer {
            Answer::Stored(b) => b.as_ref().clone(),
            Answer::Lead(l) => answer_json(l, self.outcome),
            Answer::Outcome => serde_json::to_vec(&json!({
                "id": self.lead_id,
                "repeat": self.outcome == IntakeOutcome::Repeat,
                "returning": self.outcome == IntakeOutcome::Returning,
            }))
            .unwrap_or_default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the Idempotency-Key was used before with a different body")]
    IdempotencyConflict,
    #[error("no such lead")]
    UnknownLead,
    #[error("the database could not commit the submission")]
    Storage(#[source] anyhow::Error),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// What the writer needs of a submission beyond the command, computed before queueing.
struct Prepared {
    idents: Vec<String>,
    search: String,
    /// The event's JSON object: source, form and the submission as received.
    event: String,
    /// The `lead_created` event's data when the lead is new and not returning (the usual
    /// case), made before the writer so that it does not build it.
    created_event: String,
    /// The custom fields as stored (JSON).
    fields: String,
    /// What profile rules look at, for scoring the lead when it is new.
    profile: voronka_domain::scoring::Profile,
    /// The profile's ledger entries under a model version, when worked out before queueing.
    profile_ledger: Option<(i64, Vec<voronka_domain::scoring::Entry>)>,
}

/// A job's work, as queued.
#[allow(clippy::large_enum_variant)] // nearly every job is a lead; boxing would only add an allocation
enum Meta {
    Lead { cmd: IntakeCommand, prep: Prepared, at: Ts },
    Events { cmd: EventsCommand, at: Ts },
}

/// A job's answer.
#[derive(Debug)]
enum Done {
    Lead(IntakeReply),
    Events(EventsReply),
}

type ReplyTx = oneshot::Sender<Result<Done, IntakeError>>;

struct Job {
    meta: Meta,
    reply: ReplyTx,
}

type Results = Vec<Result<Done, IntakeError>>;

/// Hands submissions and events to the writer; cheap to clone.
#[derive(Clone)]
pub struct IntakeHandle {
    tx: mpsc::Sender<Job>,
    clock: Arc<dyn Clock>,
    /// Whether submissions are committed in the order they were queued (SQLite's single
    /// writer); PostgreSQL's writers commit batches side by side.
    in_order: bool,
    /// The writers' models: a submission's profile points are worked out before it is
    /// queued with the model the writers last used (and again in the writer if that changed).
    models: Arc<ModelCache>,
    /// When the last job was queued, in milliseconds since `started` (wall time of this
    /// process, not the store's clock, which tests may stop).
    last_job: Arc<std::sync::atomic::AtomicU64>,
    started: std::time::Instant,
    /// Set for good when a flush failed (SQLite: of the log or the database file); nothing
    /// is acknowledged after it.
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl IntakeHandle {
    /// Whether the intake can still acknowledge submissions: its writers are running and
    /// no flush has failed. `/readyz` answers 503 when not, so that a load balancer stops
    /// sending leads to a process that can only refuse them.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed() && !self.has_failed()
    }

    /// Whether a flush failed (SQLite: of the log or the database file); see `failed`.
    pub fn has_failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether submissions are committed in the order they were queued. When not, a caller
    /// that needs one person's submissions in order waits for the earlier one's answer.
    pub fn keeps_order(&self) -> bool {
        self.in_order
    }

    /// Whether submissions are waiting for the writer now (background work yields to them).
    pub fn busy(&self) -> bool {
        self.tx.capacity() < self.tx.max_capacity()
    }

    /// Whether a submission or event batch was queued within `window`: under a steady load
    /// the queue is empty between the writer's batches, so `busy` alone would let background
    /// work take the write lock for long stretches in those gaps.
    pub fn active_within(&self, window: std::time::Duration) -> bool {
        let last = self.last_job.load(std::sync::atomic::Ordering::Relaxed);
        last > 0 && self.started.elapsed().as_millis() as u64 <= last + window.as_millis() as u64
    }

    /// Notes that a job is being queued (see `active_within`).
    fn note_job(&self) {
        // 0 means "never": the first millisecond counts as 1.
        let now = (self.started.elapsed().as_millis() as u64).max(1);
        self.last_job.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    async fn run(&self, meta: Meta) -> Result<Done, IntakeError> {
        self.note_job();
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { meta, reply }).await.map_err(|_| IntakeError::ShuttingDown)?;
        rx.await.map_err(|_| IntakeError::ShuttingDown)?
    }

    /// Commits the submission and returns the answer once it is durable.
    pub async fn submit(&self, cmd: IntakeCommand) -> Result<IntakeReply, IntakeError> {
        let s = self.prepare(cmd);
        self.submit_prepared(s).await
    }

    /// The work on a submission that needs no database (identities, search text, event
    /// data, profile points), which a caller may do on another thread before queueing it
    /// with `submit_prepared` in the order it wants.
    pub fn prepare(&self, cmd: IntakeCommand) -> Submission {
        let lead = &cmd.lead;
        let mut prep = Prepared {
            idents: lead.identities(),
            search: lead.search_text(),
            // Serialised from borrowed parts (the submission is not copied into a `Value`).
            event: serde_json::to_string(&EventHead {
                campaign: &lead.campaign,
                channel: &lead.channel,
                form_id: &cmd.form_id,
                submission: &lead.submission,
            })
            .unwrap_or_else(|_| "{}".into()),
            created_event: String::new(),
            fields: Value::Object(lead.fields.clone()).to_string(),
            profile: score::profile_of_new(lead),
            profile_ledger: None,
        };
        let at = Ts::from(self.clock.now());
        let (version, model) = self.models.active();
        prep.profile_ledger = Some((version, model.profile_entries(&prep.profile, at.micros())));
        prep.created_event = with_keys(json!({ "identities": prep.idents }), &prep.event);
        Submission { cmd, prep, at }
    }

    /// Commits a prepared submission and returns the answer once it is durable.
    pub async fn submit_prepared(&self, s: Submission) -> Result<IntakeReply, IntakeError> {
        self.queue(s).await?.reply().await
    }

    /// Queues a prepared submission and returns at once (waiting only while the queue is
    /// full): submissions queued one after another reach the writer in that order, which
    /// many futures polled together do not promise.
    pub async fn queue(&self, s: Submission) -> Result<PendingReply, IntakeError> {
        let Submission { cmd, prep, at } = s;
        let (reply, rx) = oneshot::channel();
        self.note_job();
        self.tx.send(Job { meta: Meta::Lead { cmd, prep, at }, reply }).await.map_err(|_| IntakeError::ShuttingDown)?;
        Ok(PendingReply(rx))
    }

    /// Commits tracker events (and the scores they change) once they are durable.
    pub async fn track(&self, cmd: EventsCommand) -> Result<EventsReply, IntakeError> {
        match self.run(Meta::Events { cmd, at: Ts::from(self.clock.now()) }).await? {
            Done::Events(r) => Ok(r),
            Done::Lead(_) => Err(IntakeError::Storage(anyhow::anyhow!("mismatched answer"))),
        }
    }
}

/// The answer to a queued submission, to be awaited.
pub struct PendingReply(oneshot::Receiver<Result<Done, IntakeError>>);

impl PendingReply {
    /// The answer, once the submission is committed and durable.
    pub async fn reply(self) -> Result<IntakeReply, IntakeError> {
        match self.0.await.map_err(|_| IntakeError::ShuttingDown)?? {
            Done::Lead(r) => Ok(r),
            Done::Events(_) => Err(IntakeError::Storage(anyhow::anyhow!("mismatched answer"))),
        }
    }
}

/// A submission ready to be queued (see `IntakeHandle::prepare`).
pub struct Submission {
    cmd: IntakeCommand,
    prep: Prepared,
    at: Ts,
}

impl Submission {
    /// The normalised identities (`phone:+7…`, `email:…`) the submission is matched by.
    pub fn identities(&self) -> &[String] {
        &self.prep.idents
    }
}

/// The data of a submission's event (keys in the order `json!` would give them).
#[derive(Serialize)]
struct EventHead<'a> {
    campaign: &'a Option<String>,
    channel: &'a str,
    form_id: &'a Option<Uuid>,
    submission: &'a Value,
}

/// What a writer keeps between batches.
struct WriterCtx {
    models: Arc<ModelCache>,
    targets: score::TargetCache,
}

/// Starts the writers: on PostgreSQL `writers` tasks sharing one queue; on SQLite one
/// dedicated thread (SQLite has a single writer; a thread of its own runs each batch
/// without hand-offs). They stop when every handle is dropped and the queue is drained.
pub(crate) async fn start(
    db: &Db,
    url: &str,
    clock: Arc<dyn Clock>,
    writers: usize,
    models: Arc<ModelCache>,
) -> anyhow::Result<IntakeHandle> {
    let handle_models = models.clone();
    let (tx, rx) = mpsc::channel::<Job>(8192);
    let in_order = matches!(db, Db::Sqlite { .. });
    // Set for good by a failed flush of the log (a flushing thread) or of the database
    // file (the checkpointer): nothing is acknowledged after it.
    let shared = sqlite::Shared::default();
    let failed = shared.failed.clone();
    match (db, crate::db::sqlite_path(url)?) {
        (Db::Sqlite { .. }, Some(path)) => {
            let conn = sqlite::open(&path)?;
            let alive = Arc::new(());
            sqlite::checkpointer(&path, Arc::downgrade(&alive), shared.clone())?;
            let ctx = WriterCtx { models, targets: Default::default() };
            std::thread::Builder::new()
                .name("vk-sqlite-writer".into())
                .spawn(move || {
                    if let Err(e) = sqlite::run(conn, &path, rx, ctx, alive, shared) {
                        tracing::error!(error = %format!("{e:#}"), "the SQLite intake writer stopped");
                    }
                })
                .context("cannot start the SQLite writer thread")?;
        }
        (Db::Sqlite { .. }, None) => anyhow::bail!("the SQLite writer needs the database path"),
        (Db::Pg(main), _) => {
            let pool = Db::pg_intake_pool(url, writers.max(1) as u32).await?;
            pg::start(pool, main.clone(), rx, writers.max(1), models)
        }
    }
    Ok(IntakeHandle {
        tx,
        clock,
        in_order,
        models: handle_models,
        last_job: Default::default(),
        started: std::time::Instant::now(),
        failed,
    })
}

/// Takes what is queued, up to a batch: the first job waited, the rest arrived while the
/// previous batch was committing.
fn drain_batch(first: Job, rx: &mut mpsc::Receiver<Job>, max: usize) -> (Vec<Meta>, Vec<ReplyTx>) {
    let mut metas = vec![first.meta];
    let mut replies = vec![first.reply];
    while metas.len() < max {
        match rx.try_recv() {
            Ok(j) => {
                metas.push(j.meta);
                replies.push(j.reply);
            }
            Err(_) => break,
        }
    }
    (metas, replies)
}

fn reply_all(results: Results, replies: Vec<ReplyTx>) {
    for (r, tx) in results.into_iter().zip(replies) {
        let _ = tx.send(r);
    }
}

/// One backend's way to commit a batch, retrying write conflicts itself.
#[allow(async_fn_in_trait)]
trait Attempt {
    async fn attempt(&mut self, jobs: &[Meta]) -> anyhow::Result<Results>;
}

/// Commits a batch; when it still fails, each job is committed alone so that one bad
/// submission fails only itself.
async fn commit_jobs(metas: &[Meta], backend: &mut impl Attempt) -> Results {
    match backend.attempt(metas).await {
        Ok(results) => results,
        Err(e) if metas.len() > 1 => {
            tracing::warn!(error = %format!("{e:#}"), size = metas.len(), "intake batch failed; committing its jobs one by one");
            let mut out = Vec::with_capacity(metas.len());
            for m in metas.chunks(1) {
                out.push(match backend.attempt(m).await {
                    Ok(mut v) => v.pop().unwrap_or_else(|| Err(IntakeError::Storage(anyhow::anyhow!("empty result")))),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "intake commit failed");
                        Err(IntakeError::Storage(e))
                    }
                });
            }
            out
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "intake commit failed");
            vec![Err(IntakeError::Storage(e))]
        }
    }
}

/// A short random pause before retrying a conflicting batch.
fn backoff(attempt: u32) -> Duration {
    Duration::from_micros(rand::random_range(0..(500u64 << attempt.min(6))))
}

/// Why a batch transaction did not commit.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("write conflict: {0}")]
    Conflict(&'static str),
    #[error("{0}")]
    Invalid(String),
}

impl BatchError {
    fn is_retryable(&self) -> bool {
        match self {
            BatchError::Sql(e) => is_retryable(e),
            BatchError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            BatchError::Sqlite(_) | BatchError::Invalid(_) => false,
            BatchError::Conflict(_) => true,
        }
    }
}

#[derive(sqlx::FromRow)]
struct IdentRow {
    ident: String,
    lead_id: Uuid,
    status: String,
    contact_id: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct IdemRow {
    scope_key: String,
    request_hash: Vec<u8>,
    status: i32,
    body: Vec<u8>,
}

/// The columns an intake writes to `leads`, in bind order.
const LEAD_INSERT_COLUMNS: &str = "id, name, phone, email, messenger, company, position, city, interest, message, budget, \
    channel, campaign, source, utm_source, utm_medium, utm_campaign, utm_content, utm_term, referrer, landing_page, \
    tracking_number, visitor_id, external_id, fields, consent_marketing, consent_text, consent_at, status, \
    returning_of, contact_id, search, created_at, updated_at, last_request_at";

/// A planned new lead row.
struct LeadInsert<'a> {
    id: Uuid,
    lead: &'a NewLead,
    returning_of: Option<Uuid>,
    contact_id: Option<Uuid>,
    search: &'a str,
    fields: &'a str,
    profile: &'a voronka_domain::scoring::Profile,
    profile_ledger: Option<&'a (i64, Vec<voronka_domain::scoring::Entry>)>,
    at: Ts,
}

struct EventInsert<'a> {
    lead_id: Option<Uuid>,
    visitor_id: Option<&'a str>,
    site_id: Option<Uuid>,
    kind: &'a str,
    at: Ts,
    actor: Option<&'a str>,
    /// A JSON object.
    data: String,
}

struct OutboxInsert {
    topic: &'static str,
    aggregate_id: Uuid,
    /// A JSON object.
    payload: String,
    at: Ts,
}

/// A repeat request's update of its lead: the count, the time, and contacts the lead lacked.
#[derive(Default)]
struct RepeatUpdate {
    count: i32,
    at: Option<Ts>,
    phone: Option<String>,
    email: Option<String>,
    messenger: Option<String>,
    name: Option<String>,
}

/// A stored answer for an idempotency key.
struct IdemInsert<'a> {
    key: &'a str,
    hash: &'a [u8; 32],
    status: u16,
    body: &'a [u8],
}

/// A lead's score row as written.
struct ScoreWrite {
    lead_id: Uuid,
    /// A lead created in this batch: its state, written into the new score row with no owner
    /// (the trigger that copies them from the lead runs only when none is given).
    created_status: Option<&'static str>,
    score: f64,
    priority: f64,
    profile: f64,
    temperature: &'static str,
    grade: &'static str,
    ledger: Vec<u8>,
    model_version: i64,
    at: Ts,
}

#[derive(sqlx::FromRow)]
struct ScoreRow {
    lead_id: Uuid,
    ledger: Vec<u8>,
    model_version: i64,
}

#[derive(sqlx::FromRow)]
struct InputsRow {
    lead_id: Uuid,
    events: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct TargetRow {
    id: i64,
    kind: String,
    path: String,
    name: String,
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    id: Uuid,
    status: String,
}

#[derive(sqlx::FromRow)]
struct VisitorLead {
    visitor_id: String,
    id: Uuid,
    status: String,
}

#[derive(sqlx::FromRow)]
struct StoredEvent {
    at: Ts,
    kind: String,
    data: Value,
}

/// The statements of the intake transaction, one implementation per backend.
#[allow(async_fn_in_trait)]
trait IntakeTx: Sized {
    async fn idem_lookup(&mut self, keys: &[&str]) -> Result<Vec<IdemRow>, BatchError>;
    async fn identity_lookup(&mut self, idents: &[&str]) -> Result<Vec<IdentRow>, BatchError>;
    async fn insert_leads(&mut self, rows: &[LeadInsert<'_>]) -> Result<(), BatchError>;
    async fn insert_identities(&mut self, rows: &[(&str, Uuid)], at: Ts) -> Result<(), BatchError>;
    async fn repoint_identity(&mut self, ident: &str, from: Uuid, to: Uuid) -> Result<u64, BatchError>;
    /// Counts repeat requests on their leads (ids ascending) and fills contacts the leads
    /// lack; returns how many leads it updated.
    async fn apply_repeats(&mut self, rows: &[(Uuid, &RepeatUpdate)]) -> Result<u64, BatchError>;
    async fn set_search(&mut self, lead_id: Uuid, search: &str) -> Result<(), BatchError>;
    /// Channels whose new leads wait in the unsorted inbox for triage, to be marked after
    /// the insert (a backend whose insert marks them returns none).
    async fn triage_channels(&mut self) -> Result<Vec<String>, BatchError>;
    async fn mark_triage(&mut self, ids: &[Uuid]) -> Result<(), BatchError>;
    /// Moves the visitor's anonymous events to the lead; returns them.
    async fn join_visitor_events(&mut self, visitor_id: &str, lead_id: Uuid) -> Result<Vec<StoredEvent>, BatchError>;
    async fn insert_events(&mut self, rows: &[EventInsert<'_>]) -> Result<(), BatchError>;
    async fn insert_outbox(&mut self, rows: &[OutboxInsert]) -> Result<(), BatchError>;
    async fn insert_import_rows(&mut self, rows: &[ImportRowInsert]) -> Result<(), BatchError>;
    async fn fetch_leads(&mut self, ids: &[Uuid]) -> Result<Vec<LeadRow>, BatchError>;
    async fn insert_idem(&mut self, rows: &[IdemInsert<'_>], at: Ts) -> Result<(), BatchError>;
    // Scoring.
    async fn model_version(&mut self) -> Result<i64, BatchError>;
    async fn load_model(&mut self, version: i64) -> Result<Option<Value>, BatchError>;
    async fn targets_by_key(&mut self, keys: &[(String, String, String)]) -> Result<Vec<TargetRow>, BatchError>;
    async fn insert_targets(&mut self, keys: &[(String, String, String)]) -> Result<(), BatchError>;
    async fn targets_by_id(&mut self, ids: &[i64]) -> Result<Vec<TargetRow>, BatchError>;
    async fn load_scores(&mut self, ids: &[Uuid]) -> Result<Vec<ScoreRow>, BatchError>;
    async fn load_inputs(&mut self, ids: &[Uuid]) -> Result<Vec<InputsRow>, BatchError>;
    async fn save_scores(&mut self, rows: &[ScoreWrite]) -> Result<(), BatchError>;
    async fn save_inputs(&mut self, rows: &[(Uuid, Vec<u8>)]) -> Result<(), BatchError>;
    async fn lead_statuses(&mut self, ids: &[Uuid]) -> Result<Vec<StatusRow>, BatchError>;
    async fn leads_of_visitors(&mut self, visitors: &[&str]) -> Result<Vec<VisitorLead>, BatchError>;
    async fn set_sales_ready(&mut self, ids: &[Uuid], at: Ts) -> Result<(), BatchError>;
    async fn commit_tx(self) -> Result<(), BatchError>;
}

/// Everything one transaction writes besides its own rows: timeline events and outbox rows.
#[derive(Default)]
struct Writes<'a> {
    events: Vec<EventInsert<'a>>,
    outbox: Vec<OutboxInsert>,
    import_rows: Vec<ImportRowInsert>,
}

/// An imported row's outcome.
struct ImportRowInsert {
    mark: ImportMark,
    outcome: &'static str,
    lead_id: Uuid,
}

/// Commits one batch in one transaction. When it fails the transaction is rolled back, and
/// with it any event target it created: the writer forgets the targets it created, so that a
/// retry (or a later batch) creates them again instead of pointing at ids that do not exist.
async fn run_batch<T: IntakeTx>(tx: T, jobs: &[Meta], ctx: &mut WriterCtx) -> Result<Results, BatchError> {
    let r = write_batch(tx, jobs, ctx).await;
    match r {
        Ok(_) => ctx.targets.committed(),
        Err(_) => ctx.targets.rolled_back(),
    }
    r
}

/// One batch in one transaction: lead submissions first (so that events of a visitor who
/// just left contacts find the new lead), then tracker events, then scores.
async fn write_batch<T: IntakeTx>(mut tx: T, jobs: &[Meta], ctx: &mut WriterCtx) -> Result<Results, BatchError> {
    let t0 = std::time::Instant::now();
    let model = current_model(&mut tx, ctx).await?;
    let mut scoring = score::Scoring::new(model);
    let mut writes = Writes::default();
    let mut results: Vec<Option<Result<Done, IntakeError>>> = (0..jobs.len()).map(|_| None).collect();

    let lead_jobs: Vec<(usize, &IntakeCommand, &Prepared, Ts)> = jobs
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match m {
            Meta::Lead { cmd, prep, at } => Some((i, cmd, prep, *at)),
            _ => None,
        })
        .collect();
    let event_jobs: Vec<(usize, &EventsCommand, Ts)> = jobs
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match m {
            Meta::Events { cmd, at } => Some((i, cmd, *at)),
            _ => None,
        })
        .collect();
    let now = jobs
        .iter()
        .map(|m| match m {
            Meta::Lead { at, .. } | Meta::Events { at, .. } => *at,
        })
        .max()
        .unwrap_or(Ts(chrono::Utc::now()));

    let mut lead_plans = None;
    if !lead_jobs.is_empty() {
        lead_plans = Some(leads::write_leads(&mut tx, &lead_jobs, &mut scoring, &mut writes, ctx, now).await?);
    }
    if !event_jobs.is_empty() {
        for (i, r) in events::write_events(&mut tx, &event_jobs, &mut scoring, &mut writes, ctx, now).await? {
            results[i] = Some(r.map(Done::Events));
        }
    }
    scoring.finish(&mut tx, &mut writes, now).await?;
    if !writes.events.is_empty() {
        tx.insert_events(&writes.events).await?;
    }
    if !writes.outbox.is_empty() {
        tx.insert_outbox(&writes.outbox).await?;
    }
    if !writes.import_rows.is_empty() {
        tx.insert_import_rows(&writes.import_rows).await?;
    }
    if let Some(plans) = lead_plans {
        for (i, r) in leads::answer_leads(&mut tx, &lead_jobs, plans, &scoring, now).await? {
            results[i] = Some(r.map(Done::Lead));
        }
    }
    let t1 = std::time::Instant::now();
    tx.commit_tx().await?;
    tracing::debug!(
        n = jobs.len(),
        micros = t0.elapsed().as_micros() as u64,
        commit_micros = t1.elapsed().as_micros() as u64,
        "intake batch committed"
    );
    Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(IntakeError::Storage(anyhow::anyhow!("no result"))))).collect())
}

/// The active model, reloaded when another process (or this one) saved a new version.
async fn current_model<T: IntakeTx>(tx: &mut T, ctx: &mut WriterCtx) -> Result<(i64, Arc<Model>), BatchError> {
    let version = tx.model_version().await?;
    if let Some(m) = ctx.models.get(version) {
        ctx.models.insert(version, m.clone(), true);
        return Ok((version, m));
    }
    let model = match tx.load_model(version).await? {
        Some(json) => {
            Arc::new(Model::from_json(&json).map_err(|e| BatchError::Invalid(format!("stored model {version} is invalid: {e:?}")))?)
        }
        None => Arc::new(Model::starter()),
    };
    ctx.models.insert(version, model.clone(), true);
    Ok((version, model))
}

/// `{"k":v,…}` followed by the keys of the JSON object `base`.
fn with_keys(extra: Value, base: &str) -> String {
    let head = extra.to_string();
    match (head.strip_suffix('}'), base.strip_prefix('{')) {
        (Some(h), Some(b)) if h.len() > 1 && b != "}" => format!("{h},{b}"),
        (Some(_), Some(_)) if base == "{}" => head,
        _ => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prepended_to_a_json_object() {
        assert_eq!(with_keys(json!({"a": 1}), r#"{"b":2}"#), r#"{"a":1,"b":2}"#);
        assert_eq!(with_keys(json!({"a": 1}), "{}"), r#"{"a":1}"#);
        let v: Value = serde_json::from_str(&with_keys(json!({"x": [1]}), r#"{"s":{"t":"}"}}"#)).unwrap();
        assert_eq!(v, json!({"x": [1], "s": {"t": "}"}}));
    }
}
