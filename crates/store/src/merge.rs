//! Merging two leads of one person, and undoing it. The survivor takes the other lead's
//! contacts, timeline, tasks and scorable events; the merged lead is closed as a junk
//! duplicate that points to it. The merge log keeps exactly what moved and what was
//! overwritten, so an unmerge gives both leads back with their own history (what happened
//! to the survivor after the merge stays with the survivor).

use crate::db::with_read;
use crate::imports::JsonText;
use crate::leads::Lead;
use crate::ts::Ts;
use crate::users::Access;
use crate::workflow::{WorkflowError, invalid, refused, write_tx};
use crate::{Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use voronka_domain::scoring::{decode_inputs, encode_inputs};

/// Lead fields the survivor takes from the merged lead when it has none of its own.
const FILLED: &[&str] = &["name", "phone", "email", "messenger", "company", "position", "city"];

/// A merge as logged.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MergeInfo {
    pub id: Uuid,
    pub survivor_id: Uuid,
    pub merged_id: Uuid,
    pub actor: String,
    /// What moved and what was overwritten (event ids, task ids, identities, fields).
    #[schema(value_type = Object)]
    #[sqlx(try_from = "String")]
    pub log: JsonText,
    #[schema(value_type = String)]
    pub created_at: Ts,
    #[schema(value_type = Option<String>)]
    pub undone_at: Option<Ts>,
    pub undone_by: Option<String>,
}

const MERGE_COLUMNS: &str = "id, survivor_id, merged_id, actor, log, created_at, undone_at, undone_by";

/// The merge log's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Log {
    events: Vec<i64>,
    tasks: Vec<Uuid>,
    identities: Vec<String>,
    /// Survivor fields that were empty and took the merged lead's value.
    filled: Vec<String>,
    /// The merged lead's state before the merge.
    merged_status: String,
    merged_reason: Option<String>,
    merged_owner: Option<Uuid>,
    merged_triage: Option<String>,
    /// The merged lead's queue and response-deadline marks, in microseconds.
    #[serde(default)]
    merged_queued_at: Option<i64>,
    #[serde(default)]
    merged_sla_due_at: Option<i64>,
    /// Repeat requests the survivor gained (the merged lead's, plus the merge itself).
    repeats_added: i32,
    /// The merged lead's scorable events, as (time, target).
    inputs: Vec<(i64, u32)>,
}

#[derive(sqlx::FromRow)]
struct Side {
    status: String,
    status_reason: Option<String>,
    owner_id: Option<Uuid>,
    triage: Option<String>,
    repeat_count: i32,
    name: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    messenger: Option<String>,
    company: Option<String>,
    position: Option<String>,
    city: Option<String>,
    queued_at: Option<Ts>,
    sla_due_at: Option<Ts>,
}

/// The outbox message that has a lead scored whole again from its events and fields.
const RESCORE_MESSAGE: &str =
    "INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) VALUES ('lead.rescore', $1, $2, $3, $3)";

impl Side {
    /// The search column's text for these contacts.
    fn search(&self) -> String {
        let phone = self.phone.clone().map(voronka_domain::Phone::from_e164_unchecked);
        voronka_domain::lead::search_text(
            self.name.as_deref(),
            self.company.as_deref(),
            self.email.as_deref(),
            phone.as_ref(),
            self.messenger.as_deref(),
        )
    }

    fn field(&self, f: &str) -> Option<&str> {
        match f {
            "name" => self.name.as_deref(),
            "phone" => self.phone.as_deref(),
            "email" => self.email.as_deref(),
            "messenger" => self.messenger.as_deref(),
            "company" => self.company.as_deref(),
            "position" => self.position.as_deref(),
            "city" => self.city.as_deref(),
            _ => None,
        }
    }
}

const SIDE: &str = "SELECT status, status_reason, owner_id, triage, repeat_count, name, phone, email, messenger, company, position, city, queued_at, sla_due_at FROM leads WHERE id = $1";

/// On PostgreSQL, locks both leads and their score inputs for the transaction (in id order,
/// so two merges cannot deadlock); SQLite's `BEGIN IMMEDIATE` already serialises writers.
const LOCK_PG: [&str; 2] = [
    "SELECT id FROM leads WHERE id IN ($1, $2) ORDER BY id FOR UPDATE",
    "SELECT lead_id FROM lead_inputs WHERE lead_id IN ($1, $2) ORDER BY lead_id FOR UPDATE",
];

fn gone() -> WorkflowError {
    refused("lead_changed", "The lead changed meanwhile; try again", "Лид изменился за это время; повторите")
}

impl Store {
    /// Merges `merged` into `survivor` (both visible to `access`).
    pub async fn merge_leads(
        &self,
        survivor: Uuid,
        merged: Uuid,
        actor: &str,
        access: &Access,
    ) -> Result<(MergeInfo, Lead), WorkflowError> {
        if survivor == merged {
            return Err(invalid("merged_id", "a lead cannot be merged into itself", "лид нельзя объединить с самим собой"));
        }
        let s = self.lead_as(survivor, access).await?.ok_or(WorkflowError::NotFound)?;
        let m = self
            .lead_as(merged, access)
            .await?
            .ok_or_else(|| invalid("merged_id", "no such lead (or not yours)", "нет такого лида (или он не ваш)"))?;
        if s.status == "converted" || m.status == "converted" {
            return Err(refused(
                "merge_converted",
                "A converted lead cannot be merged; its contact holds the history",
                "Конвертированный лид нельзя объединить: история уже у контакта",
            ));
        }
        let now = self.now();
        let merge_id = Uuid::now_v7();
        let pg = !self.db.is_sqlite();
        let info = write_tx!(&self.db, tx => {
            if pg {
                for sql in LOCK_PG {
                    sqlx::query(sql).bind(survivor).bind(merged).execute(&mut *tx).await?;
                }
            }
            let active: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM merges WHERE undone_at IS NULL AND merged_id IN ($1, $2)")
                .bind(survivor).bind(merged).fetch_one(&mut *tx).await?;
            if active > 0 {
                return Err(refused("already_merged", "One of the leads was already merged into another", "Один из лидов уже объединён с другим"));
            }
            let sv: Side = sqlx::query_as(SIDE).bind(survivor).fetch_optional(&mut *tx).await?.ok_or_else(gone)?;
            let mv: Side = sqlx::query_as(SIDE).bind(merged).fetch_optional(&mut *tx).await?.ok_or_else(gone)?;
            if sv.status == "converted" || mv.status == "converted" {
                return Err(gone());
            }
            let s_inputs: Option<Vec<u8>> = sqlx::query_scalar("SELECT events FROM lead_inputs WHERE lead_id = $1").bind(survivor).fetch_optional(&mut *tx).await?;
            let m_inputs: Option<Vec<u8>> = sqlx::query_scalar("SELECT events FROM lead_inputs WHERE lead_id = $1").bind(merged).fetch_optional(&mut *tx).await?;
            let m_pairs: Vec<(i64, u32)> = m_inputs.as_deref().map(|b| decode_inputs(b).collect()).unwrap_or_default();
            let mut joined: Vec<(i64, u32)> = s_inputs.as_deref().map(|b| decode_inputs(b).collect()).unwrap_or_default();
            joined.extend(m_pairs.iter().copied());
            joined.sort_by_key(|p| p.0);

            let filled: Vec<String> = FILLED.iter().filter(|f| sv.field(f).is_none() && mv.field(f).is_some()).map(|f| f.to_string()).collect();
            let repeats_added = mv.repeat_count + 1;

            // What moves is logged exactly as it moved.
            let mut events: Vec<i64> = sqlx::query_scalar("UPDATE events SET lead_id = $1 WHERE lead_id = $2 RETURNING id").bind(survivor).bind(merged).fetch_all(&mut *tx).await?;
            events.sort_unstable();
            let tasks: Vec<Uuid> = sqlx::query_scalar("UPDATE tasks SET lead_id = $1 WHERE lead_id = $2 RETURNING id").bind(survivor).bind(merged).fetch_all(&mut *tx).await?;
            let identities: Vec<String> = sqlx::query_scalar("UPDATE identities SET lead_id = $1 WHERE lead_id = $2 RETURNING ident").bind(survivor).bind(merged).fetch_all(&mut *tx).await?;
            sqlx::query(
                "UPDATE leads SET name = COALESCE(name, $1), phone = COALESCE(phone, $2), email = COALESCE(email, $3), messenger = COALESCE(messenger, $4), \
                 company = COALESCE(company, $5), position = COALESCE(position, $6), city = COALESCE(city, $7), repeat_count = repeat_count + $8, updated_at = $9 WHERE id = $10",
            )
            .bind(&mv.name).bind(&mv.phone).bind(&mv.email).bind(&mv.messenger).bind(&mv.company).bind(&mv.position).bind(&mv.city)
            .bind(repeats_added).bind(now).bind(survivor)
            .execute(&mut *tx).await?;
            sqlx::query("UPDATE leads SET status = 'junk', status_reason = 'duplicate', triage = NULL, queued_at = NULL, sla_due_at = NULL, updated_at = $1 WHERE id = $2")
                .bind(now).bind(merged).execute(&mut *tx).await?;
            for (id, pairs) in [(survivor, joined.as_slice()), (merged, &[][..])] {
                sqlx::query("INSERT INTO lead_inputs (lead_id, events, rev) VALUES ($1, $2, 1) ON CONFLICT (lead_id) DO UPDATE SET events = excluded.events, rev = lead_inputs.rev + 1")
                    .bind(id).bind(encode_inputs(pairs)).execute(&mut *tx).await?;
            }
            let log = Log {
                events, tasks, identities, filled,
                merged_status: mv.status.clone(), merged_reason: mv.status_reason.clone(), merged_owner: mv.owner_id, merged_triage: mv.triage.clone(),
                merged_queued_at: mv.queued_at.map(Ts::micros), merged_sla_due_at: mv.sla_due_at.map(Ts::micros),
                repeats_added, inputs: m_pairs,
            };
            let log = serde_json::to_string(&log).map_err(|e| StoreError::Other(e.into()))?;
            let now_s: Side = sqlx::query_as(SIDE).bind(survivor).fetch_optional(&mut *tx).await?.ok_or_else(gone)?;
            sqlx::query("UPDATE leads SET search = $1 WHERE id = $2").bind(now_s.search()).bind(survivor).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO merges (id, survivor_id, merged_id, actor, log, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(merge_id).bind(survivor).bind(merged).bind(actor).bind(&log).bind(now).execute(&mut *tx).await?;
            for (lead, kind, data) in [
                (survivor, "merged", json!({"merge_id": merge_id, "merged_id": merged})),
                (merged, "merged_into", json!({"merge_id": merge_id, "survivor_id": survivor, "from": mv.status, "to": "junk"})),
            ] {
                sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, $2, $3, $4, $5, $3)")
                    .bind(lead).bind(kind).bind(now).bind(actor).bind(data).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) VALUES ('lead.state_changed', $1, $2, $3, $3)")
                .bind(merged).bind(json!({"from": mv.status, "to": "junk", "reason": "duplicate", "merged_into": survivor})).bind(now)
                .execute(&mut *tx).await?;
            for id in [survivor, merged] {
                sqlx::query(RESCORE_MESSAGE).bind(id).bind(json!({"merge_id": merge_id})).bind(now).execute(&mut *tx).await?;
            }
            Ok::<(), WorkflowError>(())
        });
        info?;
        self.after_merge(&[survivor, merged]).await?;
        let info = self.merge(merge_id).await?.ok_or(WorkflowError::NotFound)?;
        let lead = self.lead(survivor).await?.ok_or(WorkflowError::NotFound)?;
        Ok((info, lead))
    }

    /// Splits a merge back into its two leads.
    pub async fn unmerge(&self, merge_id: Uuid, actor: &str, access: &Access) -> Result<MergeInfo, WorkflowError> {
        let info = self.merge(merge_id).await?.ok_or(WorkflowError::NotFound)?;
        if !self.can_see(info.survivor_id, access).await? {
            return Err(WorkflowError::NotFound);
        }
        if info.undone_at.is_some() {
            return Err(refused("already_unmerged", "This merge was already undone", "Это объединение уже отменено"));
        }
        let log: Log = serde_json::from_value(info.log.0.clone()).map_err(|e| StoreError::Other(e.into()))?;
        let (survivor, merged) = (info.survivor_id, info.merged_id);
        let now = self.now();
        let pg = !self.db.is_sqlite();
        let done = write_tx!(&self.db, tx => {
            if pg {
                for sql in LOCK_PG {
                    sqlx::query(sql).bind(survivor).bind(merged).execute(&mut *tx).await?;
                }
            }
            let converted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leads WHERE id IN ($1, $2) AND status = 'converted'")
                .bind(survivor).bind(merged).fetch_one(&mut *tx).await?;
            if converted > 0 {
                return Err(refused(
                    "merge_converted",
                    "The lead was converted since the merge; its contact holds the history now",
                    "После объединения лид конвертирован: история уже у контакта",
                ));
            }
            let later: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM merges WHERE undone_at IS NULL AND id <> $1 AND created_at >= $2 AND (merged_id IN ($3, $4) OR survivor_id IN ($3, $4))",
            )
            .bind(merge_id).bind(info.created_at).bind(survivor).bind(merged).fetch_one(&mut *tx).await?;
            if later > 0 {
                return Err(refused("later_merge", "A later merge involves these leads; undo it first", "С этими лидами есть более позднее объединение; сначала отмените его"));
            }
            let n = sqlx::query("UPDATE merges SET undone_at = $1, undone_by = $2 WHERE id = $3 AND undone_at IS NULL")
                .bind(now).bind(actor).bind(merge_id).execute(&mut *tx).await?.rows_affected();
            if n != 1 {
                return Err(refused("already_unmerged", "This merge was already undone", "Это объединение уже отменено"));
            }
            for chunk in log.events.chunks(500) {
                let list = chunk.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
                let sql = format!("UPDATE events SET lead_id = $1 WHERE lead_id = $2 AND id IN ({list})");
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(merged).bind(survivor).execute(&mut *tx).await?;
            }
            for t in &log.tasks {
                sqlx::query("UPDATE tasks SET lead_id = $1 WHERE lead_id = $2 AND id = $3").bind(merged).bind(survivor).bind(t).execute(&mut *tx).await?;
            }
            for i in &log.identities {
                sqlx::query("UPDATE identities SET lead_id = $1 WHERE lead_id = $2 AND ident = $3").bind(merged).bind(survivor).bind(i).execute(&mut *tx).await?;
            }
            // The survivor gives back what it took: filled fields that still hold the
            // merged lead's value, the repeat count, the merged lead's scorable events.
            let sv: Side = sqlx::query_as(SIDE).bind(survivor).fetch_optional(&mut *tx).await?.ok_or_else(gone)?;
            let mv: Side = sqlx::query_as(SIDE).bind(merged).fetch_optional(&mut *tx).await?.ok_or_else(gone)?;
            for f in &log.filled {
                if FILLED.contains(&f.as_str()) && sv.field(f).is_some() && sv.field(f) == mv.field(f) {
                    let sql = format!("UPDATE leads SET {f} = NULL WHERE id = $1");
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(survivor).execute(&mut *tx).await?;
                }
            }
            sqlx::query("UPDATE leads SET repeat_count = CASE WHEN repeat_count > $1 THEN repeat_count - $1 ELSE 0 END, updated_at = $2 WHERE id = $3")
                .bind(log.repeats_added).bind(now).bind(survivor).execute(&mut *tx).await?;
            let queued = log.merged_queued_at.and_then(Ts::from_micros);
            let due = log.merged_sla_due_at.and_then(Ts::from_micros);
            sqlx::query("UPDATE leads SET status = $1, status_reason = $2, owner_id = $3, triage = $4, queued_at = $5, sla_due_at = $6, updated_at = $7 WHERE id = $8")
                .bind(&log.merged_status).bind(&log.merged_reason).bind(log.merged_owner).bind(&log.merged_triage).bind(queued).bind(due).bind(now).bind(merged)
                .execute(&mut *tx).await?;
            sqlx::query("INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) VALUES ('lead.state_changed', $1, $2, $3, $3)")
                .bind(merged).bind(json!({"from": "junk", "to": log.merged_status, "unmerged_from": survivor})).bind(now)
                .execute(&mut *tx).await?;
            for id in [survivor, merged] {
                let side: Side = sqlx::query_as(SIDE).bind(id).fetch_optional(&mut *tx).await?.ok_or_else(gone)?;
                sqlx::query("UPDATE leads SET search = $1 WHERE id = $2").bind(side.search()).bind(id).execute(&mut *tx).await?;
            }
            let s_inputs: Option<Vec<u8>> = sqlx::query_scalar("SELECT events FROM lead_inputs WHERE lead_id = $1").bind(survivor).fetch_optional(&mut *tx).await?;
            let mut rest: Vec<(i64, u32)> = s_inputs.as_deref().map(|b| decode_inputs(b).collect()).unwrap_or_default();
            for p in &log.inputs {
                if let Some(pos) = rest.iter().position(|q| q == p) {
                    rest.remove(pos);
                }
            }
            for (id, pairs) in [(survivor, rest.as_slice()), (merged, log.inputs.as_slice())] {
                sqlx::query("INSERT INTO lead_inputs (lead_id, events, rev) VALUES ($1, $2, 1) ON CONFLICT (lead_id) DO UPDATE SET events = excluded.events, rev = lead_inputs.rev + 1")
                    .bind(id).bind(encode_inputs(pairs)).execute(&mut *tx).await?;
            }
            for (lead, other) in [(survivor, merged), (merged, survivor)] {
                sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'unmerged', $2, $3, $4, $2)")
                    .bind(lead).bind(now).bind(actor).bind(json!({"merge_id": merge_id, "other_id": other})).execute(&mut *tx).await?;
                sqlx::query(RESCORE_MESSAGE).bind(lead).bind(json!({"merge_id": merge_id, "undone": true})).bind(now).execute(&mut *tx).await?;
            }
            Ok::<(), WorkflowError>(())
        });
        done?;
        self.after_merge(&[survivor, merged]).await?;
        self.merge(merge_id).await?.ok_or(WorkflowError::NotFound)
    }

    /// Scores of leads whose contacts and events changed, at once so that the answer shows
    /// them. The merge is committed by then, so a failure here is logged rather than reported
    /// as a failed merge: the merge's transaction also queued a `lead.rescore` message for
    /// each lead, which the dispatcher handles (and retries) like any other, so a score left
    /// from before the merge does not stay.
    async fn after_merge(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        for id in ids {
            if let Err(e) = self.rescore_lead(*id).await {
                tracing::warn!(lead = %id, error = %e, "re-scoring after a merge failed; the outbox's lead.rescore message will do it");
            }
        }
        Ok(())
    }

    /// The lead that answers for a normalised contact (`Phone::identity()`…), if any.
    pub async fn lead_of_identity(&self, ident: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(with_read!(&self.db, p => {
            sqlx::query_scalar("SELECT lead_id FROM identities WHERE ident = $1").bind(ident).fetch_optional(p).await?
        }))
    }

    pub async fn merge(&self, id: Uuid) -> Result<Option<MergeInfo>, StoreError> {
        let sql = format!("SELECT {MERGE_COLUMNS} FROM merges WHERE id = $1");
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await?))
    }

    /// Merges a lead took part in (as survivor or as merged), newest first.
    pub async fn merges_of(&self, lead: Uuid) -> Result<Vec<MergeInfo>, StoreError> {
        let sql = format!("SELECT {MERGE_COLUMNS} FROM merges WHERE survivor_id = $1 OR merged_id = $1 ORDER BY created_at DESC");
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(lead).fetch_all(p).await?))
    }
}
