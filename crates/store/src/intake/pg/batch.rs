//! One PostgreSQL intake batch: its reads, its inserts deferred into one statement, and the
//! transaction begun only when something else is written.

use super::super::{
    BatchError, EventInsert, IdemInsert, IdemRow, IdentRow, ImportRowInsert, InputsRow, IntakeTx, LeadInsert, OutboxInsert, RepeatUpdate,
    ScoreRow, ScoreWrite, StatusRow, StoredEvent, TargetRow, VisitorLead,
};
use crate::leads::{LEAD_COLUMNS, LEAD_FROM, LeadRow};
use crate::ts::Ts;
use serde_json::Value;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnection};
use sqlx::{Arguments, Postgres, SqlSafeStr, Transaction};
use uuid::Uuid;

/// One batch's connection, written to with as few round trips as it can.
///
/// Inserts are deferred and sent together as one statement, each a data-modifying `WITH`
/// part (foreign keys are checked at the statement's end, so a lead and its identities may
/// share one). Reads run as they come, outside a transaction while the batch has written
/// nothing: under READ COMMITTED every statement of a transaction takes its own snapshot, so
/// such a read reads what it would have read inside one. The first other write, or a read once
/// something is deferred, begins the transaction and sends the deferred statement first; the
/// end commits it. When nothing but the inserts wrote, they are sent alone, a statement that is
/// its own transaction, durable when PostgreSQL answers it. A batch of new leads is then three
/// round trips (the model's version, the identities, the inserts) where it was nine.
pub(super) struct PgBatch {
    conn: Option<PoolConnection<Postgres>>,
    tx: Option<Transaction<'static, Postgres>>,
    parts: Vec<String>,
    args: PgArguments,
}

impl PgBatch {
    pub(super) fn new(conn: PoolConnection<Postgres>) -> PgBatch {
        PgBatch { conn: Some(conn), tx: None, parts: Vec::new(), args: PgArguments::default() }
    }

    /// The connection for a read: the transaction once one began, or once something is
    /// deferred that the read may need to see.
    async fn reader(&mut self) -> Result<&mut PgConnection, BatchError> {
        if self.tx.is_none() && self.parts.is_empty() {
            return match self.conn.as_mut() {
                Some(c) => Ok(&mut **c),
                None => Err(lost()),
            };
        }
        self.writer().await
    }

    /// The transaction, begun if need be, with the deferred inserts sent first.
    async fn writer(&mut self) -> Result<&mut PgConnection, BatchError> {
        if self.tx.is_none() {
            let conn = self.conn.take().ok_or_else(lost)?;
            // READ COMMITTED whatever the database's default: the reads before it assume so.
            self.tx = Some(Transaction::begin(conn, Some("BEGIN ISOLATION LEVEL READ COMMITTED".into_sql_str())).await?);
        }
        let Some(tx) = self.tx.as_mut() else { return Err(lost()) };
        flush(&mut self.parts, &mut self.args, tx).await?;
        Ok(&mut **tx)
    }

    /// Adds an insert to the deferred statement: `sql` numbers its parameters from `$1`, and
    /// `bind` adds them, in that order.
    fn defer(&mut self, sql: &str, bind: impl FnOnce(&mut PgArguments) -> Result<(), BoxDynError>) -> Result<(), BatchError> {
        let offset = self.args.len();
        bind(&mut self.args).map_err(|e| BatchError::Invalid(format!("failed to encode the intake rows: {e}")))?;
        self.parts.push(renumber(sql, offset));
        Ok(())
    }
}

fn lost() -> BatchError {
    BatchError::Conflict("intake connection lost")
}

/// Sends the deferred inserts, if any, as one statement.
async fn flush(parts: &mut Vec<String>, args: &mut PgArguments, conn: &mut PgConnection) -> Result<(), BatchError> {
    if parts.is_empty() {
        return Ok(());
    }
    let sql = one_statement(std::mem::take(parts));
    sqlx::query_with(sqlx::AssertSqlSafe(sql), std::mem::take(args)).execute(conn).await?;
    Ok(())
}

/// The statements as one: all but the last as `WITH` parts of the last.
fn one_statement(mut parts: Vec<String>) -> String {
    let Some(last) = parts.pop() else { return String::new() };
    let mut sql = String::with_capacity(parts.iter().map(|p| p.len() + 12).sum::<usize>() + last.len());
    for (i, p) in parts.iter().enumerate() {
        sql.push_str(if i == 0 { "WITH " } else { ", " });
        sql.push_str(&format!("w{i} AS ({p})"));
    }
    if !sql.is_empty() {
        sql.push(' ');
    }
    sql.push_str(&last);
    sql
}

/// `sql` with each parameter `$n` renamed `$(n + offset)` (intake statements hold no other `$`).
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

impl IntakeTx for PgBatch {
    async fn idem_lookup(&mut self, keys: &[&str]) -> Result<Vec<IdemRow>, BatchError> {
        Ok(sqlx::query_as("SELECT scope_key, request_hash, status, body FROM idempotency_keys WHERE scope_key = ANY($1)")
            .bind(keys)
            .fetch_all(self.reader().await?)
            .await?)
    }

    async fn identity_lookup(&mut self, idents: &[&str]) -> Result<Vec<IdentRow>, BatchError> {
        Ok(sqlx::query_as(
            "SELECT i.ident, i.lead_id, l.status, l.contact_id FROM identities i JOIN leads l ON l.id = i.lead_id WHERE i.ident = ANY($1)",
        )
        .bind(idents)
        .fetch_all(self.reader().await?)
        .await?)
    }

    async fn insert_leads(&mut self, rows: &[LeadInsert<'_>]) -> Result<(), BatchError> {
        // One array per column: a fixed statement, planned in microseconds whatever the batch size.
        fn col<'a, T>(rows: &'a [LeadInsert<'a>], f: impl Fn(&'a LeadInsert<'a>) -> T) -> Vec<T> {
            rows.iter().map(f).collect()
        }
        self.defer(
            "INSERT INTO leads (id, name, phone, email, messenger, company, position, city, interest, message, budget, \
             channel, campaign, source, utm_source, utm_medium, utm_campaign, utm_content, utm_term, referrer, landing_page, \
             tracking_number, visitor_id, external_id, fields, consent_marketing, consent_text, consent_at, status, \
             returning_of, contact_id, search, created_at, updated_at, last_request_at, triage) \
             SELECT c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19, c20, c21, c22, c23, c24, \
                    c25::jsonb, c26, c27, c28, 'new', c29, c30, c31, c32, c32, c32, \
                    (SELECT 'pending' FROM channels ch WHERE ch.code = c12 AND ch.needs_triage) \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
                         $10::text[], $11::float8[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], \
                         $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[], $25::text[], \
                         $26::bool[], $27::text[], $28::timestamptz[], $29::uuid[], $30::uuid[], $31::text[], $32::timestamptz[]) \
             AS t(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19, c20, c21, c22, c23, c24, \
                  c25, c26, c27, c28, c29, c30, c31, c32)",
            |a| {
                a.add(col(rows, |r| r.id))?;
                a.add(col(rows, |r| r.lead.name.as_deref()))?;
                a.add(col(rows, |r| r.lead.phone.as_ref().map(|p| p.as_str())))?;
                a.add(col(rows, |r| r.lead.email.as_ref().map(|e| e.as_str())))?;
                a.add(col(rows, |r| r.lead.messenger.as_ref().map(|m| m.as_str())))?;
                a.add(col(rows, |r| r.lead.company.as_deref()))?;
                a.add(col(rows, |r| r.lead.position.as_deref()))?;
                a.add(col(rows, |r| r.lead.city.as_deref()))?;
                a.add(col(rows, |r| r.lead.interest.as_deref()))?;
                a.add(col(rows, |r| r.lead.message.as_deref()))?;
                a.add(col(rows, |r| r.lead.budget))?;
                a.add(col(rows, |r| r.lead.channel.as_str()))?;
                a.add(col(rows, |r| r.lead.campaign.as_deref()))?;
                a.add(col(rows, |r| r.lead.source.as_deref()))?;
                a.add(col(rows, |r| r.lead.utm.source.as_deref()))?;
                a.add(col(rows, |r| r.lead.utm.medium.as_deref()))?;
                a.add(col(rows, |r| r.lead.utm.campaign.as_deref()))?;
                a.add(col(rows, |r| r.lead.utm.content.as_deref()))?;
                a.add(col(rows, |r| r.lead.utm.term.as_deref()))?;
                a.add(col(rows, |r| r.lead.referrer.as_deref()))?;
                a.add(col(rows, |r| r.lead.landing_page.as_deref()))?;
                a.add(col(rows, |r| r.lead.tracking_number.as_ref().map(|p| p.as_str())))?;
                a.add(col(rows, |r| r.lead.visitor_id.as_deref()))?;
                a.add(col(rows, |r| r.lead.external_id.as_deref()))?;
                a.add(col(rows, |r| r.fields))?;
                a.add(col(rows, |r| r.lead.consent.as_ref().map(|c| c.marketing)))?;
                a.add(col(rows, |r| r.lead.consent.as_ref().and_then(|c| c.text.as_deref())))?;
                a.add(col(rows, |r| r.lead.consent.as_ref().and_then(|c| c.at).map(Ts::from)))?;
                a.add(col(rows, |r| r.returning_of))?;
                a.add(col(rows, |r| r.contact_id))?;
                a.add(col(rows, |r| r.search))?;
                a.add(col(rows, |r| r.at))?;
                Ok(())
            },
        )?;
        Ok(())
    }

    async fn insert_identities(&mut self, rows: &[(&str, Uuid)], at: Ts) -> Result<(), BatchError> {
        let idents: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let kinds: Vec<&str> = rows.iter().map(|r| r.0.split_once(':').map(|(k, _)| k).unwrap_or("other")).collect();
        let leads: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
        self.defer(
            "INSERT INTO identities (ident, kind, lead_id, created_at) SELECT i, k, l, $4 FROM UNNEST($1::text[], $2::text[], $3::uuid[]) AS t(i, k, l)",
            |a| {
            a.add(&idents)?;
            a.add(&kinds)?;
            a.add(&leads)?;
            a.add(at)?;
            Ok(())
            },
        )?;
        Ok(())
    }

    async fn repoint_identity(&mut self, ident: &str, from: Uuid, to: Uuid) -> Result<u64, BatchError> {
        Ok(sqlx::query("UPDATE identities SET lead_id = $1 WHERE ident = $2 AND lead_id = $3")
            .bind(to)
            .bind(ident)
            .bind(from)
            .execute(self.writer().await?)
            .await?
            .rows_affected())
    }

    async fn apply_repeats(&mut self, rows: &[(Uuid, &RepeatUpdate)]) -> Result<u64, BatchError> {
        // One statement for the batch, after the leads are locked in ascending order (as every
        // writer does; the update's own plan does not promise an order).
        let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
        sqlx::query("SELECT id FROM leads WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .bind(&ids)
            .fetch_all(self.writer().await?)
            .await?;
        Ok(sqlx::query(
            "UPDATE leads l SET repeat_count = l.repeat_count + u.c, last_request_at = u.a, updated_at = u.a, \
             phone = COALESCE(l.phone, u.p), email = COALESCE(l.email, u.e), messenger = COALESCE(l.messenger, u.m), \
             name = COALESCE(l.name, u.n) \
             FROM UNNEST($1::uuid[], $2::int4[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[]) \
             AS u(id, c, a, p, e, m, n) WHERE l.id = u.id",
        )
        .bind(&ids)
        .bind(rows.iter().map(|r| r.1.count).collect::<Vec<i32>>())
        .bind(rows.iter().map(|r| r.1.at).collect::<Vec<Option<Ts>>>())
        .bind(rows.iter().map(|r| r.1.phone.as_deref()).collect::<Vec<Option<&str>>>())
        .bind(rows.iter().map(|r| r.1.email.as_deref()).collect::<Vec<Option<&str>>>())
        .bind(rows.iter().map(|r| r.1.messenger.as_deref()).collect::<Vec<Option<&str>>>())
        .bind(rows.iter().map(|r| r.1.name.as_deref()).collect::<Vec<Option<&str>>>())
        .execute(self.writer().await?)
        .await?
        .rows_affected())
    }

    async fn set_search(&mut self, lead_id: Uuid, search: &str) -> Result<(), BatchError> {
        sqlx::query("UPDATE leads SET search = $1 WHERE id = $2 AND search IS DISTINCT FROM $1")
            .bind(search)
            .bind(lead_id)
            .execute(self.writer().await?)
            .await?;
        Ok(())
    }

    async fn triage_channels(&mut self) -> Result<Vec<String>, BatchError> {
        // The lead insert marks them itself (a separate query per batch here cost PostgreSQL
        // intake four fifths of its rate).
        Ok(Vec::new())
    }

    async fn mark_triage(&mut self, ids: &[Uuid]) -> Result<(), BatchError> {
        sqlx::query("UPDATE leads SET triage = 'pending' WHERE id = ANY($1)").bind(ids).execute(self.writer().await?).await?;
        Ok(())
    }

    async fn join_visitor_events(&mut self, visitor_id: &str, lead_id: Uuid) -> Result<Vec<StoredEvent>, BatchError> {
        Ok(sqlx::query_as("UPDATE events SET lead_id = $1 WHERE visitor_id = $2 AND lead_id IS NULL RETURNING at, kind, data")
            .bind(lead_id)
            .bind(visitor_id)
            .fetch_all(self.writer().await?)
            .await?)
    }

    async fn insert_events(&mut self, rows: &[EventInsert<'_>]) -> Result<(), BatchError> {
        let lead: Vec<Option<Uuid>> = rows.iter().map(|e| e.lead_id).collect();
        let visitor: Vec<Option<&str>> = rows.iter().map(|e| e.visitor_id).collect();
        let site: Vec<Option<Uuid>> = rows.iter().map(|e| e.site_id).collect();
        let kind: Vec<&str> = rows.iter().map(|e| e.kind).collect();
        let at: Vec<Ts> = rows.iter().map(|e| e.at).collect();
        let actor: Vec<Option<&str>> = rows.iter().map(|e| e.actor).collect();
        let data: Vec<&str> = rows.iter().map(|e| e.data.as_str()).collect();
        self.defer(
            "INSERT INTO events (lead_id, visitor_id, site_id, kind, at, actor, data, created_at) \
             SELECT l, v, s, k, a, ac, d::jsonb, a FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::timestamptz[], \
             $6::text[], $7::text[]) AS t(l, v, s, k, a, ac, d)",
            |a| {
                a.add(&lead)?;
                a.add(&visitor)?;
                a.add(&site)?;
                a.add(&kind)?;
                a.add(&at)?;
                a.add(&actor)?;
                a.add(&data)?;
                Ok(())
            },
        )?;
        Ok(())
    }

    async fn insert_outbox(&mut self, rows: &[OutboxInsert]) -> Result<(), BatchError> {
        let topic: Vec<&str> = rows.iter().map(|o| o.topic).collect();
        let agg: Vec<Uuid> = rows.iter().map(|o| o.aggregate_id).collect();
        let payload: Vec<&str> = rows.iter().map(|o| o.payload.as_str()).collect();
        let at: Vec<Ts> = rows.iter().map(|o| o.at).collect();
        self.defer(
            "INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) \
             SELECT t, g, p::jsonb, a, a FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::timestamptz[]) AS u(t, g, p, a)",
            |a| {
                a.add(&topic)?;
                a.add(&agg)?;
                a.add(&payload)?;
                a.add(&at)?;
                Ok(())
            },
        )?;
        Ok(())
    }

    async fn insert_import_rows(&mut self, rows: &[ImportRowInsert]) -> Result<(), BatchError> {
        let import: Vec<Uuid> = rows.iter().map(|r| r.mark.import_id).collect();
        let row: Vec<i64> = rows.iter().map(|r| r.mark.row).collect();
        let outcome: Vec<&str> = rows.iter().map(|r| r.outcome).collect();
        let lead: Vec<Uuid> = rows.iter().map(|r| r.lead_id).collect();
        self.defer(
            "INSERT INTO import_rows (import_id, row_no, outcome, lead_id) \
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::uuid[])",
            |a| {
                a.add(&import)?;
                a.add(&row)?;
                a.add(&outcome)?;
                a.add(&lead)?;
                Ok(())
            },
        )?;
        Ok(())
    }

    async fn fetch_leads(&mut self, ids: &[Uuid]) -> Result<Vec<LeadRow>, BatchError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {LEAD_COLUMNS} FROM {LEAD_FROM} WHERE l.id = ANY($1)")))
            .bind(ids)
            .fetch_all(self.reader().await?)
            .await?)
    }

    async fn insert_idem(&mut self, rows: &[IdemInsert<'_>], at: Ts) -> Result<(), BatchError> {
        let keys: Vec<&str> = rows.iter().map(|r| r.key).collect();
        let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
        let statuses: Vec<i32> = rows.iter().map(|r| r.status as i32).collect();
        let bodies: Vec<&[u8]> = rows.iter().map(|r| r.body).collect();
        self.defer(
            "INSERT INTO idempotency_keys (scope_key, request_hash, status, body, created_at) \
             SELECT k, h, s, b, $5 FROM UNNEST($1::text[], $2::bytea[], $3::int4[], $4::bytea[]) AS t(k, h, s, b)",
            |a| {
                a.add(&keys)?;
                a.add(&hashes)?;
                a.add(&statuses)?;
                a.add(&bodies)?;
                a.add(at)?;
                Ok(())
            },
        )?;
        Ok(())
    }

    async fn model_version(&mut self) -> Result<i64, BatchError> {
        Ok(sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::int8 FROM scoring_models").fetch_one(self.reader().await?).await?)
    }

    async fn load_model(&mut self, version: i64) -> Result<Option<Value>, BatchError> {
        Ok(sqlx::query_scalar("SELECT model FROM scoring_models WHERE version = $1")
            .bind(version)
            .fetch_optional(self.reader().await?)
            .await?)
    }

    async fn targets_by_key(&mut self, keys: &[(String, String, String)]) -> Result<Vec<TargetRow>, BatchError> {
        let (k, p, n) = unzip3(keys);
        Ok(sqlx::query_as(
            "SELECT t.id, t.kind, t.path, t.name FROM event_targets t \
             JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS u(k, p, n) ON t.kind = u.k AND t.path = u.p AND t.name = u.n",
        )
        .bind(&k)
        .bind(&p)
        .bind(&n)
        .fetch_all(self.reader().await?)
        .await?)
    }

    async fn insert_targets(&mut self, keys: &[(String, String, String)]) -> Result<(), BatchError> {
        let (k, p, n) = unzip3(keys);
        sqlx::query(
            "INSERT INTO event_targets (kind, path, name) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&k)
        .bind(&p)
        .bind(&n)
        .execute(self.writer().await?)
        .await?;
        Ok(())
    }

    async fn targets_by_id(&mut self, ids: &[i64]) -> Result<Vec<TargetRow>, BatchError> {
        Ok(sqlx::query_as("SELECT id, kind, path, name FROM event_targets WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(self.reader().await?)
            .await?)
    }

    async fn load_scores(&mut self, ids: &[Uuid]) -> Result<Vec<ScoreRow>, BatchError> {
        Ok(sqlx::query_as("SELECT lead_id, ledger, model_version FROM lead_scores WHERE lead_id = ANY($1)")
            .bind(ids)
            .fetch_all(self.reader().await?)
            .await?)
    }

    async fn load_inputs(&mut self, ids: &[Uuid]) -> Result<Vec<InputsRow>, BatchError> {
        Ok(sqlx::query_as("SELECT lead_id, events FROM lead_inputs WHERE lead_id = ANY($1)")
            .bind(ids)
            .fetch_all(self.reader().await?)
            .await?)
    }

    async fn save_scores(&mut self, rows: &[ScoreWrite]) -> Result<(), BatchError> {
        // A lead created in this transaction is seen by no one else until it commits: its
        // first score row needs neither the lead's lock nor the conflict check.
        let (created, existing): (Vec<&ScoreWrite>, Vec<&ScoreWrite>) = rows.iter().partition(|r| r.created_status.is_some());
        if !created.is_empty() {
            save_score_rows(self, &created, false)?;
        }
        if !existing.is_empty() {
            save_score_rows(self, &existing, true)?;
        }
        Ok(())
    }

    async fn save_inputs(&mut self, rows: &[(Uuid, Vec<u8>)]) -> Result<(), BatchError> {
        let id: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
        let events: Vec<&[u8]> = rows.iter().map(|r| r.1.as_slice()).collect();
        self.defer(
            "INSERT INTO lead_inputs (lead_id, events, rev) SELECT i, e, 1 FROM UNNEST($1::uuid[], $2::bytea[]) AS t(i, e) \
             ON CONFLICT (lead_id) DO UPDATE SET events = excluded.events, rev = lead_inputs.rev + 1",
            |a| {
                a.add(&id)?;
                a.add(&events)?;
                Ok(())
            },
        )?;
        Ok(())
    }

    async fn lead_statuses(&mut self, ids: &[Uuid]) -> Result<Vec<StatusRow>, BatchError> {
        Ok(sqlx::query_as("SELECT id, status FROM leads WHERE id = ANY($1)").bind(ids).fetch_all(self.reader().await?).await?)
    }

    async fn leads_of_visitors(&mut self, visitors: &[&str]) -> Result<Vec<VisitorLead>, BatchError> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT ON (visitor_id) visitor_id, id, status FROM leads WHERE visitor_id = ANY($1) ORDER BY visitor_id, created_at DESC",
        )
        .bind(visitors)
        .fetch_all(self.reader().await?)
        .await?)
    }

    async fn set_sales_ready(&mut self, ids: &[Uuid], at: Ts) -> Result<(), BatchError> {
        sqlx::query("UPDATE leads SET status = 'sales_ready', updated_at = $1 WHERE id = ANY($2) AND status IN ('new', 'nurturing')")
            .bind(at)
            .bind(ids)
            .execute(self.writer().await?)
            .await?;
        Ok(())
    }

    async fn commit_tx(mut self) -> Result<(), BatchError> {
        match self.tx.take() {
            Some(mut tx) => {
                flush(&mut self.parts, &mut self.args, &mut tx).await?;
                Ok(tx.commit().await?)
            }
            None => match self.conn.take() {
                // Reads alone so far: the inserts are one statement, its own transaction.
                Some(mut conn) => flush(&mut self.parts, &mut self.args, &mut conn).await,
                None => Err(BatchError::Conflict("intake connection lost")),
            },
        }
    }
}

/// Writes score rows (deferred, as every insert): `locked` joins each to its lead locked
/// `FOR KEY SHARE` (the score table's foreign key is gone; see migration 0016) and updates a
/// row already there.
fn save_score_rows(b: &mut PgBatch, rows: &[&ScoreWrite], locked: bool) -> Result<(), BatchError> {
    const COLUMNS: &str = "INSERT INTO lead_scores (lead_id, score, priority, profile, temperature, grade, ledger, model_version, \
         scored_at, status) SELECT u.* FROM UNNEST($1::uuid[], $2::float8[], $3::float8[], $4::float8[], $5::text[], $6::text[], \
         $7::bytea[], $8::int8[], $9::timestamptz[], $10::text[]) AS u(lead_id)";
    const LOCKED: &str = " JOIN leads l ON l.id = u.lead_id FOR KEY SHARE OF l \
         ON CONFLICT (lead_id) DO UPDATE SET score = excluded.score, priority = excluded.priority, profile = excluded.profile, \
         temperature = excluded.temperature, grade = excluded.grade, ledger = excluded.ledger, \
         model_version = excluded.model_version, scored_at = excluded.scored_at";
    let sql = if locked { format!("{COLUMNS}{LOCKED}") } else { COLUMNS.to_string() };
    b.defer(&sql, |a| {
        a.add(rows.iter().map(|r| r.lead_id).collect::<Vec<Uuid>>())?;
        a.add(rows.iter().map(|r| r.score).collect::<Vec<f64>>())?;
        a.add(rows.iter().map(|r| r.priority).collect::<Vec<f64>>())?;
        a.add(rows.iter().map(|r| r.profile).collect::<Vec<f64>>())?;
        a.add(rows.iter().map(|r| r.temperature).collect::<Vec<&str>>())?;
        a.add(rows.iter().map(|r| r.grade).collect::<Vec<&str>>())?;
        a.add(rows.iter().map(|r| r.ledger.as_slice()).collect::<Vec<&[u8]>>())?;
        a.add(rows.iter().map(|r| r.model_version).collect::<Vec<i64>>())?;
        a.add(rows.iter().map(|r| r.at).collect::<Vec<Ts>>())?;
        a.add(rows.iter().map(|r| r.created_status).collect::<Vec<Option<&str>>>())?;
        Ok(())
    })
}

fn unzip3(keys: &[(String, String, String)]) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let mut a = Vec::with_capacity(keys.len());
    let mut b = Vec::with_capacity(keys.len());
    let mut c = Vec::with_capacity(keys.len());
    for (x, y, z) in keys {
        a.push(x.as_str());
        b.push(y.as_str());
        c.push(z.as_str());
    }
    (a, b, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_renumbered_after_the_earlier_parts() {
        assert_eq!(renumber("SELECT $1, $2::text[], $10", 0), "SELECT $1, $2::text[], $10");
        assert_eq!(renumber("SELECT $1, $2::text[], $10", 32), "SELECT $33, $34::text[], $42");
        assert_eq!(renumber("x = $9", 1), "x = $10");
    }

    #[test]
    fn deferred_inserts_become_one_statement() {
        assert_eq!(one_statement(vec!["INSERT INTO a SELECT $1".into()]), "INSERT INTO a SELECT $1");
        assert_eq!(
            one_statement(vec!["INSERT INTO a SELECT $1".into(), "INSERT INTO b SELECT $2".into(), "INSERT INTO c SELECT $3".into()]),
            "WITH w0 AS (INSERT INTO a SELECT $1), w1 AS (INSERT INTO b SELECT $2) INSERT INTO c SELECT $3"
        );
        assert_eq!(one_statement(Vec::new()), "");
    }
}
