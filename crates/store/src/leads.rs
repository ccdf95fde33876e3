//! The lead read model: one lead by id, filtered lists with cursor pagination, the timeline.

use crate::db::with_read;
use crate::scoring::{micros, score_now};
use crate::ts::Ts;
use crate::users::Access;
use crate::{Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use sqlx::QueryBuilder;
use uuid::Uuid;
use voronka_domain::LeadStatus;
use voronka_domain::scoring::{Micros, Model, decode_ledger};

/// The columns of `leads` that the read model shows, in one place for every query.
pub(crate) const LEAD_COLUMNS: &str = "l.id, l.name, l.phone, l.email, l.messenger, l.company, l.position, l.city, \
    l.interest, l.message, l.budget, l.channel, l.campaign, l.source, l.utm_source, l.utm_medium, l.utm_campaign, \
    l.utm_content, l.utm_term, l.referrer, l.landing_page, l.tracking_number, l.visitor_id, l.external_id, l.fields, \
    l.consent_marketing, l.consent_text, l.consent_at, l.status, l.status_reason, l.owner_id, l.repeat_count, \
    l.returning_of, l.contact_id, l.created_at, l.updated_at, l.last_request_at, s.ledger, s.model_version, \
    l.assigned_at, l.sla_due_at, l.first_touch_at";

/// `leads l` with its score: every query of `LEAD_COLUMNS` reads from this.
pub(crate) const LEAD_FROM: &str = "leads l LEFT JOIN lead_scores s ON s.lead_id = l.id";

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct LeadRow {
    pub id: Uuid,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub messenger: Option<String>,
    pub company: Option<String>,
    pub position: Option<String>,
    pub city: Option<String>,
    pub interest: Option<String>,
    pub message: Option<String>,
    pub budget: Option<f64>,
    pub channel: String,
    pub campaign: Option<String>,
    pub source: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_content: Option<String>,
    pub utm_term: Option<String>,
    pub referrer: Option<String>,
    pub landing_page: Option<String>,
    pub tracking_number: Option<String>,
    pub visitor_id: Option<String>,
    pub external_id: Option<String>,
    pub fields: Value,
    pub consent_marketing: Option<bool>,
    pub consent_text: Option<String>,
    pub consent_at: Option<Ts>,
    pub status: String,
    pub status_reason: Option<String>,
    pub owner_id: Option<Uuid>,
    pub repeat_count: i32,
    pub returning_of: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub last_request_at: Ts,
    pub ledger: Option<Vec<u8>>,
    pub model_version: Option<i64>,
    pub assigned_at: Option<Ts>,
    pub sla_due_at: Option<Ts>,
    pub first_touch_at: Option<Ts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Utm {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub content: Option<String>,
    pub term: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConsentView {
    pub marketing: bool,
    pub text: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub at: Option<Ts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OwnerRef {
    pub id: Uuid,
}

/// A lead as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Lead {
    pub id: Uuid,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub messenger: Option<String>,
    pub company: Option<String>,
    pub position: Option<String>,
    pub city: Option<String>,
    pub interest: Option<String>,
    pub message: Option<String>,
    pub budget: Option<f64>,
    pub status: String,
    pub status_reason: Option<String>,
    #[serde(serialize_with = "one_decimal")]
    pub score: f64,
    #[serde(serialize_with = "one_decimal")]
    pub priority: f64,
    pub temperature: String,
    pub grade: String,
    pub owner: Option<OwnerRef>,
    pub channel: String,
    pub campaign: Option<String>,
    pub source: Option<String>,
    pub utm: Utm,
    pub referrer: Option<String>,
    pub landing_page: Option<String>,
    pub tracking_number: Option<String>,
    pub visitor_id: Option<String>,
    pub external_id: Option<String>,
    #[schema(value_type = Object)]
    pub fields: Value,
    pub consent: Option<ConsentView>,
    pub repeat_count: i32,
    pub returning_of: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Ts,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Ts,
    #[schema(value_type = String, format = DateTime)]
    pub last_request_at: Ts,
    /// When the current owner got the lead.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub assigned_at: Option<Ts>,
    /// The first-touch deadline of the current owner (none once touched in time, or with
    /// nobody left to escalate to).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sla_due_at: Option<Ts>,
    /// The current owner's first call, e-mail, chat reply or meeting; kept once set.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub first_touch_at: Option<Ts>,
}

fn one_decimal<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((v * 10.0).round() / 10.0)
}

impl LeadRow {
    /// The lead as the API shows it, its score evaluated at `now` with `model`.
    pub(crate) fn into_lead(self, model: &Model, now: Micros) -> Lead {
        let ledger = self.ledger.as_deref().map(decode_ledger).unwrap_or_default();
        let s = score_now(model, &ledger, now);
        let r = self;
        Lead {
            id: r.id,
            name: r.name,
            phone: r.phone,
            email: r.email,
            messenger: r.messenger,
            company: r.company,
            position: r.position,
            city: r.city,
            interest: r.interest,
            message: r.message,
            budget: r.budget,
            status: r.status,
            status_reason: r.status_reason,
            score: s.score,
            priority: s.priority,
            temperature: s.temperature.as_str().to_string(),
            grade: s.grade.as_str().to_string(),
            owner: r.owner_id.map(|id| OwnerRef { id }),
            channel: r.channel,
            campaign: r.campaign,
            source: r.source,
            utm: Utm { source: r.utm_source, medium: r.utm_medium, campaign: r.utm_campaign, content: r.utm_content, term: r.utm_term },
            referrer: r.referrer,
            landing_page: r.landing_page,
            tracking_number: r.tracking_number,
            visitor_id: r.visitor_id,
            external_id: r.external_id,
            fields: r.fields,
            consent: r.consent_marketing.map(|marketing| ConsentView { marketing, text: r.consent_text, at: r.consent_at }),
            repeat_count: r.repeat_count,
            returning_of: r.returning_of,
            contact_id: r.contact_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_request_at: r.last_request_at,
            assigned_at: r.assigned_at,
            sla_due_at: r.sla_due_at,
            first_touch_at: r.first_touch_at,
        }
    }
}

/// How a list is ordered; every order is newest-first within equal values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadSort {
    /// Newest first.
    #[default]
    Created,
    /// Oldest first.
    CreatedAsc,
    /// Highest score first.
    Score,
    /// Highest priority first (score plus recent points).
    Priority,
}

impl LeadSort {
    pub fn parse(s: &str) -> Option<LeadSort> {
        match s {
            "created" | "-created_at" | "created_desc" => Some(LeadSort::Created),
            "created_asc" | "created_at" => Some(LeadSort::CreatedAsc),
            "score" | "-score" => Some(LeadSort::Score),
            "priority" | "-priority" => Some(LeadSort::Priority),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LeadFilter {
    /// Whose leads may be listed (enforced here, for lists and search alike).
    pub access: Access,
    pub status: Vec<LeadStatus>,
    /// `Some(None)` asks for leads without an owner.
    pub owner: Option<Option<Uuid>>,
    pub channel: Vec<String>,
    /// hot, warm or cold, as of the last stored score (refreshed as time passes).
    pub temperature: Vec<String>,
    pub campaign: Option<String>,
    /// Already turned into what the search column holds (see `voronka_domain::lead::search_needle`).
    pub q: Option<String>,
    /// The search typed was a whole phone number or e-mail address (normalised): the leads
    /// holding exactly it, found through the search index (see `Store::leads`).
    pub q_contact: Option<ExactContact>,
    pub min_score: Option<f64>,
    /// Leave out leads waiting for triage (they have their own list).
    pub no_triage: bool,
    pub created_from: Option<Ts>,
    pub created_to: Option<Ts>,
    pub sort: LeadSort,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

impl LeadFilter {
    /// What a lead's search column holds when it matches the search: for a whole phone or
    /// e-mail, its form as `voronka_domain::lead::search_text` writes it.
    fn needle(&self) -> Option<String> {
        match &self.q_contact {
            Some(ExactContact::Phone(p)) => voronka_domain::Phone::from_e164_unchecked(p.clone()).search_forms().into_iter().next(),
            Some(ExactContact::Email(e)) => Some(e.to_lowercase()),
            None => self.q.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExactContact {
    /// E.164.
    Phone(String),
    Email(String),
}

/// How a lead list is read (see `Store::leads`).
enum Plan {
    /// From the score index down (within `key`), stopping at `bound` (inclusive) when given.
    Walk { bound: Option<(f64, Uuid)>, key: WalkKey },
    /// The filters' matches, sorted.
    FilterFirst,
}

/// Which score index a priority walk goes down: the one of an owner (a manager's own leads,
/// or the unowned ones), of one state, or of all leads.
#[derive(Debug, Clone, Copy, PartialEq)]
enum WalkKey {
    All,
    Owner(Option<Uuid>),
    Status(LeadStatus),
}

impl WalkKey {
    fn of(f: &LeadFilter) -> WalkKey {
        if f.sort != LeadSort::Priority {
            return WalkKey::All;
        }
        match (f.owner, &f.access) {
            (Some(o), _) => WalkKey::Owner(o),
            (None, Access::Own(u)) => WalkKey::Owner(Some(*u)),
            _ if f.status.len() == 1 => WalkKey::Status(f.status[0]),
            _ => WalkKey::All,
        }
    }

    /// The score table as the walk reads it (on SQLite, which has no statistics to choose
    /// by, named with the index to go down).
    fn table(self, sqlite: bool) -> &'static str {
        match (self, sqlite) {
            (WalkKey::Owner(_), true) => "lead_scores s INDEXED BY lead_scores_owner",
            (WalkKey::Status(_), true) => "lead_scores s INDEXED BY lead_scores_status",
            _ => "lead_scores s",
        }
    }
}

/// Appends the condition of a walk's key (a macro, as the query builder's database type
/// differs per backend).
macro_rules! push_walk_key {
    ($qb:ident, $key:expr) => {{
        match $key {
            WalkKey::All => {}
            WalkKey::Owner(Some(o)) => {
                $qb.push(" AND s.owner_id = ").push_bind(o);
            }
            WalkKey::Owner(None) => {
                $qb.push(" AND s.owner_id IS NULL");
            }
            WalkKey::Status(st) => {
                $qb.push(" AND s.status = ").push_bind(st.as_str());
            }
        }
    }};
}

/// Where the previous page ended: the sort value and id of its last lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    #[serde(rename = "v")]
    pub value: f64,
    #[serde(rename = "t")]
    pub created_us: i64,
    #[serde(rename = "i")]
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
    pub fn decode(s: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LeadPage {
    pub items: Vec<Lead>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineItem {
    #[serde(skip)]
    pub id: i64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Ts,
    pub kind: String,
    pub actor: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    /// On a contact's timeline: the lead the entry belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lead_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelinePage {
    pub items: Vec<TimelineItem>,
    pub next_cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
struct SortedRow {
    #[sqlx(flatten)]
    row: LeadRow,
    sort_value: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    lead_id: Uuid,
    at: Ts,
    kind: String,
    actor: Option<String>,
    data: Value,
}

/// The FTS5 query finding `needle` as a substring through the trigram index: a quoted
/// phrase; none under 3 characters, which the index cannot narrow.
fn trigram_phrase(needle: &str) -> Option<String> {
    // FTS5 reads its query up to a NUL: such a needle is left to the direct look.
    (needle.chars().count() >= 3 && !needle.contains('\0')).then(|| format!("\"{}\"", needle.replace('"', "\"\"")))
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Appends the list filters of `$f` to a query over `leads l` joined with `lead_scores s`.
/// `$plus` is `"+"` to keep SQLite off the leads indexes (see `Store::leads`), else `""`.
/// A macro, as the query builder's database type differs per backend.
macro_rules! push_lead_filters {
    ($qb:ident, $f:expr, $like:expr, $plus:expr) => {{
        let (f, plus) = ($f, $plus);
        if !f.status.is_empty() {
            $qb.push(format!(" AND {plus}l.status IN ("));
            let mut sep = $qb.separated(", ");
            for s in &f.status {
                sep.push_bind(s.as_str());
            }
            $qb.push(")");
        }
        match f.owner {
            Some(Some(o)) => {
                $qb.push(format!(" AND {plus}l.owner_id = ")).push_bind(o);
            }
            Some(None) => {
                $qb.push(format!(" AND {plus}l.owner_id IS NULL"));
            }
            None => {}
        }
        if !f.channel.is_empty() {
            $qb.push(format!(" AND {plus}l.channel IN ("));
            let mut sep = $qb.separated(", ");
            for c in &f.channel {
                sep.push_bind(c.as_str());
            }
            $qb.push(")");
        }
        if let Some(c) = &f.campaign {
            $qb.push(format!(" AND {plus}l.campaign = ")).push_bind(c.as_str());
        }
        if !f.temperature.is_empty() {
            // A lead without a score row counts as cold; without `cold` in the list the plain
            // column gives the planner its statistics.
            if f.temperature.iter().any(|t| t == "cold") {
                $qb.push(" AND COALESCE(s.temperature, 'cold') IN (");
            } else {
                $qb.push(" AND s.temperature IN (");
            }
            let mut sep = $qb.separated(", ");
            for t in &f.temperature {
                sep.push_bind(t.as_str());
            }
            $qb.push(")");
        }
        // A whole phone or e-mail is matched exactly; the search column, which holds it,
        // lets the trigram index find the candidates (see `Store::leads`).
        match &f.q_contact {
            Some(ExactContact::Phone(p)) => {
                $qb.push(" AND l.phone = ").push_bind(p.as_str());
            }
            Some(ExactContact::Email(e)) => {
                $qb.push(" AND l.email = ").push_bind(e.as_str());
            }
            None => {}
        }
        if let Some(l) = $like {
            $qb.push(" AND l.search LIKE ").push_bind(l).push(" ESCAPE '\\'");
        }
        if let Some(m) = f.min_score {
            $qb.push(" AND COALESCE(s.score, 0) >= ").push_bind(m);
        }
        if f.no_triage {
            $qb.push(" AND l.triage IS NULL");
        }
        if let Some(t) = f.created_from {
            $qb.push(format!(" AND {plus}l.created_at >= ")).push_bind(t);
        }
        if let Some(t) = f.created_to {
            $qb.push(format!(" AND {plus}l.created_at < ")).push_bind(t);
        }
    }};
}

impl Store {
    /// A stored row as the API shows it, scored now with the model its ledger was made with.
    pub(crate) async fn lead_of(&self, row: LeadRow) -> Result<Lead, StoreError> {
        let version = row.model_version.unwrap_or(0);
        let model = if version == 0 { self.models.active().1 } else { self.model_version(version).await? };
        Ok(row.into_lead(&model, micros(self.now())))
    }

    /// A lead, when `access` may see it.
    pub async fn lead_as(&self, id: Uuid, access: &Access) -> Result<Option<Lead>, StoreError> {
        let sql = format!("SELECT {LEAD_COLUMNS} FROM {LEAD_FROM} WHERE l.id = $1 AND {}", self.access_sql(access));
        let row: Option<LeadRow> = with_read!(&self.db, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await?
        });
        Ok(match row {
            Some(r) => Some(self.lead_of(r).await?),
            None => None,
        })
    }

    /// Whether `access` may see the lead (the check every lead endpoint makes first).
    pub async fn can_see(&self, id: Uuid, access: &Access) -> Result<bool, StoreError> {
        if *access == Access::All {
            let n: i64 = with_read!(&self.db, p => { sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM leads WHERE id = $1").bind(id).fetch_one(p).await? });
            return Ok(n > 0);
        }
        let sql = format!("SELECT COUNT(*) FROM leads l WHERE l.id = $1 AND {}", self.access_sql(access));
        let n: i64 = with_read!(&self.db, p => { sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(p).await? });
        Ok(n > 0)
    }

    pub async fn lead(&self, id: Uuid) -> Result<Option<Lead>, StoreError> {
        let sql = format!("SELECT {LEAD_COLUMNS} FROM {LEAD_FROM} WHERE l.id = $1");
        let row: Option<LeadRow> = with_read!(&self.db, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await?
        });
        Ok(match row {
            Some(r) => Some(self.lead_of(r).await?),
            None => None,
        })
    }

    pub async fn leads(&self, f: &LeadFilter) -> Result<LeadPage, StoreError> {
        let limit = f.limit.clamp(1, 500) as i64;
        let needle = f.needle();
        let like = needle.as_deref().map(escape_like);
        let phrase = needle.as_deref().and_then(trigram_phrase);
        // Score and priority lists walk the score index: a page costs about the rows it
        // skips. PostgreSQL's planner weighs that against the filters' and the search's
        // indexes with its statistics. SQLite has none, so it is told: an exact phone or
        // e-mail is looked up in the trigram index (it has no index of its own: one cost
        // every new lead an insert at a random place) and checked against the lead's column;
        // words held by few leads (counted in the trigram
        // index, up to half the walk) are read through it; otherwise `+` keeps it off the
        // leads indexes, and the walk — checking the filters and the words on the way — is
        // bounded to `list_walk_rows` index entries; when fewer rows than a page match within
        // them, the filters are rare and the matches are read through the filters' (or the
        // words') indexes and sorted instead.
        let by_score = matches!(f.sort, LeadSort::Score | LeadSort::Priority);
        let (like, phrase) = (like.as_deref(), phrase.as_deref());
        let rows = if !by_score {
            self.lead_rows(f, like, phrase, limit, Plan::FilterFirst).await?
        } else if !self.db.is_sqlite() {
            self.lead_rows(f, like, phrase, limit, Plan::Walk { bound: None, key: WalkKey::of(f) }).await?
        } else if f.q_contact.is_some() {
            self.lead_rows(f, like, phrase, limit, Plan::FilterFirst).await?
        } else if let Some(phrase) = phrase
            && self.word_matches(phrase, self.list_walk_rows / 2).await? < self.list_walk_rows / 2
        {
            // Few leads hold the words: read them through the trigram index and sort them.
            self.lead_rows(f, like, Some(phrase), limit, Plan::FilterFirst).await?
        } else {
            let key = WalkKey::of(f);
            let bound = self.walk_bound(f, key).await?;
            let rows = self.lead_rows(f, like, phrase, limit, Plan::Walk { bound, key }).await?;
            if rows.len() as i64 > limit || bound.is_none() {
                rows
            } else {
                self.lead_rows(f, like, phrase, limit, Plan::FilterFirst).await?
            }
        };
        let more = rows.len() as i64 > limit;
        let mut sort_values = Vec::with_capacity(rows.len());
        let mut items: Vec<Lead> = Vec::with_capacity(rows.len());
        for r in rows.into_iter().take(limit as usize) {
            sort_values.push(r.sort_value);
            items.push(self.lead_of(r.row).await?);
        }
        let next_cursor = if more {
            items
                .last()
                .zip(sort_values.last())
                .map(|(l, v)| Cursor { value: v.unwrap_or(0.0), created_us: l.created_at.micros(), id: l.id }.encode())
        } else {
            None
        };
        Ok(LeadPage { items, next_cursor })
    }

    /// Adds up to `batch` leads not yet in the trigram index (SQLite; PostgreSQL's index is
    /// kept by the database itself) to it, and to the dashboard's arrival counts, in one
    /// transaction; the number added, 0 when both are up to date.
    ///
    /// Written through the bookkeeping connection (see `Store::bookkeeping`): the index is
    /// derived data, and its batch and the mark saying how far it got are one transaction,
    /// so a crash that loses the last batch only means those leads are indexed again. With
    /// an fsync of its own the batch held the write lock 3–37 ms under load for 1 ms of
    /// work, and the intake waited that long.
    pub async fn index_words(&self, batch: i64) -> Result<usize, StoreError> {
        Ok(self.index_words_timed(batch).await?.0)
    }

    /// `index_words`, also saying how long the batch held the write lock.
    pub async fn index_words_timed(&self, batch: i64) -> Result<(usize, std::time::Duration), StoreError> {
        let crate::db::Db::Sqlite { .. } = &self.db else { return Ok((0, std::time::Duration::ZERO)) };
        let batch = batch.max(1);
        self.bookkeeping(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let held = std::time::Instant::now();
            let from: i64 = tx.query_row("SELECT indexed_to FROM lead_words_state", [], |r| r.get(0))?;
            let (to, n): (Option<i64>, i64) = tx.query_row(
                "SELECT MAX(rowid), COUNT(*) FROM (SELECT rowid FROM leads WHERE rowid > ?1 ORDER BY rowid LIMIT ?2)",
                [from, batch],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let Some(to) = to else { return Ok((0, held.elapsed())) };
            tx.execute(
                "INSERT INTO lead_words (rowid, search) SELECT rowid, search FROM leads WHERE rowid > ?1 AND rowid <= ?2",
                [from, to],
            )?;
            // The dashboard's counts share the mark (migration 0018).
            tx.execute(
                "INSERT INTO arrivals_by_channel (hour, channel, n) \
                 SELECT created_at / 3600000000, channel, COUNT(*) FROM leads WHERE rowid > ?1 AND rowid <= ?2 GROUP BY 1, 2 \
                 ON CONFLICT (hour, channel) DO UPDATE SET n = n + excluded.n",
                [from, to],
            )?;
            tx.execute(
                "INSERT INTO arrivals_by_status (hour, status, n) \
                 SELECT created_at / 3600000000, status, COUNT(*) FROM leads WHERE rowid > ?1 AND rowid <= ?2 GROUP BY 1, 2 \
                 ON CONFLICT (hour, status) DO UPDATE SET n = n + excluded.n",
                [from, to],
            )?;
            tx.execute("UPDATE lead_words_state SET indexed_to = ?1", [to])?;
            tx.commit()?;
            let held = held.elapsed();
            tracing::debug!(leads = n, held_us = held.as_micros() as u64, "search index batch");
            Ok((n as usize, held))
        })
        .await
    }

    /// Empties the search index and the dashboard's arrival counts and sets their mark back
    /// to 0, so that `index_words` builds both anew from the leads; false on PostgreSQL,
    /// whose index the database keeps itself. Both are keyed by the leads' rowids: for a
    /// database whose rowids were renumbered (a `VACUUM`, a dump loaded without
    /// `--preserve-rowids`) or whose derived data is in doubt (`voronka reindex`).
    pub async fn reset_search_index(&self) -> Result<bool, StoreError> {
        let crate::db::Db::Sqlite { write, .. } = &self.db else { return Ok(false) };
        let mut tx = write.begin().await?;
        sqlx::query("INSERT INTO lead_words (lead_words) VALUES ('delete-all')").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM arrivals_by_channel").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM arrivals_by_status").execute(&mut *tx).await?;
        sqlx::query("UPDATE lead_words_state SET indexed_to = 0").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// How many leads are not in the search index yet (SQLite; 0 on PostgreSQL).
    pub async fn unindexed_leads(&self) -> Result<i64, StoreError> {
        let crate::db::Db::Sqlite { read, .. } = &self.db else { return Ok(0) };
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM leads WHERE rowid > (SELECT indexed_to FROM lead_words_state)").fetch_one(read).await?)
    }

    /// How many leads' search text holds `phrase` (a trigram query), counted up to `cap`.
    async fn word_matches(&self, phrase: &str, cap: i64) -> Result<i64, StoreError> {
        Ok(with_read!(&self.db, p => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM (SELECT 1 FROM lead_words WHERE lead_words MATCH $1 LIMIT $2)")
                .bind(phrase).bind(cap).fetch_one(p).await?
        }))
    }

    /// The score-index entry `list_walk_rows` entries after the cursor (None when fewer are left).
    async fn walk_bound(&self, f: &LeadFilter, key: WalkKey) -> Result<Option<(f64, Uuid)>, StoreError> {
        let field = if f.sort == LeadSort::Score { "score" } else { "priority" };
        let table = key.table(self.db.is_sqlite());
        let row: Option<(f64, Uuid)> = with_read!(&self.db, p => {
            let mut qb = QueryBuilder::new(format!("SELECT CAST(s.{field} AS DOUBLE PRECISION), s.lead_id FROM {table} WHERE TRUE"));
            push_walk_key!(qb, key);
            if let Some(c) = &f.cursor {
                qb.push(format!(" AND {field} <= ")).push_bind(c.value)
                    .push(format!(" AND ({field} < ")).push_bind(c.value).push(" OR lead_id < ").push_bind(c.id).push(")");
            }
            qb.push(format!(" ORDER BY s.{field} DESC, s.lead_id DESC LIMIT 1 OFFSET ")).push_bind(self.list_walk_rows - 1);
            qb.build_query_as::<(f64, Uuid)>().fetch_optional(p).await?
        });
        Ok(row)
    }

    /// Up to `limit + 1` rows of the list, read by `plan`.
    /// `like` is the search's `LIKE` pattern, `phrase` the same as a trigram query (SQLite).
    async fn lead_rows(
        &self,
        f: &LeadFilter,
        like: Option<&str>,
        phrase: Option<&str>,
        limit: i64,
        plan: Plan,
    ) -> Result<Vec<SortedRow>, StoreError> {
        let access = self.access_sql(&f.access);
        let field = if f.sort == LeadSort::Score { "score" } else { "priority" };
        let by_score = matches!(f.sort, LeadSort::Score | LeadSort::Priority);
        let sqlite = self.db.is_sqlite();
        let (sort_col, from, tie, plus) = match (&plan, by_score) {
            (Plan::Walk { key, .. }, _) => (
                format!("s.{field}"),
                format!("{} JOIN leads l ON l.id = s.lead_id", key.table(sqlite)),
                "s.lead_id",
                if sqlite { "+" } else { "" },
            ),
            (Plan::FilterFirst, true) => (format!("COALESCE(s.{field}, 0)"), LEAD_FROM.to_string(), "l.id", ""),
            (Plan::FilterFirst, false) => ("0.0".to_string(), LEAD_FROM.to_string(), "l.id", ""),
        };
        // The leads holding a whole phone or e-mail are few: SQLite reads them from the
        // trigram index (and the leads not in it yet) first and checks the filters on them.
        // Left to itself it took a filter's index (a manager's leads, a state) whenever
        // there was one, and read every lead under it.
        let contact_first = sqlite && matches!(plan, Plan::FilterFirst) && f.q_contact.is_some();
        let rows: Vec<SortedRow> = with_read!(&self.db, p => {
            let mut qb = QueryBuilder::new(format!("SELECT {LEAD_COLUMNS}, CAST({sort_col} AS DOUBLE PRECISION) AS sort_value FROM "));
            match phrase.filter(|_| contact_first) {
                Some(phrase) => {
                    // The two parts are disjoint: the index holds the leads up to its mark.
                    qb.push("(SELECT rowid AS r FROM lead_words WHERE lead_words MATCH ")
                        .push_bind(phrase)
                        .push(" UNION ALL SELECT rowid FROM leads WHERE rowid > (SELECT indexed_to FROM lead_words_state)) w \
                               CROSS JOIN leads l ON l.rowid = w.r LEFT JOIN lead_scores s ON s.lead_id = l.id");
                }
                None => {
                    qb.push(from);
                }
            }
            qb.push(format!(" WHERE {access}"));
            push_lead_filters!(qb, f, like, plus);
            // Reading the matches first, SQLite takes them from the trigram index.
            if sqlite
                && matches!(plan, Plan::FilterFirst)
                && !contact_first
                && let Some(phrase) = phrase
            {
                qb.push(" AND l.rowid IN (SELECT rowid FROM lead_words WHERE lead_words MATCH ")
                    .push_bind(phrase)
                    .push(" UNION ALL SELECT rowid FROM leads WHERE rowid > (SELECT indexed_to FROM lead_words_state))");
            }
            if let Plan::Walk { key, .. } = &plan {
                push_walk_key!(qb, *key);
            }
            if let Plan::Walk { bound: Some((v, id)), .. } = &plan {
                // The plain `>=` lets the index range stop there; the rest makes it exact.
                qb.push(format!(" AND {sort_col} >= ")).push_bind(*v)
                    .push(format!(" AND ({sort_col} > ")).push_bind(*v).push(format!(" OR {tie} >= ")).push_bind(*id).push(")");
            }
            let (col, desc) = match f.sort {
                LeadSort::Created => ("", true),
                LeadSort::CreatedAsc => ("", false),
                LeadSort::Score | LeadSort::Priority => (sort_col.as_str(), true),
            };
            if let Some(c) = &f.cursor {
                let at = Ts::from_micros(c.created_us).unwrap_or(Ts(chrono::DateTime::UNIX_EPOCH));
                let op = if desc { "<" } else { ">" };
                // `col <= v` (or `>=`) lets an index range start there; the rest makes it exact.
                if col.is_empty() {
                    qb.push(format!(" AND l.created_at {op}= ")).push_bind(at)
                        .push(format!(" AND (l.created_at {op} ")).push_bind(at).push(format!(" OR l.id {op} ")).push_bind(c.id).push(")");
                } else {
                    qb.push(format!(" AND {col} {op}= ")).push_bind(c.value)
                        .push(format!(" AND ({col} {op} ")).push_bind(c.value).push(format!(" OR {tie} {op} ")).push_bind(c.id).push(")");
                }
            }
            let dir = if desc { "DESC" } else { "ASC" };
            if col.is_empty() {
                qb.push(format!(" ORDER BY l.created_at {dir}, l.id {dir}"));
            } else {
                qb.push(format!(" ORDER BY {col} {dir}, {tie} {dir}"));
            }
            qb.push(" LIMIT ").push_bind(limit + 1);
            qb.build_query_as::<SortedRow>().fetch_all(p).await?
        });
        Ok(rows)
    }

    /// The lead's timeline, newest first; `before` is the cursor of the previous page.
    pub async fn timeline(&self, lead_id: Uuid, limit: u32, before: Option<(Ts, i64)>) -> Result<TimelinePage, StoreError> {
        let mut page = self.timeline_of(&[lead_id], limit, before).await?;
        page.items.iter_mut().for_each(|i| i.lead_id = None);
        Ok(page)
    }

    /// The entries of several leads' timelines (a contact's leads), newest first, each
    /// naming its lead.
    pub async fn timeline_of(&self, leads: &[Uuid], limit: u32, before: Option<(Ts, i64)>) -> Result<TimelinePage, StoreError> {
        let limit = limit.clamp(1, 500) as i64;
        if leads.is_empty() {
            return Ok(TimelinePage { items: Vec::new(), next_cursor: None });
        }
        let rows: Vec<EventRow> = with_read!(&self.db, p => {
            let mut qb = QueryBuilder::new("SELECT id, lead_id, at, kind, actor, data FROM events WHERE lead_id ");
            if let [one] = leads {
                qb.push("= ").push_bind(*one);
            } else {
                qb.push("IN (");
                let mut list = qb.separated(", ");
                for l in leads {
                    list.push_bind(*l);
                }
                qb.push(")");
            }
            if let Some((at, id)) = before {
                qb.push(" AND (at < ").push_bind(at).push(" OR (at = ").push_bind(at).push(" AND id < ").push_bind(id).push("))");
            }
            qb.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(limit + 1);
            qb.build_query_as::<EventRow>().fetch_all(p).await?
        });
        let mut items: Vec<TimelineItem> = rows
            .into_iter()
            .map(|r| TimelineItem { id: r.id, at: r.at, kind: r.kind, actor: r.actor, data: r.data, lead_id: Some(r.lead_id) })
            .collect();
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|i| URL_SAFE_NO_PAD.encode(format!("{}:{}", i.at.micros(), i.id)))
        } else {
            None
        };
        Ok(TimelinePage { items, next_cursor })
    }
}

/// Reads a timeline cursor made by `timeline`.
pub fn decode_timeline_cursor(s: &str) -> Option<(Ts, i64)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    let (at, id) = raw.split_once(':')?;
    Some((Ts::from_micros(at.parse().ok()?)?, id.parse().ok()?))
}
