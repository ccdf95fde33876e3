//! The intake writer: every lead submission is resolved against known identities and
//! committed — lead, timeline event and outbox row — in one transaction, before anyone is
//! answered. Concurrent submissions are batched into one transaction (group commit), so one
//! fsync acknowledges many leads.
//!
//! Dedup is enforced by the database: `identities.ident` is a primary key, so two
//! submissions with one phone that race in two processes cannot both create a lead; the
//! loser's transaction fails on the key, is retried, and finds the winner's lead.
//!
//! The writer is the one serial part of intake, so it only decides and writes: everything
//! that can be computed per submission (identity keys, search text, the event's JSON) is
//! computed by the caller's task before the submission is queued, and answers are
//! serialised by the caller too.

mod pg;
mod sqlite;

use crate::db::{Db, is_retryable};
use crate::leads::{ConsentView, Lead, LeadRow, Utm};
use crate::ts::Ts;
use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use voronka_domain::{Clock, LeadStatus, NewLead};

/// Most submissions committed in one transaction.
const MAX_BATCH: usize = 512;
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the Idempotency-Key was used before with a different body")]
    IdempotencyConflict,
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
}

pub(crate) struct Job {
    meta: Meta,
    reply: oneshot::Sender<Result<IntakeReply, IntakeError>>,
}

pub(crate) struct Meta {
    cmd: IntakeCommand,
    prep: Prepared,
    at: Ts,
}

pub(crate) type Results = Vec<Result<IntakeReply, IntakeError>>;

/// Hands submissions to the writer; cheap to clone.
#[derive(Clone)]
pub struct IntakeHandle {
    tx: mpsc::Sender<Job>,
    clock: Arc<dyn Clock>,
}

impl IntakeHandle {
    /// Commits the submission and returns the answer once it is durable.
    pub async fn submit(&self, cmd: IntakeCommand) -> Result<IntakeReply, IntakeError> {
        let lead = &cmd.lead;
        let prep = Prepared {
            idents: lead.identities(),
            search: lead.search_text(),
            event: json!({
                "channel": lead.channel, "campaign": lead.campaign, "form_id": cmd.form_id, "submission": lead.submission,
            })
            .to_string(),
        };
        let (reply, rx) = oneshot::channel();
        let job = Job { meta: Meta { cmd, prep, at: Ts::from(self.clock.now()) }, reply };
        self.tx.send(job).await.map_err(|_| IntakeError::ShuttingDown)?;
        rx.await.map_err(|_| IntakeError::ShuttingDown)?
    }
}

/// Starts the writers: on PostgreSQL `writers` tasks sharing one queue; on SQLite one
/// dedicated thread (SQLite has a single writer; a thread of its own runs each batch
/// without hand-offs). They stop when every handle is dropped and the queue is drained.
pub(crate) async fn start(db: &Db, url: &str, clock: Arc<dyn Clock>, writers: usize) -> anyhow::Result<IntakeHandle> {
    let (tx, rx) = mpsc::channel::<Job>(8192);
    match (db, crate::db::sqlite_path(url)?) {
        (Db::Sqlite { .. }, Some(path)) => {
            let conn = sqlite::open(&path)?;
            let alive = Arc::new(());
            sqlite::checkpointer(&path, Arc::downgrade(&alive))?;
            std::thread::Builder::new()
                .name("voronka-sqlite-writer".into())
                .spawn(move || sqlite::run(conn, rx, alive))
                .context("cannot start the SQLite writer thread")?;
        }
        (Db::Sqlite { .. }, None) => anyhow::bail!("the SQLite writer needs the database path"),
        (Db::Pg(_), _) => {
            let pool = Db::pg_intake_pool(url, writers.max(1) as u32).await?;
            pg::start(pool, rx, writers.max(1))
        }
    }
    Ok(IntakeHandle { tx, clock })
}

/// Takes what is queued, up to a batch: the first job waited, the rest arrived while the
/// previous batch was committing.
fn drain_batch(first: Job, rx: &mut mpsc::Receiver<Job>) -> (Vec<Meta>, Vec<oneshot::Sender<Result<IntakeReply, IntakeError>>>) {
    let mut metas = vec![first.meta];
    let mut replies = vec![first.reply];
    while metas.len() < MAX_BATCH {
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

fn reply_all(results: Results, replies: Vec<oneshot::Sender<Result<IntakeReply, IntakeError>>>) {
    for (r, tx) in results.into_iter().zip(replies) {
        let _ = tx.send(r);
    }
}

/// Commits a batch through `attempt` (which retries write conflicts itself); when the batch
/// still fails, each job is committed alone so that one bad submission fails only itself.
async fn commit_jobs<'a, F, Fut>(metas: &'a [Meta], mut attempt: F) -> Results
where
    F: FnMut(&'a [Meta]) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Results>>,
{
    match attempt(metas).await {
        Ok(results) => results,
        Err(e) if metas.len() > 1 => {
            tracing::warn!(error = %format!("{e:#}"), size = metas.len(), "intake batch failed; committing its submissions one by one");
            let mut out = Vec::with_capacity(metas.len());
            for m in metas.chunks(1) {
                out.push(match attempt(m).await {
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
pub(crate) enum BatchError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("write conflict: {0}")]
    Conflict(&'static str),
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
            BatchError::Sqlite(_) => false,
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
    fields: String,
    at: Ts,
}

impl LeadInsert<'_> {
    /// The lead as it reads back right after the insert.
    fn to_lead(&self) -> Lead {
        let l = self.lead;
        let s = |o: &Option<String>| o.clone();
        Lead {
            id: self.id,
            name: s(&l.name),
            phone: l.phone.as_ref().map(|p| p.as_str().to_string()),
            email: l.email.as_ref().map(|e| e.as_str().to_string()),
            messenger: l.messenger.as_ref().map(|m| m.as_str().to_string()),
            company: s(&l.company),
            position: s(&l.position),
            city: s(&l.city),
            interest: s(&l.interest),
            message: s(&l.message),
            budget: l.budget,
            status: LeadStatus::New.as_str().to_string(),
            status_reason: None,
            score: 0.0,
            priority: 0.0,
            temperature: "cold".into(),
            grade: "C".into(),
            owner: None,
            channel: l.channel.clone(),
            campaign: s(&l.campaign),
            source: s(&l.source),
            utm: Utm {
                source: s(&l.utm.source),
                medium: s(&l.utm.medium),
                campaign: s(&l.utm.campaign),
                content: s(&l.utm.content),
                term: s(&l.utm.term),
            },
            referrer: s(&l.referrer),
            landing_page: s(&l.landing_page),
            tracking_number: l.tracking_number.as_ref().map(|p| p.as_str().to_string()),
            visitor_id: s(&l.visitor_id),
            external_id: s(&l.external_id),
            fields: Value::Object(l.fields.clone()),
            consent: l.consent.as_ref().map(|c| ConsentView { marketing: c.marketing, text: c.text.clone(), at: c.at.map(Ts::from) }),
            repeat_count: 0,
            returning_of: self.returning_of,
            contact_id: self.contact_id,
            created_at: self.at,
            updated_at: self.at,
            last_request_at: self.at,
        }
    }
}

struct EventInsert<'a> {
    lead_id: Uuid,
    visitor_id: Option<&'a str>,
    kind: &'static str,
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

/// The statements of the intake transaction, one implementation per backend.
#[allow(async_fn_in_trait)]
trait IntakeTx: Sized {
    async fn idem_lookup(&mut self, keys: &[&str]) -> Result<Vec<IdemRow>, BatchError>;
    async fn identity_lookup(&mut self, idents: &[&str]) -> Result<Vec<IdentRow>, BatchError>;
    async fn insert_leads(&mut self, rows: &[LeadInsert<'_>]) -> Result<(), BatchError>;
    async fn insert_identities(&mut self, rows: &[(&str, Uuid)], at: Ts) -> Result<(), BatchError>;
    async fn repoint_identity(&mut self, ident: &str, from: Uuid, to: Uuid) -> Result<u64, BatchError>;
    async fn apply_repeat(&mut self, lead_id: Uuid, u: &RepeatUpdate) -> Result<u64, BatchError>;
    async fn set_search(&mut self, lead_id: Uuid, search: &str) -> Result<(), BatchError>;
    async fn join_visitor_events(&mut self, visitor_id: &str, lead_id: Uuid) -> Result<(), BatchError>;
    async fn insert_events(&mut self, rows: &[EventInsert<'_>]) -> Result<(), BatchError>;
    async fn insert_outbox(&mut self, rows: &[OutboxInsert]) -> Result<(), BatchError>;
    async fn fetch_leads(&mut self, ids: &[Uuid]) -> Result<Vec<LeadRow>, BatchError>;
    async fn insert_idem(&mut self, rows: &[IdemInsert<'_>], at: Ts) -> Result<(), BatchError>;
    async fn commit_tx(self) -> Result<(), BatchError>;
}

/// What is known of an identity's lead at resolution time.
#[derive(Debug, Clone)]
struct Known {
    lead_id: Uuid,
    status: LeadStatus,
    contact_id: Option<Uuid>,
    /// The lead the identity row points to in the database (None: added in this batch).
    db_lead: Option<Uuid>,
}

/// Identity rows to write: new ones, and existing ones moved to another lead.
#[derive(Default)]
struct IdentityChanges {
    new: BTreeMap<String, Uuid>,
    moved: BTreeMap<String, (Uuid, Uuid)>,
}

impl IdentityChanges {
    /// Points `ident` at `target`, remembering what the database must be told.
    fn point(&mut self, known: &mut HashMap<String, Known>, ident: &str, target: Uuid, status: LeadStatus) {
        let db_lead = known.get(ident).and_then(|k| k.db_lead);
        match db_lead {
            Some(old) if old == target => {
                self.moved.remove(ident);
            }
            Some(old) => {
                self.moved.insert(ident.to_string(), (old, target));
            }
            None => {
                self.new.insert(ident.to_string(), target);
            }
        }
        known.insert(ident.to_string(), Known { lead_id: target, status, contact_id: None, db_lead });
    }
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

enum Plan {
    /// Answered from the idempotency table.
    Stored(Result<IntakeReply, IntakeError>),
    /// Same key as an earlier job in this batch: answer as that job was answered.
    FollowerOf(usize),
    Created(Uuid),
    Returning(Uuid),
    Repeat(Uuid),
}

async fn run_batch<T: IntakeTx>(mut tx: T, jobs: &[Meta]) -> Result<Results, BatchError> {
    let t0 = std::time::Instant::now();
    let now = jobs.iter().map(|m| m.at).max().unwrap_or(Ts(chrono::Utc::now()));

    // 1. Idempotency keys seen before.
    let keys: Vec<&str> = jobs.iter().filter_map(|m| m.cmd.idempotency.as_ref().map(|k| k.scope_key.as_str())).collect();
    let stored: HashMap<String, IdemRow> =
        if keys.is_empty() { HashMap::new() } else { tx.idem_lookup(&keys).await?.into_iter().map(|r| (r.scope_key.clone(), r)).collect() };

    // 2. Identities already known.
    let mut all: Vec<&str> = jobs.iter().flat_map(|m| m.prep.idents.iter().map(String::as_str)).collect();
    all.sort_unstable();
    all.dedup();
    let mut known: HashMap<String, Known> = HashMap::with_capacity(all.len());
    if !all.is_empty() {
        for r in tx.identity_lookup(&all).await? {
            let status = r.status.parse().unwrap_or(LeadStatus::New);
            known.insert(r.ident, Known { lead_id: r.lead_id, status, contact_id: r.contact_id, db_lead: Some(r.lead_id) });
        }
    }

    // 3. Decide each job in arrival order; later jobs see what earlier ones created.
    let mut plans: Vec<Plan> = Vec::with_capacity(jobs.len());
    let mut first_with_key: HashMap<&str, usize> = HashMap::new();
    let mut new_leads: Vec<LeadInsert> = Vec::new();
    let mut changes = IdentityChanges::default();
    let mut repeats: BTreeMap<Uuid, RepeatUpdate> = BTreeMap::new();
    let mut events: Vec<EventInsert> = Vec::with_capacity(jobs.len());
    let mut outbox: Vec<OutboxInsert> = Vec::with_capacity(jobs.len());
    let mut visitor_joins: Vec<(&str, Uuid)> = Vec::new();

    for (i, Meta { cmd, prep, at }) in jobs.iter().enumerate() {
        if let Some(k) = &cmd.idempotency {
            if let Some(row) = stored.get(&k.scope_key) {
                let r = if row.request_hash.as_slice() == k.request_hash.as_slice() {
                    Ok(IntakeReply {
                        outcome: IntakeOutcome::Replayed,
                        lead_id: None,
                        status: row.status as u16,
                        answer: Answer::Stored(Arc::new(row.body.clone())),
                    })
                } else {
                    Err(IntakeError::IdempotencyConflict)
                };
                plans.push(Plan::Stored(r));
                continue;
            }
            if let Some(&leader) = first_with_key.get(k.scope_key.as_str()) {
                plans.push(Plan::FollowerOf(leader));
                continue;
            }
            first_with_key.insert(k.scope_key.as_str(), i);
        }
        let lead = &cmd.lead;
        let idents = &prep.idents;
        let matches: Vec<(&String, Known)> = idents.iter().filter_map(|id| known.get(id).map(|k| (id, k.clone()))).collect();
        let actor = cmd.actor.as_deref();
        if let Some((matched_by, open)) = matches.iter().find(|(_, k)| k.status.is_open()) {
            // A repeat request: the person has an open lead. Contacts it did not know yet
            // now point to it too.
            let (target, status) = (open.lead_id, open.status);
            for id in idents {
                changes.point(&mut known, id, target, status);
            }
            let u = repeats.entry(target).or_default();
            u.count += 1;
            u.at = Some(*at);
            u.phone = u.phone.take().or_else(|| lead.phone.as_ref().map(|p| p.as_str().to_string()));
            u.email = u.email.take().or_else(|| lead.email.as_ref().map(|p| p.as_str().to_string()));
            u.messenger = u.messenger.take().or_else(|| lead.messenger.as_ref().map(|p| p.as_str().to_string()));
            u.name = u.name.take().or_else(|| lead.name.clone());
            let data = with_keys(json!({ "matched_by": matched_by }), &prep.event);
            events.push(EventInsert {
                lead_id: target,
                visitor_id: lead.visitor_id.as_deref(),
                kind: "repeat_request",
                at: *at,
                actor,
                data,
            });
            outbox.push(OutboxInsert {
                topic: "lead.repeat_request",
                aggregate_id: target,
                payload: json!({ "lead_id": target }).to_string(),
                at: *at,
            });
            if let Some(v) = &lead.visitor_id {
                visitor_joins.push((v, target));
            }
            plans.push(Plan::Repeat(target));
            continue;
        }

        // A new lead; when the person's earlier lead is closed, it is a returning lead linked
        // to that one (and to its contact when it was converted).
        let id = Uuid::now_v7();
        let previous = matches.first().map(|(_, k)| k.clone());
        for ident in idents {
            changes.point(&mut known, ident, id, LeadStatus::New);
        }
        let contact_id = previous.as_ref().filter(|p| p.status == LeadStatus::Converted).and_then(|p| p.contact_id);
        let fields = Value::Object(lead.fields.clone()).to_string();
        new_leads.push(LeadInsert {
            id,
            lead,
            returning_of: previous.as_ref().map(|p| p.lead_id),
            contact_id,
            search: &prep.search,
            fields,
            at: *at,
        });
        let data = match &previous {
            Some(p) => {
                events.push(EventInsert {
                    lead_id: p.lead_id,
                    visitor_id: None,
                    kind: "lead_returned",
                    at: *at,
                    actor,
                    data: json!({ "new_lead_id": id }).to_string(),
                });
                with_keys(json!({"identities": idents, "returning_of": p.lead_id, "previous_status": p.status.as_str()}), &prep.event)
            }
            None => with_keys(json!({ "identities": idents }), &prep.event),
        };
        events.push(EventInsert { lead_id: id, visitor_id: lead.visitor_id.as_deref(), kind: "lead_created", at: *at, actor, data });
        outbox.push(OutboxInsert {
            topic: "lead.created",
            aggregate_id: id,
            payload: json!({ "lead_id": id, "returning_of": previous.as_ref().map(|p| p.lead_id) }).to_string(),
            at: *at,
        });
        if let Some(v) = &lead.visitor_id {
            visitor_joins.push((v, id));
        }
        plans.push(if previous.is_some() { Plan::Returning(id) } else { Plan::Created(id) });
    }

    // 4. Write, in a fixed order of tables and keys so that concurrent writers cannot deadlock.
    if !new_leads.is_empty() {
        tx.insert_leads(&new_leads).await?;
    }
    if !changes.new.is_empty() {
        let rows: Vec<(&str, Uuid)> = changes.new.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        tx.insert_identities(&rows, now).await?;
    }
    for (ident, (from, to)) in &changes.moved {
        if tx.repoint_identity(ident, *from, *to).await? != 1 {
            return Err(BatchError::Conflict("identity moved by a concurrent transaction"));
        }
    }
    for (lead_id, u) in &repeats {
        if tx.apply_repeat(*lead_id, u).await? != 1 {
            return Err(BatchError::Conflict("repeat target vanished"));
        }
    }
    for (v, lead_id) in &visitor_joins {
        tx.join_visitor_events(v, *lead_id).await?;
    }
    if !events.is_empty() {
        tx.insert_events(&events).await?;
    }
    if !outbox.is_empty() {
        tx.insert_outbox(&outbox).await?;
    }

    // 5. Answers, from the state of each lead after this batch.
    let mut leads: HashMap<Uuid, Arc<Lead>> = new_leads.iter().map(|l| (l.id, Arc::new(l.to_lead()))).collect();
    let ids: Vec<Uuid> = repeats.keys().copied().collect();
    for chunk in ids.chunks(256) {
        for row in tx.fetch_leads(chunk).await? {
            let lead = Lead::from(row);
            // A repeat request may have filled a missing contact: keep the search column in step.
            let u = &repeats[&lead.id];
            if u.phone.is_some() || u.email.is_some() || u.messenger.is_some() || u.name.is_some() {
                let phone = lead.phone.clone().map(voronka_domain::Phone::from_e164_unchecked);
                let s = voronka_domain::lead::search_text(
                    lead.name.as_deref(),
                    lead.company.as_deref(),
                    lead.email.as_deref(),
                    phone.as_ref(),
                    lead.messenger.as_deref(),
                );
                tx.set_search(lead.id, &s).await?;
            }
            leads.insert(lead.id, Arc::new(lead));
        }
    }
    let mut results: Vec<Option<Result<IntakeReply, IntakeError>>> = Vec::with_capacity(plans.len());
    let mut stored_bodies: Vec<(usize, u16, Arc<Vec<u8>>)> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let r = match plan {
            Plan::Stored(r) => Some(match r {
                Ok(v) => Ok(v.clone()),
                Err(_) => Err(IntakeError::IdempotencyConflict),
            }),
            Plan::FollowerOf(_) => None,
            Plan::Created(id) | Plan::Returning(id) | Plan::Repeat(id) => {
                let Some(lead) = leads.get(id) else {
                    return Err(BatchError::Conflict("lead missing after insert"));
                };
                let (outcome, status) = match plan {
                    Plan::Created(_) => (IntakeOutcome::Created, 201),
                    Plan::Returning(_) => (IntakeOutcome::Returning, 201),
                    _ => (IntakeOutcome::Repeat, 200),
                };
                // An answer that must be replayed is stored with the lead, so it is written here.
                let answer = if jobs[i].cmd.idempotency.is_some() {
                    let body = Arc::new(answer_json(lead, outcome));
                    stored_bodies.push((i, status, body.clone()));
                    Answer::Stored(body)
                } else {
                    Answer::Lead(lead.clone())
                };
                Some(Ok(IntakeReply { outcome, lead_id: Some(*id), status, answer }))
            }
        };
        results.push(r);
    }
    if !stored_bodies.is_empty() {
        let rows: Vec<IdemInsert> = stored_bodies
            .iter()
            .filter_map(|(i, s, b)| {
                jobs[*i].cmd.idempotency.as_ref().map(|k| IdemInsert {
                    key: k.scope_key.as_str(),
                    hash: &k.request_hash,
                    status: *s,
                    body: b.as_slice(),
                })
            })
            .collect();
        tx.insert_idem(&rows, now).await?;
    }
    let t1 = std::time::Instant::now();
    tx.commit_tx().await?;
    tracing::debug!(
        n = jobs.len(),
        micros = t0.elapsed().as_micros() as u64,
        commit_micros = t1.elapsed().as_micros() as u64,
        "intake batch committed"
    );

    // Followers answer as their leader did (a replay), or 409 for a different body.
    let follower_replies: Vec<Option<Result<IntakeReply, IntakeError>>> = plans
        .iter()
        .enumerate()
        .map(|(i, plan)| match plan {
            Plan::FollowerOf(leader) => {
                let hash = |j: usize| jobs[j].cmd.idempotency.as_ref().map(|k| k.request_hash);
                Some(match &results[*leader] {
                    Some(Ok(r)) if hash(*leader) == hash(i) => {
                        Ok(IntakeReply { outcome: IntakeOutcome::Replayed, lead_id: r.lead_id, status: r.status, answer: r.answer.clone() })
                    }
                    _ => Err(IntakeError::IdempotencyConflict),
                })
            }
            _ => None,
        })
        .collect();
    let out: Results = follower_replies
        .into_iter()
        .zip(results)
        .map(|(follower, own)| follower.or(own).unwrap_or_else(|| Err(IntakeError::Storage(anyhow::anyhow!("no result")))))
        .collect();
    Ok(out)
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
