//! The intake writer: every lead submission is resolved against known identities and
//! committed — lead, timeline event and outbox row — in one transaction, before anyone is
//! answered. Concurrent submissions are batched into one transaction (group commit), so one
//! fsync acknowledges many leads.
//!
//! Dedup is enforced by the database: `identities.ident` is a primary key, so two
//! submissions with one phone that race in two processes cannot both create a lead; the
//! loser's transaction fails on the key, is retried, and finds the winner's lead.

use crate::db::{Db, is_retryable};
use anyhow::Context;
use crate::leads::{LEAD_COLUMNS, Lead, LeadRow};
use crate::ts::Ts;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{Postgres, QueryBuilder, Sqlite, Transaction};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;
use voronka_domain::{Clock, LeadStatus, NewLead};

/// Most submissions committed in one transaction (bounded by bind-parameter limits).
const MAX_BATCH: usize = 256;
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

/// The committed answer: HTTP status and JSON body (stored as is for idempotent replays).
#[derive(Debug, Clone)]
pub struct IntakeReply {
    pub outcome: IntakeOutcome,
    pub lead_id: Option<Uuid>,
    pub status: u16,
    pub body: Arc<Vec<u8>>,
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

struct Job {
    cmd: IntakeCommand,
    received: Ts,
    reply: oneshot::Sender<Result<IntakeReply, IntakeError>>,
}

/// Hands submissions to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct IntakeHandle {
    tx: mpsc::Sender<Job>,
    clock: Arc<dyn Clock>,
}

impl IntakeHandle {
    /// Commits the submission and returns the answer once it is durable.
    pub async fn submit(&self, cmd: IntakeCommand) -> Result<IntakeReply, IntakeError> {
        let (reply, rx) = oneshot::channel();
        let job = Job { cmd, received: Ts::from(self.clock.now()), reply };
        self.tx.send(job).await.map_err(|_| IntakeError::ShuttingDown)?;
        rx.await.map_err(|_| IntakeError::ShuttingDown)?
    }
}

/// Starts the writer tasks; they stop when every handle is dropped and the queue is drained.
pub(crate) fn start(db: Db, clock: Arc<dyn Clock>, writers: usize) -> (IntakeHandle, Vec<tokio::task::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<Job>(4096);
    let rx = Arc::new(Mutex::new(rx));
    let tasks = (0..writers.max(1))
        .map(|_| {
            let (db, rx) = (db.clone(), rx.clone());
            tokio::spawn(async move { writer_loop(db, rx).await })
        })
        .collect();
    (IntakeHandle { tx, clock }, tasks)
}

async fn writer_loop(db: Db, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
        }
        commit_jobs(&db, batch).await;
    }
}

/// Commits a batch, retrying write conflicts; when the batch keeps failing, each job is
/// committed alone so that one bad submission fails only itself.
async fn commit_jobs(db: &Db, jobs: Vec<Job>) {
    let (metas, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| ((j.cmd, j.received), j.reply)).unzip();
    match run_with_retries(db, &metas).await {
        Ok(results) => {
            for (r, tx) in results.into_iter().zip(replies) {
                let _ = tx.send(r);
            }
        }
        Err(e) if metas.len() > 1 => {
            tracing::warn!(error = %e, size = metas.len(), "intake batch failed; committing its submissions one by one");
            for (m, tx) in metas.into_iter().zip(replies) {
                let one = [m];
                let r = match run_with_retries(db, &one).await {
                    Ok(mut v) => v.pop().unwrap_or_else(|| Err(IntakeError::Storage(anyhow::anyhow!("empty result")))),
                    Err(e) => Err(IntakeError::Storage(e)),
                };
                let _ = tx.send(r);
            }
        }
        Err(e) => {
            tracing::error!(error = ?e, "intake commit failed");
            for tx in replies {
                let _ = tx.send(Err(IntakeError::Storage(anyhow::anyhow!("{e:#}"))));
            }
        }
    }
}

type Results = Vec<Result<IntakeReply, IntakeError>>;

async fn run_with_retries(db: &Db, jobs: &[(IntakeCommand, Ts)]) -> anyhow::Result<Results> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = match db {
            Db::Sqlite { write, .. } => {
                let tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(BatchError::from);
                let tx = match tx {
                    Ok(tx) => tx,
                    Err(e) if attempt < MAX_ATTEMPTS && e.is_retryable() => continue,
                    Err(e) => return Err(anyhow::Error::new(e).context("failed to begin intake transaction")),
                };
                run_batch::<Transaction<'static, Sqlite>>(tx, jobs).await
            }
            Db::Pg(pool) => {
                let tx = pool.begin().await.context("failed to begin intake transaction")?;
                run_batch::<Transaction<'static, Postgres>>(tx, jobs).await
            }
        };
        match r {
            Ok(v) => return Ok(v),
            Err(e) if attempt < MAX_ATTEMPTS && e.is_retryable() => {
                tracing::debug!(error = %e, attempt, "intake write conflict; retrying");
                let jitter = rand::random_range(0..(1u64 << attempt.min(6)));
                tokio::time::sleep(Duration::from_millis(jitter)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("failed to commit intake batch")),
        }
    }
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

/// Why a batch transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("write conflict: {0}")]
    Conflict(&'static str),
}

impl BatchError {
    fn is_retryable(&self) -> bool {
        match self {
            BatchError::Sql(e) => is_retryable(e),
            BatchError::Conflict(_) => true,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct IdentRow {
    ident: String,
    lead_id: Uuid,
    status: String,
    contact_id: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct IdemRow {
    scope_key: String,
    request_hash: Vec<u8>,
    status: i32,
    body: Vec<u8>,
}

/// A planned new lead row.
pub(crate) struct LeadInsert<'a> {
    id: Uuid,
    lead: &'a NewLead,
    returning_of: Option<Uuid>,
    contact_id: Option<Uuid>,
    search: String,
    at: Ts,
}

pub(crate) struct EventInsert {
    lead_id: Uuid,
    visitor_id: Option<String>,
    kind: &'static str,
    at: Ts,
    actor: Option<String>,
    data: Value,
}

pub(crate) struct OutboxInsert {
    topic: &'static str,
    aggregate_id: Uuid,
    payload: Value,
    at: Ts,
}

/// Contacts a repeat request may add to its lead where the lead has none.
#[derive(Default)]
pub(crate) struct RepeatUpdate {
    count: i32,
    at: Option<Ts>,
    phone: Option<String>,
    email: Option<String>,
    messenger: Option<String>,
    name: Option<String>,
}

/// The statements of the intake transaction, one implementation per backend (see the macro
/// below: one SQL text serves both).
#[allow(async_fn_in_trait)]
pub(crate) trait IntakeTx: Send + Sized {
    async fn idem_lookup(&mut self, keys: &[&str]) -> sqlx::Result<Vec<IdemRow>>;
    async fn identity_lookup(&mut self, idents: &[&str]) -> sqlx::Result<Vec<IdentRow>>;
    async fn insert_leads(&mut self, rows: &[LeadInsert<'_>]) -> sqlx::Result<()>;
    async fn insert_identities(&mut self, rows: &[(&str, Uuid)], at: Ts) -> sqlx::Result<()>;
    async fn repoint_identity(&mut self, ident: &str, from: Uuid, to: Uuid) -> sqlx::Result<u64>;
    async fn apply_repeat(&mut self, lead_id: Uuid, u: &RepeatUpdate) -> sqlx::Result<u64>;
    async fn set_search(&mut self, lead_id: Uuid, search: &str) -> sqlx::Result<()>;
    async fn join_visitor_events(&mut self, visitor_id: &str, lead_id: Uuid) -> sqlx::Result<()>;
    async fn insert_events(&mut self, rows: &[EventInsert]) -> sqlx::Result<()>;
    async fn insert_outbox(&mut self, rows: &[OutboxInsert]) -> sqlx::Result<()>;
    async fn fetch_leads(&mut self, ids: &[Uuid]) -> sqlx::Result<Vec<LeadRow>>;
    async fn insert_idem(&mut self, rows: &[(&str, &[u8; 32], u16, &[u8])], at: Ts) -> sqlx::Result<()>;
    async fn commit_tx(self) -> sqlx::Result<()>;
}

macro_rules! impl_intake_tx {
    ($db:ty) => {
        impl<'c> IntakeTx for Transaction<'c, $db> {
            async fn idem_lookup(&mut self, keys: &[&str]) -> sqlx::Result<Vec<IdemRow>> {
                let mut qb = QueryBuilder::<$db>::new(
                    "SELECT scope_key, request_hash, status, body FROM idempotency_keys WHERE scope_key IN (",
                );
                let mut sep = qb.separated(", ");
                for k in keys {
                    sep.push_bind(*k);
                }
                qb.push(")");
                qb.build_query_as().persistent(false).fetch_all(&mut **self).await
            }

            async fn identity_lookup(&mut self, idents: &[&str]) -> sqlx::Result<Vec<IdentRow>> {
                let mut qb = QueryBuilder::<$db>::new(
                    "SELECT i.ident, i.lead_id, l.status, l.contact_id FROM identities i JOIN leads l ON l.id = i.lead_id WHERE i.ident IN (",
                );
                let mut sep = qb.separated(", ");
                for k in idents {
                    sep.push_bind(*k);
                }
                qb.push(")");
                qb.build_query_as().persistent(false).fetch_all(&mut **self).await
            }

            async fn insert_leads(&mut self, rows: &[LeadInsert<'_>]) -> sqlx::Result<()> {
                let mut qb = QueryBuilder::<$db>::new(
                    "INSERT INTO leads (id, name, phone, email, messenger, company, position, city, interest, message, budget, \
                     channel, campaign, source, utm_source, utm_medium, utm_campaign, utm_content, utm_term, referrer, landing_page, \
                     tracking_number, visitor_id, external_id, fields, consent_marketing, consent_text, consent_at, status, \
                     returning_of, contact_id, search, created_at, updated_at, last_request_at) ",
                );
                qb.push_values(rows, |mut b, r| {
                    let l = r.lead;
                    b.push_bind(r.id)
                        .push_bind(l.name.as_deref())
                        .push_bind(l.phone.as_ref().map(|p| p.as_str()))
                        .push_bind(l.email.as_ref().map(|e| e.as_str()))
                        .push_bind(l.messenger.as_ref().map(|m| m.as_str()))
                        .push_bind(l.company.as_deref())
                        .push_bind(l.position.as_deref())
                        .push_bind(l.city.as_deref())
                        .push_bind(l.interest.as_deref())
                        .push_bind(l.message.as_deref())
                        .push_bind(l.budget)
                        .push_bind(l.channel.as_str())
                        .push_bind(l.campaign.as_deref())
                        .push_bind(l.source.as_deref())
                        .push_bind(l.utm.source.as_deref())
                        .push_bind(l.utm.medium.as_deref())
                        .push_bind(l.utm.campaign.as_deref())
                        .push_bind(l.utm.content.as_deref())
                        .push_bind(l.utm.term.as_deref())
                        .push_bind(l.referrer.as_deref())
                        .push_bind(l.landing_page.as_deref())
                        .push_bind(l.tracking_number.as_ref().map(|p| p.as_str()))
                        .push_bind(l.visitor_id.as_deref())
                        .push_bind(l.external_id.as_deref())
                        .push_bind(Value::Object(l.fields.clone()))
                        .push_bind(l.consent.as_ref().map(|c| c.marketing))
                        .push_bind(l.consent.as_ref().and_then(|c| c.text.as_deref()))
                        .push_bind(l.consent.as_ref().and_then(|c| c.at).map(Ts::from))
                        .push_bind(LeadStatus::New.as_str())
                        .push_bind(r.returning_of)
                        .push_bind(r.contact_id)
                        .push_bind(r.search.as_str())
                        .push_bind(r.at)
                        .push_bind(r.at)
                        .push_bind(r.at);
                });
                qb.build().persistent(false).execute(&mut **self).await.map(|_| ())
            }

            async fn insert_identities(&mut self, rows: &[(&str, Uuid)], at: Ts) -> sqlx::Result<()> {
                let mut qb = QueryBuilder::<$db>::new("INSERT INTO identities (ident, kind, lead_id, created_at) ");
                qb.push_values(rows, |mut b, (ident, lead)| {
                    let kind = ident.split_once(':').map(|(k, _)| k).unwrap_or("other");
                    b.push_bind(*ident).push_bind(kind).push_bind(*lead).push_bind(at);
                });
                qb.build().persistent(false).execute(&mut **self).await.map(|_| ())
            }

            async fn repoint_identity(&mut self, ident: &str, from: Uuid, to: Uuid) -> sqlx::Result<u64> {
                sqlx::query("UPDATE identities SET lead_id = $1 WHERE ident = $2 AND lead_id = $3")
                    .bind(to)
                    .bind(ident)
                    .bind(from)
                    .execute(&mut **self)
                    .await
                    .map(|r| r.rows_affected())
            }

            async fn apply_repeat(&mut self, lead_id: Uuid, u: &RepeatUpdate) -> sqlx::Result<u64> {
                sqlx::query(
                    "UPDATE leads SET repeat_count = repeat_count + $1, last_request_at = $2, updated_at = $2, \
                     phone = COALESCE(phone, $3), email = COALESCE(email, $4), messenger = COALESCE(messenger, $5), \
                     name = COALESCE(name, $6) WHERE id = $7",
                )
                .bind(u.count)
                .bind(u.at)
                .bind(u.phone.as_deref())
                .bind(u.email.as_deref())
                .bind(u.messenger.as_deref())
                .bind(u.name.as_deref())
                .bind(lead_id)
                .execute(&mut **self)
                .await
                .map(|r| r.rows_affected())
            }

            async fn set_search(&mut self, lead_id: Uuid, search: &str) -> sqlx::Result<()> {
                sqlx::query("UPDATE leads SET search = $1 WHERE id = $2")
                    .bind(search)
                    .bind(lead_id)
                    .execute(&mut **self)
                    .await
                    .map(|_| ())
            }

            async fn join_visitor_events(&mut self, visitor_id: &str, lead_id: Uuid) -> sqlx::Result<()> {
                sqlx::query("UPDATE events SET lead_id = $1 WHERE visitor_id = $2 AND lead_id IS NULL")
                    .bind(lead_id)
                    .bind(visitor_id)
                    .execute(&mut **self)
                    .await
                    .map(|_| ())
            }

            async fn insert_events(&mut self, rows: &[EventInsert]) -> sqlx::Result<()> {
                let mut qb = QueryBuilder::<$db>::new("INSERT INTO events (lead_id, visitor_id, kind, at, actor, data, created_at) ");
                qb.push_values(rows, |mut b, e| {
                    b.push_bind(e.lead_id)
                        .push_bind(e.visitor_id.as_deref())
                        .push_bind(e.kind)
                        .push_bind(e.at)
                        .push_bind(e.actor.as_deref())
                        .push_bind(&e.data)
                        .push_bind(e.at);
                });
                qb.build().persistent(false).execute(&mut **self).await.map(|_| ())
            }

            async fn insert_outbox(&mut self, rows: &[OutboxInsert]) -> sqlx::Result<()> {
                let mut qb = QueryBuilder::<$db>::new("INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) ");
                qb.push_values(rows, |mut b, o| {
                    b.push_bind(o.topic).push_bind(o.aggregate_id).push_bind(&o.payload).push_bind(o.at).push_bind(o.at);
                });
                qb.build().persistent(false).execute(&mut **self).await.map(|_| ())
            }

            async fn fetch_leads(&mut self, ids: &[Uuid]) -> sqlx::Result<Vec<LeadRow>> {
                let mut qb = QueryBuilder::<$db>::new(format!("SELECT {LEAD_COLUMNS} FROM leads WHERE id IN ("));
                let mut sep = qb.separated(", ");
                for id in ids {
                    sep.push_bind(*id);
                }
                qb.push(")");
                qb.build_query_as().persistent(false).fetch_all(&mut **self).await
            }

            async fn insert_idem(&mut self, rows: &[(&str, &[u8; 32], u16, &[u8])], at: Ts) -> sqlx::Result<()> {
                let mut qb =
                    QueryBuilder::<$db>::new("INSERT INTO idempotency_keys (scope_key, request_hash, status, body, created_at) ");
                qb.push_values(rows, |mut b, (k, h, s, body)| {
                    b.push_bind(*k).push_bind(h.as_slice()).push_bind(*s as i32).push_bind(*body).push_bind(at);
                });
                qb.build().persistent(false).execute(&mut **self).await.map(|_| ())
            }

            async fn commit_tx(self) -> sqlx::Result<()> {
                self.commit().await
            }
        }
    };
}

impl_intake_tx!(Sqlite);
impl_intake_tx!(Postgres);

/// The answer body of `POST /api/v1/leads`: the lead, and whether it was a repeat request.
#[derive(Serialize)]
struct Answer<'a> {
    #[serde(flatten)]
    lead: &'a Lead,
    repeat: bool,
    returning: bool,
}

enum Plan {
    /// Answered from the idempotency table.
    Stored(Result<IntakeReply, IntakeError>),
    /// Same key as an earlier job in this batch: answer as that job was answered.
    FollowerOf(usize, [u8; 32]),
    Created(Uuid),
    Returning(Uuid),
    Repeat(Uuid),
}

async fn run_batch<T: IntakeTx>(mut tx: T, jobs: &[(IntakeCommand, Ts)]) -> Result<Results, BatchError> {
    let now = jobs.iter().map(|(_, t)| *t).max().unwrap_or(Ts(chrono::Utc::now()));

    // 1. Idempotency keys seen before.
    let keys: Vec<&str> = jobs.iter().filter_map(|(c, _)| c.idempotency.as_ref().map(|k| k.scope_key.as_str())).collect();
    let stored: HashMap<String, IdemRow> = if keys.is_empty() {
        HashMap::new()
    } else {
        tx.idem_lookup(&keys).await?.into_iter().map(|r| (r.scope_key.clone(), r)).collect()
    };

    // 2. Identities already known.
    let idents_of: Vec<Vec<String>> = jobs.iter().map(|(c, _)| c.lead.identities()).collect();
    let mut all: Vec<&str> = idents_of.iter().flatten().map(String::as_str).collect();
    all.sort_unstable();
    all.dedup();
    let mut known: HashMap<String, Known> = HashMap::new();
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
    let mut events: Vec<EventInsert> = Vec::new();
    let mut outbox: Vec<OutboxInsert> = Vec::new();
    let mut visitor_joins: Vec<(String, Uuid)> = Vec::new();

    for (i, (cmd, at)) in jobs.iter().enumerate() {
        if let Some(k) = &cmd.idempotency {
            if let Some(row) = stored.get(&k.scope_key) {
                let r = if row.request_hash.as_slice() == k.request_hash.as_slice() {
                    Ok(IntakeReply {
                        outcome: IntakeOutcome::Replayed,
                        lead_id: None,
                        status: row.status as u16,
                        body: Arc::new(row.body.clone()),
                    })
                } else {
                    Err(IntakeError::IdempotencyConflict)
                };
                plans.push(Plan::Stored(r));
                continue;
            }
            if let Some(&leader) = first_with_key.get(k.scope_key.as_str()) {
                plans.push(Plan::FollowerOf(leader, k.request_hash));
                continue;
            }
            first_with_key.insert(k.scope_key.as_str(), i);
        }
        let lead = &cmd.lead;
        let idents = &idents_of[i];
        let matches: Vec<(&String, Known)> = idents.iter().filter_map(|id| known.get(id).map(|k| (id, k.clone()))).collect();
        let submission = json!({
            "channel": lead.channel, "campaign": lead.campaign, "form_id": cmd.form_id,
            "submission": lead.submission,
        });
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
            let mut data = submission;
            data["matched_by"] = json!(matched_by);
            events.push(EventInsert { lead_id: target, visitor_id: lead.visitor_id.clone(), kind: "repeat_request", at: *at, actor: cmd.actor.clone(), data });
            outbox.push(OutboxInsert { topic: "lead.repeat_request", aggregate_id: target, payload: json!({"lead_id": target}), at: *at });
            if let Some(v) = &lead.visitor_id {
                visitor_joins.push((v.clone(), target));
            }
            plans.push(Plan::Repeat(target));
            continue;
        }

        // A new lead; when the person's earlier lead is closed, it is a returning lead linked
        // to that one (and to its contact when it was converted).
        let id = Uuid::now_v7();
        let previous = matches.first().map(|(_, k)| k.clone());
        for id_str in idents {
            changes.point(&mut known, id_str, id, LeadStatus::New);
        }
        let contact_id = previous.as_ref().filter(|p| p.status == LeadStatus::Converted).and_then(|p| p.contact_id);
        new_leads.push(LeadInsert { id, lead, returning_of: previous.as_ref().map(|p| p.lead_id), contact_id, search: lead.search_text(), at: *at });
        let mut data = submission;
        data["identities"] = json!(idents);
        if let Some(p) = &previous {
            data["returning_of"] = json!(p.lead_id);
            data["previous_status"] = json!(p.status.as_str());
            events.push(EventInsert {
                lead_id: p.lead_id,
                visitor_id: None,
                kind: "lead_returned",
                at: *at,
                actor: cmd.actor.clone(),
                data: json!({"new_lead_id": id}),
            });
        }
        events.push(EventInsert { lead_id: id, visitor_id: lead.visitor_id.clone(), kind: "lead_created", at: *at, actor: cmd.actor.clone(), data });
        outbox.push(OutboxInsert {
            topic: "lead.created",
            aggregate_id: id,
            payload: json!({"lead_id": id, "returning_of": previous.as_ref().map(|p| p.lead_id)}),
            at: *at,
        });
        if let Some(v) = &lead.visitor_id {
            visitor_joins.push((v.clone(), id));
        }
        plans.push(if previous.is_some() { Plan::Returning(id) } else { Plan::Created(id) });
    }

    // 4. Write, in a fixed order of tables and keys so that concurrent writers cannot deadlock.
    if !new_leads.is_empty() {
        for chunk in new_leads.chunks(128) {
            tx.insert_leads(chunk).await?;
        }
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

    // 5. Answers, from the committed state of each lead.
    let mut ids: Vec<Uuid> = plans
        .iter()
        .filter_map(|p| match p {
            Plan::Created(id) | Plan::Returning(id) | Plan::Repeat(id) => Some(*id),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut leads: HashMap<Uuid, Lead> = HashMap::new();
    for chunk in ids.chunks(500) {
        for row in tx.fetch_leads(chunk).await? {
            leads.insert(row.id, Lead::from(row));
        }
    }
    // A repeat request may have filled a missing contact: keep the search column in step.
    for lead_id in repeats.keys() {
        if let Some(l) = leads.get(lead_id) {
            let phone = l.phone.clone().map(voronka_domain::Phone::from_e164_unchecked);
            let s = voronka_domain::lead::search_text(l.name.as_deref(), l.company.as_deref(), l.email.as_deref(), phone.as_ref(), l.messenger.as_deref());
            let u = &repeats[lead_id];
            if u.phone.is_some() || u.email.is_some() || u.messenger.is_some() || u.name.is_some() {
                tx.set_search(*lead_id, &s).await?;
            }
        }
    }
    let mut results: Vec<Option<Result<IntakeReply, IntakeError>>> = Vec::with_capacity(plans.len());
    let mut idem_rows: Vec<(usize, u16, Arc<Vec<u8>>)> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let r = match plan {
            Plan::Stored(r) => Some(match r {
                Ok(v) => Ok(v.clone()),
                Err(_) => Err(IntakeError::IdempotencyConflict),
            }),
            Plan::FollowerOf(..) => None,
            Plan::Created(id) | Plan::Returning(id) | Plan::Repeat(id) => {
                let Some(lead) = leads.get(id) else {
                    return Err(BatchError::Conflict("lead missing after insert"));
                };
                let (outcome, status) = match plan {
                    Plan::Created(_) => (IntakeOutcome::Created, 201),
                    Plan::Returning(_) => (IntakeOutcome::Returning, 201),
                    _ => (IntakeOutcome::Repeat, 200),
                };
                let body = serde_json::to_vec(&Answer {
                    lead,
                    repeat: outcome == IntakeOutcome::Repeat,
                    returning: outcome == IntakeOutcome::Returning,
                })
                .unwrap_or_default();
                let body = Arc::new(body);
                if jobs[i].0.idempotency.is_some() {
                    idem_rows.push((i, status, body.clone()));
                }
                Some(Ok(IntakeReply { outcome, lead_id: Some(*id), status, body }))
            }
        };
        results.push(r);
    }
    if !idem_rows.is_empty() {
        let rows: Vec<(&str, &[u8; 32], u16, &[u8])> = idem_rows
            .iter()
            .filter_map(|(i, s, b)| jobs[*i].0.idempotency.as_ref().map(|k| (k.scope_key.as_str(), &k.request_hash, *s, b.as_slice())))
            .collect();
        tx.insert_idem(&rows, now).await?;
    }
    tx.commit_tx().await?;

    // Followers answer as their leader did (a replay), or 409 for a different body.
    let mut out: Results = Vec::with_capacity(plans.len());
    for (i, plan) in plans.iter().enumerate() {
        let r = match plan {
            Plan::FollowerOf(leader, hash) => {
                let leader_hash = jobs[*leader].0.idempotency.as_ref().map(|k| k.request_hash);
                match &results[*leader] {
                    Some(Ok(r)) if leader_hash.as_ref() == Some(hash) => {
                        Ok(IntakeReply { outcome: IntakeOutcome::Replayed, lead_id: r.lead_id, status: r.status, body: r.body.clone() })
                    }
                    Some(Ok(_)) => Err(IntakeError::IdempotencyConflict),
                    _ => Err(IntakeError::IdempotencyConflict),
                }
            }
            _ => results[i].take().unwrap_or_else(|| Err(IntakeError::Storage(anyhow::anyhow!("no result")))),
        };
        out.push(r);
    }
    Ok(out)
}

