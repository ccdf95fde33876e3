//! The audit log: who exported or otherwise handled personal data, when, and how.

use crate::db::{with_read, with_write};
use crate::ts::Ts;
use crate::{Store, StoreError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[schema(value_type = String)]
    pub at: Ts,
    pub actor: String,
    pub action: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: Ts,
    actor: String,
    action: String,
    detail: String,
}

impl Store {
    /// Records an action; it is on disk when this returns.
    pub async fn record_audit(&self, actor: &str, action: &str, detail: &serde_json::Value) -> Result<(), StoreError> {
        let now = self.now();
        let detail = detail.to_string();
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO audit_log (at, actor, action, detail) VALUES ($1, $2, $3, $4)")
                .bind(now).bind(actor).bind(action).bind(&detail).execute(p).await?;
        });
        Ok(())
    }

    /// The newest entries first, of one action when given.
    pub async fn audit_entries(&self, action: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = limit.clamp(1, 1000) as i64;
        let rows: Vec<AuditRow> = with_read!(&self.db, p => {
            match action {
                Some(a) => sqlx::query_as("SELECT id, at, actor, action, detail FROM audit_log WHERE action = $1 ORDER BY id DESC LIMIT $2")
                    .bind(a).bind(limit).fetch_all(p).await?,
                None => sqlx::query_as("SELECT id, at, actor, action, detail FROM audit_log ORDER BY id DESC LIMIT $1")
                    .bind(limit).fetch_all(p).await?,
            }
        });
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: r.at,
                actor: r.actor,
                action: r.action,
                detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::String(r.detail)),
            })
            .collect())
    }
}
