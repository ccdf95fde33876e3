//! Moving a lead between states. Nothing is deleted: the move is an update of the lead and
//! an event on its timeline.

use crate::db::with_write;
use crate::{Lead, Store, StoreError};
use serde_json::json;
use uuid::Uuid;
use voronka_domain::LeadStatus;

impl Store {
    /// Sets the lead's status and records the move on its timeline. The state machine's
    /// rules are the caller's; this is the storage step.
    pub async fn set_status(&self, id: Uuid, status: LeadStatus, reason: Option<&str>, actor: Option<&str>) -> Result<Lead, StoreError> {
        let now = self.now();
        let before = self.lead(id).await?.ok_or(StoreError::NotFound)?;
        let data = json!({"from": before.status, "to": status.as_str(), "reason": reason});
        with_write!(&self.db, p => {
            let mut tx = p.begin().await?;
            sqlx::query("UPDATE leads SET status = $1, status_reason = $2, updated_at = $3 WHERE id = $4")
                .bind(status.as_str()).bind(reason).bind(now).bind(id)
                .execute(&mut *tx).await?;
            sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'status_changed', $2, $3, $4, $2)")
                .bind(id).bind(now).bind(actor).bind(&data)
                .execute(&mut *tx).await?;
            tx.commit().await?;
        });
        self.lead(id).await?.ok_or(StoreError::NotFound)
    }
}
