//! The unsorted inbox (неразобранное): leads of channels marked "needs triage" wait here,
//! unrouted, until someone accepts one (it is routed as usual), declines it (junk with a
//! reason) or links it to the person's existing lead (a merge, so it can be undone).

use crate::db::{with_read, with_write};
use crate::leads::{LEAD_COLUMNS, LEAD_FROM, Lead, LeadRow};
use crate::users::Access;
use crate::workflow::{StatusChange, WorkflowError, refused, write_tx};
use crate::{Store, StoreError};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// A channel and whether its requests wait for triage.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ChannelInfo {
    pub code: String,
    pub name_en: String,
    pub name_ru: String,
    pub needs_triage: bool,
}

/// Open statuses a lead waiting for triage can have.
const OPEN: &str = "('new', 'nurturing', 'sales_ready', 'assigned', 'in_progress', 'qualified', 'postponed')";

fn not_waiting() -> WorkflowError {
    refused("not_in_triage", "The lead is not waiting in the unsorted inbox", "Лид не ждёт разбора в неразобранном")
}

impl Store {
    pub async fn channels(&self) -> Result<Vec<ChannelInfo>, StoreError> {
        Ok(with_read!(&self.db, p => {
            sqlx::query_as("SELECT code, name_en, name_ru, needs_triage FROM channels ORDER BY code").fetch_all(p).await?
        }))
    }

    /// Marks a channel as needing triage (or not); new leads of it follow the setting.
    pub async fn set_channel_triage(&self, code: &str, needs: bool) -> Result<ChannelInfo, StoreError> {
        let n = with_write!(&self.db, p => {
            sqlx::query("UPDATE channels SET needs_triage = $1 WHERE code = $2").bind(needs).bind(code).execute(p).await?.rows_affected()
        });
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        self.channels().await?.into_iter().find(|c| c.code == code).ok_or(StoreError::NotFound)
    }

    /// Leads waiting for triage, newest first.
    pub async fn triage_leads(&self, access: &Access, limit: i64) -> Result<Vec<Lead>, StoreError> {
        // SQLite, without statistics, would walk the arrival index through every lead to find
        // the few waiting (1.7 s at 1 M leads); the partial index holds only those.
        let from =
            if self.db.is_sqlite() { "leads l INDEXED BY leads_triage LEFT JOIN lead_scores s ON s.lead_id = l.id" } else { LEAD_FROM };
        let sql = format!(
            "SELECT {LEAD_COLUMNS} FROM {from} WHERE l.triage = 'pending' AND l.status IN {OPEN} AND {} ORDER BY l.created_at DESC LIMIT {}",
            self.access_sql(access),
            limit.clamp(1, 500)
        );
        let rows: Vec<LeadRow> = with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await?);
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(self.lead_of(r).await?);
        }
        Ok(out)
    }

    /// Whether the lead waits for triage.
    pub async fn in_triage(&self, id: Uuid) -> Result<bool, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM leads WHERE id = $1 AND triage = 'pending' AND status IN {OPEN}");
        let n: i64 = with_read!(&self.db, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(p).await?);
        Ok(n == 1)
    }

    /// Takes the lead into work: it leaves the unsorted inbox and is routed as usual.
    pub async fn triage_accept(&self, id: Uuid, actor: &str, access: &Access) -> Result<Lead, WorkflowError> {
        self.lead_as(id, access).await?.ok_or(WorkflowError::NotFound)?;
        let now = self.now();
        let done = write_tx!(&self.db, tx => {
            let sql = format!("UPDATE leads SET triage = NULL, updated_at = $1 WHERE id = $2 AND triage = 'pending' AND status IN {OPEN}");
            let n = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(id).execute(&mut *tx).await?.rows_affected();
            if n == 1 {
                sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'triage_accepted', $2, $3, $4, $2)")
                    .bind(id).bind(now).bind(actor).bind(json!({})).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) VALUES ('lead.accepted', $1, $2, $3, $3)")
                    .bind(id).bind(json!({"lead_id": id})).bind(now).execute(&mut *tx).await?;
            }
            n == 1
        });
        if !done {
            return Err(not_waiting());
        }
        self.lead(id).await?.ok_or(WorkflowError::NotFound)
    }

    /// Declines the lead as junk with a reason from the junk list.
    pub async fn triage_decline(&self, id: Uuid, reason: Option<&str>, actor: &str, access: &Access) -> Result<Lead, WorkflowError> {
        self.lead_as(id, access).await?.ok_or(WorkflowError::NotFound)?;
        if !self.in_triage(id).await? {
            return Err(not_waiting());
        }
        let change = StatusChange { status: "junk".into(), reason: reason.map(str::to_string), comment: None, until: None };
        self.change_status(id, &change, actor, access).await?;
        let now = self.now();
        with_write!(&self.db, p => {
            sqlx::query("UPDATE leads SET triage = NULL, updated_at = $1 WHERE id = $2").bind(now).bind(id).execute(p).await?;
        });
        self.lead(id).await?.ok_or(WorkflowError::NotFound)
    }

    /// Links the lead to the person's existing lead: merged into it (undo with the merge).
    pub async fn triage_link(
        &self,
        id: Uuid,
        existing: Uuid,
        actor: &str,
        access: &Access,
    ) -> Result<(crate::merge::MergeInfo, Lead), WorkflowError> {
        self.lead_as(id, access).await?.ok_or(WorkflowError::NotFound)?;
        if !self.in_triage(id).await? {
            return Err(not_waiting());
        }
        match self.merge_leads(existing, id, actor, access).await {
            Err(WorkflowError::NotFound) => {
                Err(crate::workflow::invalid("lead_id", "no such lead (or not yours)", "нет такого лида (или он не ваш)"))
            }
            Err(WorkflowError::Invalid { field, en, ru }) if field == "merged_id" => {
                Err(WorkflowError::Invalid { field: "lead_id".into(), en, ru })
            }
            other => other,
        }
    }
}
