//! File imports: a CSV or XLSX file's rows go through the same intake as the API's leads
//! (normalised, deduplicated, scored), each with its row number, so the outcome of every
//! row is known, a killed import resumes where it stopped, and a whole import can be undone.
//! Used by `voronka import` and by uploads (API and UI), which the server runs in the
//! background and resumes after a restart.

pub mod read;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;
use voronka_domain::errors::Text;
use voronka_domain::lead::{IntakeDefaults, LeadInput, Rejection, default_form_name};
use voronka_domain::{LeadStatus, NewLead, PhoneRegion};
use voronka_store::Store;
use voronka_store::imports::{ImportCounts, ImportInfo, NewImport, RowOutcome};
use voronka_store::intake::{ImportMark, IntakeCommand, IntakeError, IntakeOutcome};

pub use read::ReadError;

use crate::api::export::neutralise;

/// A worker that has not reported for this long has stopped; another may take its import.
pub const LEASE: Duration = Duration::from_secs(10);
/// Rows handed to the intake before the first answer is awaited: on SQLite enough for the
/// single writer's large batches; PostgreSQL's writers do better with fewer at once.
fn in_flight_for(store: &voronka_store::Store) -> usize {
    match store.backend() {
        voronka_store::Backend::Sqlite => 32768,
        voronka_store::Backend::Postgres => 1024,
    }
}
/// Every write beside the SQLite intake writer makes it drop its page cache (another
/// connection changed the database), so the run's own writes come seldom: a heartbeat every
/// 2 s keeps the 10 s lease with room to spare.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Rejected rows handed to the recorder at once (or with the progress).
const REJECTED_BATCH: usize = 4096;

/// Lead fields a column may be mapped to ("" ignores the column).
pub const TARGETS: &[&str] = &[
    "name",
    "phone",
    "email",
    "messenger",
    "company",
    "position",
    "city",
    "interest",
    "message",
    "budget",
    "campaign",
    "source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "referrer",
    "landing_page",
    "external_id",
];
const CONTACT_TARGETS: &[&str] = &["phone", "email", "messenger"];

/// What to import, and how.
pub struct ImportRequest {
    /// Where the file came from ("Выставка 2026", "base from X"): the leads' source, and the
    /// key the column mapping is saved under.
    pub source: String,
    pub file_name: String,
    pub bytes: Bytes,
    /// Columns mapped by hand (column → lead field); they override the saved mapping.
    pub mapping: Map<String, Value>,
    pub campaign: Option<String>,
    pub dry_run: bool,
    pub actor: String,
    /// Keep the file in the database so a restarted server can resume (uploads).
    pub keep_file: bool,
    pub region: PhoneRegion,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    File(#[from] ReadError),
    /// A bad request field: its name and what is wrong.
    #[error("{field}: {}", .text.en)]
    Invalid { field: &'static str, text: Text, detail: Option<String> },
    #[error("another worker is running this import")]
    Busy(Uuid),
    #[error(transparent)]
    Store(#[from] voronka_store::StoreError),
    #[error("the lead intake failed")]
    Intake(#[from] IntakeError),
}

const NO_CONTACT_COLUMN: Text = Text::new(
    "no column is a phone, e-mail or messenger: map one",
    "ни один столбец не похож на телефон, e-mail или мессенджер: укажите его",
);
const BAD_TARGET: Text = Text::new("not a lead field", "нет такого поля лида");
const BAD_SOURCE: Text = Text::new("must be 1–200 characters", "должно быть от 1 до 200 символов");

/// An import ready to run: the file opened, the mapping decided, the run created or
/// resumed.
pub struct Prepared {
    pub info: ImportInfo,
    pub sheet: read::Sheet,
    mapping: Map<String, Value>,
    defaults: IntakeDefaults,
    source: String,
    resumed: bool,
    progress_every: Duration,
}

impl Prepared {
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// How often the run writes its progress and calls `on_progress` (every 2 s unless
    /// set; zero: after every row).
    pub fn progress_every(mut self, every: Duration) -> Prepared {
        self.progress_every = every;
        self
    }
}

/// The lead field each column goes to: mapped by hand, else as saved for the source, else
/// by its usual name (Имя/ФИО/Name, Телефон/Phone, Email/Почта, …); unknown columns are kept
/// as the lead's own fields.
pub fn effective_mapping(headers: &[String], saved: &Map<String, Value>, overrides: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for h in headers {
        let target = overrides
            .get(h)
            .or_else(|| saved.get(h))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| default_form_name(&column_key(h)));
        // A file's visitor ids would pull the site's anonymous history into imported leads.
        let target = if target == "visitor_id" { String::new() } else { target };
        out.insert(h.clone(), Value::String(target));
    }
    out
}

/// A header as the usual-name table knows it: `E-mail`, `UTM_Source` and `Ф.И.О.` too.
fn column_key(h: &str) -> String {
    let k = h.trim().to_lowercase();
    match k.as_str() {
        "ф.и.о." | "ф. и. о." | "фамилия имя отчество" | "контактное лицо" | "контакт" => {
            "name".into()
        }
        "тел" | "тел." | "телефон мобильный" | "мобильный" | "мобильный телефон" | "phone number" => {
            "phone".into()
        }
        "электронная почта" | "эл. почта" | "e-mail адрес" => "email".into(),
        "организация" | "название компании" => "company".into(),
        _ if k.starts_with("utm_") => k,
        _ => h.trim().to_string(),
    }
}

fn check_mapping(m: &Map<String, Value>) -> Result<(), ImportError> {
    for v in m.values() {
        match v.as_str() {
            Some(t) if t.is_empty() || TARGETS.contains(&t) => {}
            _ => {
                return Err(ImportError::Invalid { field: "mapping", text: BAD_TARGET, detail: Some(v.to_string()) });
            }
        }
    }
    Ok(())
}

/// Opens the file, decides the mapping and creates the run — or finds the unfinished run of
/// the same file and source and takes it over, to resume it.
pub async fn prepare(store: &Store, req: ImportRequest, worker: &str) -> Result<Prepared, ImportError> {
    let source = req.source.trim().to_string();
    if source.is_empty() || source.chars().count() > 200 {
        return Err(ImportError::Invalid { field: "source", text: BAD_SOURCE, detail: None });
    }
    check_mapping(&req.mapping)?;
    let hash = hex(&Sha256::digest(&req.bytes));
    let file = if req.keep_file { Some(req.bytes.clone()) } else { None };
    let sheet = open_blocking(req.bytes, req.file_name.clone()).await?;
    let saved = match store.import_mapping(&source).await? {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mapping = effective_mapping(&sheet.headers, &saved, &req.mapping);
    if !mapping.values().filter_map(Value::as_str).any(|t| CONTACT_TARGETS.contains(&t)) {
        return Err(ImportError::Invalid { field: "mapping", text: NO_CONTACT_COLUMN, detail: Some(sheet.headers.join(", ")) });
    }
    let defaults = IntakeDefaults { channel: "import".into(), campaign: req.campaign.clone(), region: req.region };
    let stale = voronka_store::Ts::from(store.now().0 - chrono::Duration::from_std(LEASE).unwrap_or_default());
    if !req.dry_run {
        if let Some(run) = store.resumable_import(&hash, &source).await? {
            if !store.claim_import(run.id, worker, stale).await? {
                return Err(ImportError::Busy(run.id));
            }
            // A resumed run reads the rows as it started to.
            let info = store.import_info(run.id).await?.unwrap_or(run);
            let mapping = match &info.mapping.0 {
                Value::Object(m) => m.clone(),
                _ => mapping,
            };
            let defaults = IntakeDefaults { campaign: info.campaign.clone(), ..defaults };
            return Ok(Prepared { info, sheet, mapping, defaults, source, progress_every: PROGRESS_EVERY, resumed: true });
        }
        // The mapping is remembered for the source's next file (hand-made choices only).
        let mut keep = saved.clone();
        keep.extend(req.mapping.clone());
        if !req.mapping.is_empty() {
            store.save_import_mapping(&source, &Value::Object(keep)).await?;
        }
    }
    let info = store
        .create_import(&NewImport {
            source: &source,
            file_name: &req.file_name,
            file_hash: &hash,
            format: sheet.format.as_str(),
            mapping: &Value::Object(mapping.clone()),
            campaign: req.campaign.as_deref(),
            dry_run: req.dry_run,
            actor: &req.actor,
            file: file.as_deref(),
            worker,
        })
        .await?;
    store
        .record_audit(&req.actor, "import", &json!({"import_id": info.id, "file": req.file_name, "source": source, "dry_run": req.dry_run}))
        .await?;
    Ok(Prepared { info, sheet, mapping, defaults, source, progress_every: PROGRESS_EVERY, resumed: false })
}

/// Takes over an upload whose worker stopped (a restarted server): the kept file, the
/// mapping and campaign it started with.
pub async fn prepare_kept(store: &Store, id: Uuid, region: PhoneRegion, worker: &str) -> Result<Option<Prepared>, ImportError> {
    let stale = voronka_store::Ts::from(store.now().0 - chrono::Duration::from_std(LEASE).unwrap_or_default());
    let (Some(info), Some(file)) = (store.import_info(id).await?, store.import_file(id).await?) else {
        return Ok(None);
    };
    if !store.claim_import(id, worker, stale).await? {
        return Ok(None);
    }
    let sheet = open_blocking(Bytes::from(file), info.file_name.clone()).await?;
    let mapping = match &info.mapping.0 {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let defaults = IntakeDefaults { channel: "import".into(), campaign: info.campaign.clone(), region };
    let source = info.source.clone();
    Ok(Some(Prepared { info, sheet, mapping, defaults, source, progress_every: PROGRESS_EVERY, resumed: true }))
}

/// Decoding and the counting pass take a second for a large file: off the async workers.
async fn open_blocking(bytes: Bytes, name: String) -> Result<read::Sheet, ImportError> {
    tokio::task::spawn_blocking(move || read::open(bytes, &name))
        .await
        .map_err(|e| ImportError::Store(voronka_store::StoreError::Other(anyhow::anyhow!("reading the file stopped: {e}"))))?
        .map_err(ImportError::from)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Where an import is, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub processed: u64,
    pub total: u64,
    pub counts: ImportCounts,
}

/// A rejected row's reason: the code and each bad field with its message in both languages.
fn rejection(r: &Rejection) -> (String, String) {
    let (code, fields) = match r {
        Rejection::ContactRequired(f) => ("contact_required", f),
        Rejection::InvalidFields(f) => ("invalid_fields", f),
    };
    let detail: Vec<Value> = fields.iter().map(|(k, t)| json!({"field": k, "en": t.en, "ru": t.ru})).collect();
    (code.to_string(), Value::Array(detail).to_string())
}

/// The row as the form intake reads it: (column, value) pairs, empty cells left out.
fn pairs_of(headers: &[String], cells: Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(headers.len());
    for (i, v) in cells.into_iter().enumerate() {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let h = headers.get(i).cloned().unwrap_or_else(|| format!("column_{}", i + 1));
        out.push((h, v.to_string()));
    }
    out
}

/// What an outcome forecast (dry run) knows of identities: the file's own rows so far, then
/// the database.
struct Forecast {
    seen: HashMap<String, bool>,
}

/// Runs a prepared import to its end: every row not yet done goes through the intake (or,
/// in a dry run, is forecast); rejected rows are recorded with their reason. Progress is
/// written to the import every half second (which also keeps the run claimed; see
/// `Prepared::progress_every`), by a task beside the rows (`Recorder`), and given to
/// `on_progress`.
pub async fn run(
    store: &Store,
    p: Prepared,
    worker: &str,
    on_progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<ImportInfo, ImportError> {
    let id = p.info.id;
    match run_rows(store, p, worker, on_progress).await {
        Ok(()) => Ok(store.finish_import(id, worker, None).await?),
        // The database or the intake is unavailable (often: the process is stopping): the run
        // stays open for the next worker (a restarted server, or the same command again).
        Err(e @ (ImportError::Store(_) | ImportError::Intake(_))) => {
            tracing::warn!(import = %id, error = %format!("{e:#}"), "import interrupted; it resumes when started again");
            let _ = store.release_import(id, worker).await;
            Err(e)
        }
        // Another worker took the run over: it is theirs to finish.
        Err(e @ ImportError::Busy(_)) => Err(e),
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(import = %id, error = %msg, "import stopped");
            let _ = store.finish_import(id, worker, Some(&msg)).await;
            Err(e)
        }
    }
}

async fn run_rows(store: &Store, p: Prepared, worker: &str, on_progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<(), ImportError> {
    let Prepared { info, sheet, mapping, defaults, source, progress_every, .. } = p;
    let id = info.id;
    let total = sheet.total;
    let done: HashSet<i64> = if info.dry_run { HashSet::new() } else { store.import_done_rows(id).await?.into_iter().collect() };
    let mut counts = if done.is_empty() { ImportCounts::default() } else { store.import_counts(id).await? };
    let mut processed = done.len() as u64;
    let actor = format!("import:{id}");
    let mut rejected: Vec<RowOutcome> = Vec::new();
    let mut forecast = Forecast { seen: HashMap::new() };
    let mut pending_forecast: Vec<(i64, NewLead)> = Vec::new();
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    let max_in_flight = in_flight_for(store);
    let in_order = store.intake().keeps_order();
    // Identities of rows in flight (how many rows each), when the intake may reorder them.
    let mut waiting: HashMap<String, u32> = HashMap::new();
    let mut last = Instant::now();
    if !store.import_progress(id, worker, Some(total as i64), processed as i64, &counts).await? {
        return Err(ImportError::Busy(id));
    }
    let mut recorder = Recorder::start(store.clone(), id, worker.to_string());
    let fed: Result<(), ImportError> = async {
        // Rows are read here in order, turned into submissions on the runtime's threads (in
        // chunks, a few at a time) and queued in file order, so the earlier of two rows of one
        // person is the one that creates the lead.
        let shared = Arc::new(RowContext {
            headers: sheet.headers.clone(),
            mapping,
            defaults,
            source,
            actor,
            id,
            dry_run: info.dry_run,
            intake: store.intake().clone(),
        });
        let mut parsing = FuturesOrdered::new();
        let mut rows = sheet.into_iter();
        let mut exhausted = false;
        loop {
            while !exhausted && parsing.len() < PARSE_AHEAD {
                let mut chunk = Vec::with_capacity(PARSE_CHUNK);
                while chunk.len() < PARSE_CHUNK {
                    match rows.next() {
                        Some(row) => {
                            let (row_no, cells) = row?;
                            if !done.contains(&row_no) {
                                chunk.push((row_no, cells));
                            }
                        }
                        None => {
                            exhausted = true;
                            break;
                        }
                    }
                }
                if !chunk.is_empty() {
                    let ctx = shared.clone();
                    parsing.push_back(tokio::task::spawn_blocking(move || ctx.parse(chunk)));
                }
            }
            let Some(parsed) = parsing.next().await else { break };
            let parsed = parsed.map_err(|e| ImportError::Intake(IntakeError::Storage(anyhow::anyhow!("row parser failed: {e}"))))?;
            for (row_no, p) in parsed {
                match p {
                    Parsed::Rejected(reason, detail) => {
                        rejected.push(RowOutcome {
                            row: row_no,
                            outcome: "rejected",
                            lead_id: None,
                            reason: Some(reason),
                            detail: Some(detail),
                        });
                        counts.add("rejected");
                        processed += 1;
                    }
                    Parsed::Forecast(lead) => {
                        pending_forecast.push((row_no, *lead));
                        if pending_forecast.len() >= 1000 {
                            processed +=
                                forecast_rows(store, id, &mut forecast, std::mem::take(&mut pending_forecast), &mut counts).await?;
                        }
                    }
                    Parsed::Ready(sub) => {
                        // Queued here, one by one, so that rows reach the writer in file order.
                        // Writers that commit side by side (PostgreSQL) could let a later row of a
                        // person overtake an earlier one still in flight: that row waits for it.
                        let idents = if in_order { Vec::new() } else { sub.identities().to_vec() };
                        while idents.iter().any(|i| waiting.contains_key(i)) {
                            match in_flight.next().await {
                                Some((done, r)) => {
                                    count_reply(r?.outcome, &mut counts);
                                    processed += 1;
                                    unwait(&mut waiting, done);
                                }
                                None => break,
                            }
                        }
                        for i in &idents {
                            *waiting.entry(i.clone()).or_insert(0) += 1;
                        }
                        let reply = store.intake().queue(*sub).await?.reply();
                        in_flight.push(Box::pin(async move { (idents, reply.await) }));
                        while in_flight.len() >= max_in_flight {
                            if let Some((done, r)) = in_flight.next().await {
                                count_reply(r?.outcome, &mut counts);
                                processed += 1;
                                unwait(&mut waiting, done);
                            }
                        }
                    }
                }
                if rejected.len() >= REJECTED_BATCH {
                    recorder.rows(std::mem::take(&mut rejected)).await?;
                }
                if last.elapsed() >= progress_every {
                    last = Instant::now();
                    recorder.progress(processed as i64, counts).await?;
                    recorder.rows(std::mem::take(&mut rejected)).await?;
                    on_progress(Progress { processed, total, counts });
                }
            }
        }
        while let Some((_, r)) = in_flight.next().await {
            count_reply(r?.outcome, &mut counts);
            processed += 1;
        }
        if !pending_forecast.is_empty() {
            processed += forecast_rows(store, id, &mut forecast, std::mem::take(&mut pending_forecast), &mut counts).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = fed {
        // What was handed over is written before the run is released or failed, so
        // that nothing of this run lands after that.
        recorder.abandon().await;
        return Err(e);
    }
    recorder.rows(rejected).await?;
    recorder.finish(processed as i64, counts).await?;
    on_progress(Progress { processed, total, counts });
    Ok(())
}

/// Writes a run's rejected rows and its progress on a task of its own, so that the loop
/// handing rows to the intake does not wait for them: each is a write transaction of its
/// own, which on SQLite waits for the intake writer's batch to commit, and while the loop
/// waited the writer ran out of rows (a 60–100 ms stall every half second, a seventh of a
/// SQLite import's time). Rows are written in order, up to 16 batches queued (the loop
/// waits beyond that). Progress — the run's heartbeat, which keeps it claimed — is not
/// queued behind them: only the latest is kept, and it is written before the next batch of
/// rows, so a file of mostly rejected rows cannot starve it. The run stops when the
/// recorder finds the import taken over (`Busy`) or fails: at the next row batch or
/// progress the loop hands over, at the latest at `finish`.
struct Recorder {
    rows: tokio::sync::mpsc::Sender<Vec<RowOutcome>>,
    latest: Arc<Latest>,
    /// None once joined.
    task: Option<tokio::task::JoinHandle<Result<(), ImportError>>>,
}

/// The latest progress not written yet, and the signal that one was posted.
#[derive(Default)]
struct Latest {
    progress: std::sync::Mutex<Option<(i64, ImportCounts)>>,
    posted: tokio::sync::Notify,
}

impl Latest {
    fn take(&self) -> Option<(i64, ImportCounts)> {
        self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    fn post(&self, processed: i64, counts: ImportCounts) {
        *self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((processed, counts));
        self.posted.notify_one();
    }
}

impl Recorder {
    fn start(store: Store, id: Uuid, worker: String) -> Recorder {
        let (rows, mut rx) = tokio::sync::mpsc::channel::<Vec<RowOutcome>>(16);
        let latest = Arc::new(Latest::default());
        let shared = latest.clone();
        let task = tokio::spawn(async move {
            let heartbeat = |(processed, counts): (i64, ImportCounts)| {
                let (store, worker) = (&store, &worker);
                async move {
                    match store.import_progress(id, worker, None, processed, &counts).await? {
                        true => Ok(()),
                        false => Err(ImportError::Busy(id)),
                    }
                }
            };
            loop {
                if let Some(p) = shared.take() {
                    heartbeat(p).await?;
                    continue;
                }
                tokio::select! {
                    biased;
                    () = shared.posted.notified() => {}
                    batch = rx.recv() => match batch {
                        Some(batch) => store.record_import_rows(id, &batch).await?,
                        // Every row is written: the last progress, and done.
                        None => {
                            if let Some(p) = shared.take() {
                                heartbeat(p).await?;
                            }
                            return Ok(());
                        }
                    },
                }
            }
        });
        Recorder { rows, latest, task: Some(task) }
    }

    async fn rows(&mut self, rows: Vec<RowOutcome>) -> Result<(), ImportError> {
        if rows.is_empty() {
            return Ok(());
        }
        match self.rows.send(rows).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.stopped().await),
        }
    }

    async fn progress(&mut self, processed: i64, counts: ImportCounts) -> Result<(), ImportError> {
        if self.rows.is_closed() {
            return Err(self.stopped().await);
        }
        self.latest.post(processed, counts);
        Ok(())
    }

    /// Writes the final progress after everything handed over, and waits for all of it.
    async fn finish(self, processed: i64, counts: ImportCounts) -> Result<(), ImportError> {
        self.latest.post(processed, counts);
        let Recorder { rows, task, .. } = self;
        drop(rows);
        Self::join(task).await
    }

    /// After the run failed: waits for what was handed over to be written (or to fail).
    async fn abandon(self) {
        let Recorder { rows, task, .. } = self;
        drop(rows);
        if let Err(e) = Self::join(task).await {
            tracing::warn!(error = %format!("{e:#}"), "an import's progress or rejected rows were not all written");
        }
    }

    /// Why the task stopped taking records (it ends early only with an error).
    async fn stopped(&mut self) -> ImportError {
        match Self::join(self.task.take()).await {
            Err(e) => e,
            Ok(()) => ImportError::Intake(IntakeError::Storage(anyhow::anyhow!("the import's recorder stopped"))),
        }
    }

    /// The task's outcome (nothing more once it was joined).
    async fn join(task: Option<tokio::task::JoinHandle<Result<(), ImportError>>>) -> Result<(), ImportError> {
        match task {
            Some(t) => {
                t.await.map_err(|e| ImportError::Intake(IntakeError::Storage(anyhow::anyhow!("the import's recorder failed: {e}"))))?
            }
            None => Ok(()),
        }
    }
}

/// A queued row's answer, with the identities it was matched by.
type InFlight = BoxFuture<'static, (Vec<String>, Result<voronka_store::intake::IntakeReply, IntakeError>)>;

/// Forgets the identities of a row that has been answered.
fn unwait(waiting: &mut HashMap<String, u32>, done: Vec<String>) {
    for i in done {
        if let Some(n) = waiting.get_mut(&i) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&i);
            }
        }
    }
}

/// Rows per parsing task, and how many such tasks run ahead of the queueing.
const PARSE_CHUNK: usize = 1024;
const PARSE_AHEAD: usize = 4;

/// What turning a row into a submission needs, shared by the parsing tasks.
struct RowContext {
    headers: Vec<String>,
    mapping: Map<String, Value>,
    defaults: IntakeDefaults,
    source: String,
    actor: String,
    id: Uuid,
    dry_run: bool,
    intake: voronka_store::IntakeHandle,
}

enum Parsed {
    Rejected(String, String),
    /// A dry run's lead, forecast rather than submitted.
    Forecast(Box<NewLead>),
    Ready(Box<voronka_store::Submission>),
}

impl RowContext {
    fn parse(&self, rows: Vec<(i64, Vec<String>)>) -> Vec<(i64, Parsed)> {
        rows.into_iter()
            .map(|(row_no, cells)| {
                let pairs = pairs_of(&self.headers, cells);
                let p = match LeadInput::from_form(&pairs, &self.mapping, &[], &self.defaults) {
                    Err(r) => {
                        let (reason, detail) = rejection(&r);
                        Parsed::Rejected(reason, detail)
                    }
                    Ok(mut lead) => {
                        if lead.source.is_none() {
                            lead.source = Some(self.source.clone());
                        }
                        if self.dry_run {
                            Parsed::Forecast(Box::new(lead))
                        } else {
                            Parsed::Ready(Box::new(self.intake.prepare(IntakeCommand {
                                lead,
                                idempotency: None,
                                actor: Some(self.actor.clone()),
                                form_id: None,
                                import: Some(ImportMark { import_id: self.id, row: row_no }),
                            })))
                        }
                    }
                };
                (row_no, p)
            })
            .collect()
    }
}

fn count_reply(outcome: IntakeOutcome, counts: &mut ImportCounts) {
    counts.add(match outcome {
        IntakeOutcome::Created | IntakeOutcome::Replayed => "created",
        IntakeOutcome::Repeat => "repeat",
        IntakeOutcome::Returning => "returning",
    });
}

/// A dry run's verdict on a chunk of valid rows, as the intake would decide it: a contact of
/// an open lead (or of an earlier row) makes a repeat request, of a closed lead a returning
/// lead, else a new lead.
async fn forecast_rows(
    store: &Store,
    id: Uuid,
    f: &mut Forecast,
    rows: Vec<(i64, NewLead)>,
    counts: &mut ImportCounts,
) -> Result<u64, ImportError> {
    let idents: Vec<String> = rows.iter().flat_map(|(_, l)| l.identities()).filter(|i| !f.seen.contains_key(i)).collect();
    let known: HashMap<String, bool> = store
        .identity_statuses(&idents)
        .await?
        .into_iter()
        .map(|s| {
            let open = s.status.parse::<LeadStatus>().map(|st| st.is_open()).unwrap_or(true);
            (s.ident, open)
        })
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for (row, lead) in &rows {
        let ids = lead.identities();
        let state: Vec<bool> = ids.iter().filter_map(|i| f.seen.get(i).or_else(|| known.get(i)).copied()).collect();
        let outcome = if state.iter().any(|open| *open) {
            "repeat"
        } else if !state.is_empty() {
            "returning"
        } else {
            "created"
        };
        for i in ids {
            f.seen.insert(i, true);
        }
        counts.add(outcome);
        out.push(RowOutcome { row: *row, outcome, lead_id: None, reason: None, detail: None });
    }
    store.record_import_rows(id, &out).await?;
    Ok(rows.len() as u64)
}

/// The report as CSV: every row with its outcome, lead and reason (in `lang`), row order.
pub async fn report_csv(store: &Store, id: Uuid, ru: bool) -> Result<Vec<u8>, ImportError> {
    let mut w = csv::WriterBuilder::new().quote_style(csv::QuoteStyle::Always).from_writer(Vec::new());
    let head: &[&str] = if ru {
        &["строка", "результат", "лид", "причина", "поле", "сообщение"]
    } else {
        &["row", "outcome", "lead_id", "reason", "field", "message"]
    };
    let bad = |e: csv::Error| ImportError::Store(voronka_store::StoreError::Other(e.into()));
    w.write_record(head).map_err(bad)?;
    let mut after = 0i64;
    loop {
        let page = store.import_report(id, after, 5000).await?;
        let Some(last) = page.last() else { break };
        after = last.row_no;
        for r in &page {
            let (fields, messages) = match r.detail.as_deref().and_then(|d| serde_json::from_str::<Vec<Value>>(d).ok()) {
                Some(items) => {
                    let lang = if ru { "ru" } else { "en" };
                    let f: Vec<&str> = items.iter().filter_map(|i| i["field"].as_str()).collect();
                    let m: Vec<String> = items
                        .iter()
                        .map(|i| format!("{}: {}", i["field"].as_str().unwrap_or(""), i[lang].as_str().unwrap_or("")))
                        .collect();
                    (f.join(", "), m.join("; "))
                }
                None => (String::new(), String::new()),
            };
            let reason = match (r.reason.as_deref(), ru) {
                (Some("contact_required"), true) => "нет телефона, e-mail или мессенджера".to_string(),
                (Some("contact_required"), false) => "no phone, e-mail or messenger".to_string(),
                (Some("invalid_fields"), true) => "неверные поля".to_string(),
                (Some("invalid_fields"), false) => "invalid fields".to_string(),
                (Some("kept"), true) => "оставлен при отмене: с лидом работали".to_string(),
                (Some("kept"), false) => "kept at undo: the lead was worked on".to_string(),
                (other, _) => other.unwrap_or("").to_string(),
            };
            let lead = r.lead_id.map(|l| l.to_string()).unwrap_or_default();
            let row = r.row_no.to_string();
            // Field names come from the file's headers: no formulas for the spreadsheet to run.
            let (fields, messages) = (neutralise(fields), neutralise(messages));
            w.write_record([row.as_str(), r.outcome.as_str(), lead.as_str(), reason.as_str(), fields.as_str(), messages.as_str()])
                .map_err(bad)?;
        }
    }
    w.into_inner().map_err(|e| ImportError::Store(voronka_store::StoreError::Other(anyhow::anyhow!("{e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usual_russian_and_english_headers_map_by_themselves() {
        let h: Vec<String> =
            ["ФИО", "Телефон", "E-mail", "Почта", "Компания", "Должность", "Город", "Комментарий", "UTM_Source", "Name", "Phone", "Отдел"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let m = effective_mapping(&h, &Map::new(), &Map::new());
        let t: Vec<&str> = h.iter().map(|k| m[k].as_str().unwrap()).collect();
        assert_eq!(
            t,
            ["name", "phone", "email", "email", "company", "position", "city", "message", "utm_source", "name", "phone", "Отдел"]
        );
    }

    #[test]
    fn hand_mapping_beats_the_saved_one_which_beats_the_usual_names() {
        let h = vec!["Тел".to_string(), "Моб".to_string(), "Имя".to_string()];
        let saved: Map<String, Value> = serde_json::from_value(json!({"Моб": "phone", "Имя": "company"})).unwrap();
        let hand: Map<String, Value> = serde_json::from_value(json!({"Имя": "name", "Тел": ""})).unwrap();
        let m = effective_mapping(&h, &saved, &hand);
        assert_eq!(Value::Object(m), json!({"Тел": "", "Моб": "phone", "Имя": "name"}));
    }

    #[test]
    fn a_file_s_visitor_ids_are_not_taken_for_the_site_s() {
        let h = vec!["visitor_id".to_string(), "_vid".to_string()];
        let m = effective_mapping(&h, &Map::new(), &Map::new());
        assert_eq!(Value::Object(m), json!({"visitor_id": "", "_vid": ""}));
    }

    #[test]
    fn a_mapping_to_an_unknown_field_is_refused() {
        let bad: Map<String, Value> = serde_json::from_value(json!({"A": "phonee"})).unwrap();
        assert!(matches!(check_mapping(&bad), Err(ImportError::Invalid { field: "mapping", .. })));
    }
}
