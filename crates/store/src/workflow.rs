//! The sales workflow in storage: state moves, activities and first touch, tasks, field
//! edits (audited, re-scored), reasons and settings, notifications. Every change is a
//! transaction that also writes the lead's timeline; nothing is deleted.

use crate::db::{with_read, with_write};
use crate::ts::Ts;
use crate::users::Access;
use crate::{Lead, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;
use voronka_domain::LeadStatus;
use voronka_domain::assign::{Rule, Sla, default_rules, default_slas};
use voronka_domain::schedule::{Duty, WeekHours, parse_tz};
use voronka_domain::workflow::{JUNK_REASONS, REFUSAL_REASONS, can_move, needs_reason};

/// Why a workflow change was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("not found")]
    NotFound,
    #[error("a lead cannot move from {from} to {to}")]
    InvalidTransition { from: String, to: String },
    #[error("a reason is required")]
    ReasonRequired,
    #[error("invalid field {field}")]
    Invalid { field: String, en: String, ru: String },
    #[error("the lead is already converted")]
    AlreadyConverted,
    /// 409: the change conflicts with the lead's state (code and texts in both languages).
    #[error("{en}")]
    Refused { code: &'static str, en: String, ru: String },
    #[error("{field} belongs to another lead")]
    ContactTaken { field: String, lead_id: Uuid },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WorkflowError {
    fn from(e: sqlx::Error) -> Self {
        WorkflowError::Store(StoreError::Db(e))
    }
}

pub(crate) fn refused(code: &'static str, en: &str, ru: &str) -> WorkflowError {
    WorkflowError::Refused { code, en: en.into(), ru: ru.into() }
}

pub(crate) fn invalid(field: &str, en: &str, ru: &str) -> WorkflowError {
    WorkflowError::Invalid { field: field.into(), en: en.into(), ru: ru.into() }
}

/// Runs `$body` in a write transaction `$tx` (`BEGIN IMMEDIATE` on SQLite, so that it
/// waits for the writer instead of failing); commits when the body returns.
macro_rules! write_tx {
    ($db:expr, $tx:ident => $body:block) => {
        match $db {
            $crate::db::Db::Sqlite { write, .. } => {
                let mut $tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(StoreError::from)?;
                let out = $body;
                $tx.commit().await.map_err(StoreError::from)?;
                out
            }
            $crate::db::Db::Pg(pool) => {
                let mut $tx = pool.begin().await.map_err(StoreError::from)?;
                let out = $body;
                $tx.commit().await.map_err(StoreError::from)?;
                out
            }
        }
    };
}
pub(crate) use write_tx;

/// A move asked for through `POST /api/v1/leads/{id}/status`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub status: String,
    pub reason: Option<String>,
    pub comment: Option<String>,
    /// For `postponed`: when to come back to the lead (a reminder task is due then).
    #[schema(format = DateTime)]
    pub until: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reason {
    pub kind: String,
    pub code: String,
    pub name_en: String,
    pub name_ru: String,
    pub active: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Task {
    pub id: Uuid,
    pub lead_id: Uuid,
    pub kind: String,
    pub title: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub due_at: Option<Ts>,
    pub assignee_id: Option<Uuid>,
    pub status: String,
    pub result: Option<String>,
    pub created_by: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Ts,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub done_at: Option<Ts>,
    pub overdue: bool,
    /// The lead's name, in task lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lead_name: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TaskRow {
    id: Uuid,
    lead_id: Uuid,
    kind: String,
    title: String,
    due_at: Option<Ts>,
    assignee_id: Option<Uuid>,
    status: String,
    result: Option<String>,
    created_by: Option<String>,
    created_at: Ts,
    done_at: Option<Ts>,
    #[sqlx(default)]
    lead_name: Option<String>,
}

pub const TASK_KINDS: &[&str] = &["call", "email", "meeting", "proposal", "other"];
pub const ACTIVITY_KINDS: &[&str] = &["call", "email", "meeting", "proposal", "chat", "note"];
/// Activities that count as touching the lead (answering it).
pub const TOUCHES: &[&str] = &["call", "email", "meeting", "chat"];

/// The company's working hours, in which response deadlines are counted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    pub timezone: String,
    #[schema(value_type = Object)]
    pub hours: WeekHours,
    #[serde(default)]
    pub holidays: Vec<String>,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar { timezone: "Europe/Moscow".into(), hours: WeekHours::office(), holidays: Vec::new() }
    }
}

impl Calendar {
    pub fn duty(&self) -> Option<Duty> {
        let holidays = self.holidays.iter().filter_map(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()).collect();
        Duty::new(parse_tz(&self.timezone)?, &self.hours, holidays, Vec::new()).ok()
    }
}

/// Which fields make a card complete: a lead is normal at 3–5 filled, a client at 10–15.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletenessFields {
    pub lead: Vec<String>,
    pub client: Vec<String>,
}

impl Default for CompletenessFields {
    fn default() -> Self {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        CompletenessFields {
            lead: v(&["name", "phone", "email", "company", "interest"]),
            client: v(&[
                "name",
                "phone",
                "email",
                "messenger",
                "company",
                "position",
                "city",
                "interest",
                "budget",
                "fields.industry",
                "fields.employees",
                "fields.inn",
                "fields.site",
                "fields.birthday",
                "fields.address",
            ]),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Completeness {
    pub filled: usize,
    pub of: usize,
    pub percent: u32,
    pub missing: Vec<String>,
    /// `normal` at 3 or more of the lead fields filled (a client card: 10 or more).
    pub normal: bool,
}

pub fn completeness(lead: &Lead, fields: &[String], normal_at: usize) -> Completeness {
    let v = serde_json::to_value(lead).unwrap_or(Value::Null);
    let filled_of = |f: &str| -> bool {
        // Only lead fields count (a list saved before lists were checked may name others).
        if !fillable(f) {
            return false;
        }
        let x = match f.strip_prefix("fields.") {
            Some(k) => v.get("fields").and_then(|o| o.get(k)),
            None => v.get(f),
        };
        x.is_some_and(|x| !x.is_null() && x.as_str().is_none_or(|s| !s.trim().is_empty()))
    };
    let missing: Vec<String> = fields.iter().filter(|f| !filled_of(f)).cloned().collect();
    let filled = fields.len() - missing.len();
    Completeness {
        filled,
        of: fields.len(),
        percent: if fields.is_empty() { 100 } else { (filled * 100 / fields.len()) as u32 },
        missing,
        normal: filled >= normal_at.min(fields.len()),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Script {
    #[serde(default = "Uuid::now_v7")]
    pub id: Uuid,
    pub name: String,
    /// Matches `fields.segment` of the lead; none: any.
    pub segment: Option<String>,
    pub channel: Option<String>,
    pub status: Option<String>,
    pub body: String,
}

#[derive(sqlx::FromRow)]
struct NotificationRow {
    id: i64,
    kind: String,
    lead_id: Option<Uuid>,
    data: Value,
    created_at: Ts,
    read_at: Option<Ts>,
}

/// A task as asked for.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    pub kind: &'a str,
    pub title: &'a str,
    pub due: Option<Ts>,
    pub assignee: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: i64,
    pub kind: String,
    pub lead_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub data: Value,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Ts,
    pub read: bool,
}

/// Lead fields `PATCH /api/v1/leads/{id}` may change.
pub const EDITABLE: &[&str] =
    &["name", "phone", "email", "messenger", "company", "position", "city", "interest", "message", "budget", "fields"];

impl Store {
    /// Reasons a new installation starts with; added once.
    pub(crate) async fn seed_reasons(&self) -> Result<(), StoreError> {
        let n: i64 = with_read!(&self.db, p => { sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM reasons").fetch_one(p).await? });
        if n > 0 {
            return Ok(());
        }
        for (kind, list) in [("refused", REFUSAL_REASONS), ("junk", JUNK_REASONS)] {
            for (i, (code, en, ru)) in list.iter().enumerate() {
                with_write!(&self.db, p => {
                    sqlx::query("INSERT INTO reasons (kind, code, name_en, name_ru, active, position) VALUES ($1, $2, $3, $4, TRUE, $5) ON CONFLICT DO NOTHING")
                        .bind(kind).bind(code).bind(en).bind(ru).bind(i as i32).execute(p).await?;
                });
            }
        }
        Ok(())
    }

    pub async fn reasons(&self, kind: Option<&str>) -> Result<Vec<Reason>, StoreError> {
        let rows: Vec<(String, String, String, String, bool)> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT kind, code, name_en, name_ru, active FROM reasons WHERE (CAST($1 AS TEXT) IS NULL OR kind = $1) ORDER BY kind, position")
                .bind(kind).fetch_all(p).await?
        });
        Ok(rows.into_iter().map(|(kind, code, name_en, name_ru, active)| Reason { kind, code, name_en, name_ru, active }).collect())
    }

    /// Replaces the list of reasons of a kind; codes no longer listed stay (leads carry
    /// them) but become inactive.
    pub async fn set_reasons(&self, kind: &str, list: &[(String, String, String)]) -> Result<(), StoreError> {
        write_tx!(&self.db, tx => {
            sqlx::query("UPDATE reasons SET active = FALSE WHERE kind = $1").bind(kind).execute(&mut *tx).await?;
            for (i, (code, en, ru)) in list.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO reasons (kind, code, name_en, name_ru, active, position) VALUES ($1, $2, $3, $4, TRUE, $5) \
                     ON CONFLICT (kind, code) DO UPDATE SET name_en = excluded.name_en, name_ru = excluded.name_ru, active = TRUE, position = excluded.position",
                )
                .bind(kind).bind(code).bind(en).bind(ru).bind(i as i32).execute(&mut *tx).await?;
            }
        });
        Ok(())
    }

    /// A setting (JSON), or None when never set.
    pub async fn setting(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let v: Option<Value> = with_read!(&self.db, p => {
            sqlx::query_scalar::<_, Value>("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(p).await?
        });
        Ok(v)
    }

    pub async fn put_setting(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                .bind(key).bind(value).execute(p).await?;
        });
        Ok(())
    }

    async fn setting_or<T: serde::de::DeserializeOwned>(&self, key: &str, default: impl FnOnce() -> T) -> Result<T, StoreError> {
        Ok(self.setting(key).await?.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_else(default))
    }

    pub async fn assignment_rules(&self) -> Result<Vec<Rule>, StoreError> {
        self.setting_or("assignment_rules", default_rules).await
    }
    pub async fn slas(&self) -> Result<Vec<Sla>, StoreError> {
        self.setting_or("slas", default_slas).await
    }
    pub async fn calendar(&self) -> Result<Calendar, StoreError> {
        self.setting_or("calendar", Calendar::default).await
    }
    pub async fn completeness_fields(&self) -> Result<CompletenessFields, StoreError> {
        self.setting_or("completeness", CompletenessFields::default).await
    }
    pub async fn scripts(&self) -> Result<Vec<Script>, StoreError> {
        self.setting_or("scripts", Vec::new).await
    }

    /// The script for a lead: the first whose segment, channel and status (those given) match.
    pub async fn script_for(&self, lead: &Lead) -> Result<Option<Script>, StoreError> {
        let segment = lead.fields.get("segment").and_then(Value::as_str).map(str::to_lowercase);
        Ok(self.scripts().await?.into_iter().find(|s| {
            s.segment.as_ref().is_none_or(|x| Some(x.to_lowercase()) == segment)
                && s.channel.as_ref().is_none_or(|c| *c == lead.channel)
                && s.status.as_ref().is_none_or(|c| *c == lead.status)
        }))
    }

    /// Moves a lead through the state machine; the move is on its timeline with its actor.
    pub async fn change_status(&self, id: Uuid, change: &StatusChange, actor: &str, access: &Access) -> Result<Lead, WorkflowError> {
        let to: LeadStatus = change.status.parse().map_err(|_| invalid("status", "unknown status", "неизвестный статус"))?;
        let current = self.lead_as(id, access).await?.ok_or(WorkflowError::NotFound)?;
        let from: LeadStatus = current.status.parse().unwrap_or(LeadStatus::New);
        if to == LeadStatus::Converted {
            return Err(if from == LeadStatus::Converted {
                WorkflowError::AlreadyConverted
            } else {
                WorkflowError::InvalidTransition { from: from.to_string(), to: to.to_string() }
            });
        }
        if !can_move(from, to) {
            return Err(WorkflowError::InvalidTransition { from: from.to_string(), to: to.to_string() });
        }
        let reason = change.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
        if needs_reason(to) {
            let Some(code) = reason else { return Err(WorkflowError::ReasonRequired) };
            let known = self.reasons(Some(to.as_str())).await?.into_iter().any(|r| r.code == code && r.active);
            if !known {
                return Err(invalid("reason", "not one of the reasons of this status", "нет такой причины для этого статуса"));
            }
        }
        if change.comment.as_ref().is_some_and(|c| c.chars().count() > 5000) {
            return Err(invalid("comment", "too long", "слишком длинный комментарий"));
        }
        let now = self.now();
        let until = match (to, change.until.as_deref()) {
            (LeadStatus::Postponed, Some(u)) => match chrono::DateTime::parse_from_rfc3339(u) {
                Ok(t) if t.with_timezone(&chrono::Utc) > now.0 => Some(Ts::from(t.with_timezone(&chrono::Utc))),
                _ => return Err(invalid("until", "must be a future RFC 3339 time", "нужно будущее время в RFC 3339")),
            },
            (LeadStatus::Postponed, None) => return Err(invalid("until", "postponed needs a date", "для отложенного нужна дата")),
            _ => None,
        };
        let data = json!({"from": from.as_str(), "to": to.as_str(), "reason": reason, "comment": change.comment, "until": until});
        let closed = matches!(to, LeadStatus::Refused | LeadStatus::Junk);
        write_tx!(&self.db, tx => {
            let n = sqlx::query(
                "UPDATE leads SET status = $1, status_reason = $2, postponed_until = $3, updated_at = $4, \
                 sla_due_at = CASE WHEN $5 THEN NULL ELSE sla_due_at END, queued_at = CASE WHEN $5 THEN NULL ELSE queued_at END \
                 WHERE id = $6 AND status = $7",
            )
            .bind(to.as_str()).bind(reason).bind(until).bind(now).bind(closed).bind(id).bind(from.as_str())
            .execute(&mut *tx).await?.rows_affected();
            if n != 1 {
                return Err(WorkflowError::InvalidTransition { from: from.to_string(), to: to.to_string() });
            }
            sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'status_changed', $2, $3, $4, $2)")
                .bind(id).bind(now).bind(actor).bind(&data).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) VALUES ('lead.state_changed', $1, $2, $3, $3)")
                .bind(id).bind(&data).bind(now).execute(&mut *tx).await?;
            if let Some(due) = until {
                // The reminder: a task for the owner on the day to come back.
                sqlx::query(
                    "INSERT INTO tasks (id, lead_id, kind, title, due_at, assignee_id, status, created_by, created_at) \
                     VALUES ($1, $2, 'call', $3, $4, $5, 'open', $6, $7)",
                )
                .bind(Uuid::now_v7()).bind(id).bind("Reminder: the postponed lead / Напоминание: отложенный лид").bind(due)
                .bind(current.owner.as_ref().map(|o| o.id)).bind(actor).bind(now)
                .execute(&mut *tx).await?;
            }
        });
        self.lead(id).await?.ok_or(WorkflowError::NotFound)
    }

    /// A move without the state machine's checks, for tests and imports of history.
    pub async fn set_status(&self, id: Uuid, status: LeadStatus, reason: Option<&str>, actor: Option<&str>) -> Result<Lead, StoreError> {
        let now = self.now();
        let before = self.lead(id).await?.ok_or(StoreError::NotFound)?;
        let data = json!({"from": before.status, "to": status.as_str(), "reason": reason});
        write_tx!(&self.db, tx => {
            sqlx::query("UPDATE leads SET status = $1, status_reason = $2, updated_at = $3 WHERE id = $4")
                .bind(status.as_str()).bind(reason).bind(now).bind(id).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'status_changed', $2, $3, $4, $2)")
                .bind(id).bind(now).bind(actor).bind(&data).execute(&mut *tx).await?;
        });
        self.lead(id).await?.ok_or(StoreError::NotFound)
    }

    /// Logs a call, e-mail, chat reply, meeting, proposal or note. The owner's first touch
    /// is kept (it stops the response deadline) and an assigned lead is now in progress.
    pub async fn log_activity(
        &self,
        id: Uuid,
        kind: &str,
        data: &Value,
        actor: &str,
        user: Option<Uuid>,
        access: &Access,
    ) -> Result<Lead, WorkflowError> {
        if !ACTIVITY_KINDS.contains(&kind) {
            return Err(invalid(
                "kind",
                "use call, email, meeting, proposal, chat or note",
                "допустимо call, email, meeting, proposal, chat или note",
            ));
        }
        let lead = self.lead_as(id, access).await?.ok_or(WorkflowError::NotFound)?;
        let now = self.now();
        let touch = TOUCHES.contains(&kind) && user.is_some() && lead.owner.as_ref().map(|o| o.id) == user;
        write_tx!(&self.db, tx => {
            sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, $2, $3, $4, $5, $3)")
                .bind(id).bind(kind).bind(now).bind(actor).bind(data).execute(&mut *tx).await?;
            if touch {
                sqlx::query("UPDATE leads SET first_touch_at = COALESCE(first_touch_at, $1), updated_at = $1 WHERE id = $2")
                    .bind(now).bind(id).execute(&mut *tx).await?;
                let moved = sqlx::query("UPDATE leads SET status = 'in_progress' WHERE id = $1 AND status = 'assigned'").bind(id).execute(&mut *tx).await?.rows_affected();
                if moved == 1 {
                    sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'status_changed', $2, $3, $4, $2)")
                        .bind(id).bind(now).bind(actor).bind(json!({"from": "assigned", "to": "in_progress", "reason": "first_touch"}))
                        .execute(&mut *tx).await?;
                }
            }
        });
        self.lead(id).await?.ok_or(WorkflowError::NotFound)
    }

    pub async fn create_task(&self, lead_id: Uuid, t: &NewTask<'_>, actor: &str, access: &Access) -> Result<Task, WorkflowError> {
        let (kind, title, due, assignee) = (t.kind, t.title, t.due, t.assignee);
        if !TASK_KINDS.contains(&kind) {
            return Err(invalid(
                "kind",
                "use call, email, meeting, proposal or other",
                "допустимо call, email, meeting, proposal или other",
            ));
        }
        if title.trim().is_empty() || title.chars().count() > 500 {
            return Err(invalid("title", "use 1 to 500 characters", "от 1 до 500 символов"));
        }
        let lead = self.lead_as(lead_id, access).await?.ok_or(WorkflowError::NotFound)?;
        if let Some(a) = assignee
            && self.user(a).await?.is_none()
        {
            return Err(invalid("assignee_id", "no such user", "нет такого пользователя"));
        }
        let assignee = assignee.or(lead.owner.as_ref().map(|o| o.id));
        let id = Uuid::now_v7();
        let now = self.now();
        write_tx!(&self.db, tx => {
            sqlx::query(
                "INSERT INTO tasks (id, lead_id, kind, title, due_at, assignee_id, status, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8)",
            )
            .bind(id).bind(lead_id).bind(kind).bind(title.trim()).bind(due).bind(assignee).bind(actor).bind(now).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'task_created', $2, $3, $4, $2)")
                .bind(lead_id).bind(now).bind(actor).bind(json!({"task_id": id, "kind": kind, "title": title.trim(), "due_at": due, "assignee_id": assignee}))
                .execute(&mut *tx).await?;
        });
        self.task(id).await?.ok_or(WorkflowError::NotFound)
    }

    async fn task(&self, id: Uuid) -> Result<Option<Task>, StoreError> {
        let row: Option<TaskRow> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT id, lead_id, kind, title, due_at, assignee_id, status, result, created_by, created_at, done_at FROM tasks WHERE id = $1")
                .bind(id).fetch_optional(p).await?
        });
        let now = self.now();
        Ok(row.map(|r| task_of(r, now)))
    }

    /// Tasks of a lead the viewer may see.
    pub async fn lead_tasks(&self, lead_id: Uuid, access: &Access) -> Result<Vec<Task>, WorkflowError> {
        if !self.can_see(lead_id, access).await? {
            return Err(WorkflowError::NotFound);
        }
        let rows: Vec<TaskRow> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT id, lead_id, kind, title, due_at, assignee_id, status, result, created_by, created_at, done_at FROM tasks WHERE lead_id = $1 ORDER BY created_at")
                .bind(lead_id).fetch_all(p).await?
        });
        let now = self.now();
        Ok(rows.into_iter().map(|r| task_of(r, now)).collect())
    }

    /// Open tasks on leads the viewer may see: assigned to `assignee` (or anyone), only
    /// overdue ones when asked.
    pub async fn tasks(&self, access: &Access, assignee: Option<Uuid>, overdue_only: bool) -> Result<Vec<Task>, StoreError> {
        let now = self.now();
        let mut sql = format!(
            "SELECT t.id, t.lead_id, t.kind, t.title, t.due_at, t.assignee_id, t.status, t.result, t.created_by, t.created_at, t.done_at, \
             l.name AS lead_name FROM tasks t JOIN leads l ON l.id = t.lead_id WHERE t.status = 'open' AND {}",
            self.access_sql(access)
        );
        if let Some(a) = assignee {
            sql.push_str(&format!(" AND t.assignee_id = {}", self.uuid_lit(a)));
        }
        if overdue_only {
            sql.push_str(" AND t.due_at IS NOT NULL AND t.due_at < $1");
        }
        sql.push_str(" ORDER BY t.due_at, t.id LIMIT 1000");
        let rows: Vec<TaskRow> = with_read!(&self.db, p => {
            let q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            if overdue_only { q.bind(now).fetch_all(p).await? } else { q.fetch_all(p).await? }
        });
        Ok(rows.into_iter().map(|r| task_of(r, now)).collect())
    }

    pub async fn complete_task(&self, id: Uuid, result: Option<&str>, actor: &str, access: &Access) -> Result<Task, WorkflowError> {
        let task = self.task(id).await?.ok_or(WorkflowError::NotFound)?;
        if !self.can_see(task.lead_id, access).await? {
            return Err(WorkflowError::NotFound);
        }
        if result.is_some_and(|r| r.chars().count() > 5000) {
            return Err(invalid("result", "too long", "слишком длинный результат"));
        }
        let now = self.now();
        write_tx!(&self.db, tx => {
            let n = sqlx::query("UPDATE tasks SET status = 'done', result = $1, done_at = $2 WHERE id = $3 AND status = 'open'")
                .bind(result).bind(now).bind(id).execute(&mut *tx).await?.rows_affected();
            if n == 1 {
                sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'task_done', $2, $3, $4, $2)")
                    .bind(task.lead_id).bind(now).bind(actor).bind(json!({"task_id": id, "title": task.title, "result": result}))
                    .execute(&mut *tx).await?;
            }
        });
        self.task(id).await?.ok_or(WorkflowError::NotFound)
    }

    /// Notifies users (heads of sales, owners) of something that needs them.
    pub(crate) async fn notify(&self, users: &[Uuid], kind: &str, lead: Option<Uuid>, data: &Value) -> Result<(), StoreError> {
        let now = self.now();
        for u in users {
            with_write!(&self.db, p => {
                sqlx::query("INSERT INTO notifications (user_id, kind, lead_id, data, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(u).bind(kind).bind(lead).bind(data).bind(now).execute(p).await?;
            });
        }
        Ok(())
    }

    /// Reminds the assignee of each open task whose due time has come (within the last day:
    /// older ones are just overdue) — for a task without one, the lead's owner, and for an
    /// unowned lead the heads of sales — once:
    /// the mark and the notification are one transaction, and only one process makes it.
    pub async fn remind_due_tasks(&self) -> Result<usize, StoreError> {
        let now = self.now();
        let since = Ts::from(now.0 - chrono::Duration::days(1));
        type Due = (Uuid, Uuid, Option<Uuid>, String, String, Ts, Option<Uuid>);
        let due: Vec<Due> = with_read!(&self.db, p => {
            sqlx::query_as(
                "SELECT t.id, t.lead_id, COALESCE(t.assignee_id, l.owner_id), t.kind, t.title, t.due_at, u.team_id FROM tasks t \
                 JOIN leads l ON l.id = t.lead_id LEFT JOIN users u ON u.id = COALESCE(t.assignee_id, l.owner_id) \
                 WHERE t.status = 'open' AND t.reminded_at IS NULL AND t.due_at <= $1 AND t.due_at > $2 ORDER BY t.due_at LIMIT 500",
            )
            .bind(now).bind(since).fetch_all(p).await?
        });
        let mut reminded = 0;
        for (id, lead, assignee, kind, title, due_at, team) in due {
            let to = match assignee {
                Some(a) => vec![a],
                None => self.supervisors(team).await?,
            };
            let data = json!({"task_id": id, "kind": kind, "title": title, "due_at": due_at});
            let done = write_tx!(&self.db, tx => {
                let n = sqlx::query("UPDATE tasks SET reminded_at = $1 WHERE id = $2 AND reminded_at IS NULL AND status = 'open'")
                    .bind(now).bind(id).execute(&mut *tx).await?.rows_affected();
                if n == 1 {
                    for u in &to {
                        sqlx::query("INSERT INTO notifications (user_id, kind, lead_id, data, created_at) VALUES ($1, 'task_due', $2, $3, $4)")
                            .bind(u).bind(lead).bind(&data).bind(now).execute(&mut *tx).await?;
                    }
                }
                n == 1
            });
            reminded += usize::from(done);
        }
        Ok(reminded)
    }

    pub async fn notifications(&self, user: Uuid) -> Result<Vec<Notification>, StoreError> {
        let rows: Vec<NotificationRow> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT id, kind, lead_id, data, created_at, read_at FROM notifications WHERE user_id = $1 ORDER BY id DESC LIMIT 200")
                .bind(user).fetch_all(p).await?
        });
        Ok(rows
            .into_iter()
            .map(|r| Notification {
                id: r.id,
                kind: r.kind,
                lead_id: r.lead_id,
                data: r.data,
                created_at: r.created_at,
                read: r.read_at.is_some(),
            })
            .collect())
    }

    /// Heads of sales (of a team, or all) and admins: who hears about queues and escalations.
    pub(crate) async fn supervisors(&self, team: Option<Uuid>) -> Result<Vec<Uuid>, StoreError> {
        let rows: Vec<(Uuid, String, Option<Uuid>)> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT id, role, team_id FROM users WHERE active AND role IN ('head_of_sales', 'admin')").fetch_all(p).await?
        });
        let heads: Vec<Uuid> =
            rows.iter().filter(|(_, r, t)| r == "head_of_sales" && (team.is_none() || *t == team)).map(|r| r.0).collect();
        Ok(if heads.is_empty() { rows.into_iter().filter(|r| r.1 == "admin").map(|r| r.0).collect() } else { heads })
    }

    /// Completeness of each manager's open cards, as the viewer may see them (a manager:
    /// own; a head of sales: the team's): computed in the database over every open lead, with
    /// the same rule as a single card's completeness.
    pub async fn completeness_by_manager(&self, access: &Access) -> Result<Vec<ManagerCompleteness>, StoreError> {
        let fields = self.completeness_fields().await?;
        let sqlite = matches!(self.db, crate::db::Db::Sqlite { .. });
        let filled: Vec<String> = fields.lead.iter().map(|f| filled_sql(f, sqlite)).collect();
        let of = filled.len();
        let sum = if filled.is_empty() { "0".to_string() } else { filled.join(" + ") };
        let normal_at = 3.min(of);
        let sql = format!(
            "SELECT c.owner_id, u.name, COUNT(*), SUM(c.f), SUM(CASE WHEN c.f >= {normal_at} THEN 1 ELSE 0 END) \
             FROM (SELECT l.owner_id, ({sum}) AS f FROM leads l WHERE l.owner_id IS NOT NULL AND l.status IN {OPEN_STATES} AND {acc}) c \
             JOIN users u ON u.id = c.owner_id GROUP BY c.owner_id, u.name ORDER BY u.name, c.owner_id",
            acc = self.access_sql(access)
        );
        type Line = (Uuid, String, i64, Option<i64>, Option<i64>);
        let rows: Vec<Line> = with_read!(&self.db, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await?
        });
        Ok(rows
            .into_iter()
            .map(|(user_id, name, open_leads, filled, normal)| {
                let filled = filled.unwrap_or(0);
                let percent = if of == 0 || open_leads == 0 {
                    100.0
                } else {
                    (filled as f64 * 1000.0 / (open_leads as f64 * of as f64)).round() / 10.0
                };
                ManagerCompleteness { user_id, name, open_leads, average_percent: percent, normal_cards: normal.unwrap_or(0) }
            })
            .collect())
    }
}

/// The states of a lead still being worked on.
const OPEN_STATES: &str = "('new', 'nurturing', 'sales_ready', 'assigned', 'in_progress', 'qualified', 'postponed')";

/// Lead columns a completeness list may name (besides `fields.<key>`).
const FILLABLE: &[&str] = &[
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
    "referrer",
    "landing_page",
    "tracking_number",
    "external_id",
];

/// Whether `f` is a field a completeness list may name.
fn fillable(f: &str) -> bool {
    match f.strip_prefix("fields.") {
        Some(k) => !k.is_empty() && k.len() <= 64 && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        None => FILLABLE.contains(&f),
    }
}

/// SQL (on `leads l`) giving 1 when the field is filled, by the rule of [`completeness`]:
/// present, not null, and for text not blank.
fn filled_sql(f: &str, sqlite: bool) -> String {
    if !fillable(f) {
        // A name saved before lists were checked: never filled, as on the card.
        return "0".to_string();
    }
    const BLANK: &str = "' \t\r\n'";
    let text = |x: String| format!("(CASE WHEN TRIM(COALESCE({x}, ''), {BLANK}) <> '' THEN 1 ELSE 0 END)");
    match f.strip_prefix("fields.") {
        Some(k) if sqlite => text(format!("CAST(json_extract(l.fields, '$.\"{k}\"') AS TEXT)")),
        Some(k) => text(format!("(l.fields ->> '{k}')")),
        None if f == "budget" => "(CASE WHEN l.budget IS NOT NULL THEN 1 ELSE 0 END)".to_string(),
        None => text(format!("l.{f}")),
    }
}

/// One manager's open cards: how many, their average completeness, and how many are filled
/// to the normal (3 lead fields).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ManagerCompleteness {
    pub user_id: Uuid,
    pub name: String,
    pub open_leads: i64,
    /// The average share of the required fields filled, in percent (one decimal).
    pub average_percent: f64,
    pub normal_cards: i64,
}

impl CompletenessFields {
    /// Names the first entry that is not a lead field (`lead[2]`, `client[0]`).
    pub fn check(&self) -> Result<(), String> {
        for (list, name) in [(&self.lead, "lead"), (&self.client, "client")] {
            if list.len() > 40 {
                return Err(format!("{name}: at most 40 fields"));
            }
            if let Some((i, f)) = list.iter().enumerate().find(|(_, f)| !fillable(f)) {
                return Err(format!("{name}[{i}]: \"{f}\" is not a lead field (use a column such as phone or fields.<key>)"));
            }
        }
        Ok(())
    }
}

fn task_of(r: TaskRow, now: Ts) -> Task {
    let overdue = r.status == "open" && r.due_at.is_some_and(|d| d < now);
    Task {
        id: r.id,
        lead_id: r.lead_id,
        kind: r.kind,
        title: r.title,
        due_at: r.due_at,
        assignee_id: r.assignee_id,
        status: r.status,
        result: r.result,
        created_by: r.created_by,
        created_at: r.created_at,
        done_at: r.done_at,
        overdue,
        lead_name: r.lead_name,
    }
}

impl Store {
    /// Changes lead fields: each change is audited on the timeline (old → new, who, when),
    /// new contacts are added to the lead's identities (a contact of another lead is refused),
    /// and the profile part of the score is re-run.
    pub async fn update_lead(
        &self,
        id: Uuid,
        patch: &serde_json::Map<String, Value>,
        actor: &str,
        access: &Access,
        region: voronka_domain::PhoneRegion,
    ) -> Result<Lead, WorkflowError> {
        let current = self.lead_as(id, access).await?.ok_or(WorkflowError::NotFound)?;
        let before = serde_json::to_value(&current).unwrap_or(Value::Null);
        let mut changes: Vec<(&str, Value, Value)> = Vec::new();
        let mut idents: Vec<String> = Vec::new();
        for (k, v) in patch {
            let field = EDITABLE
                .iter()
                .find(|f| **f == k)
                .copied()
                .ok_or_else(|| invalid(k, "not a field that can be changed here", "это поле здесь не меняется"))?;
            let text = |max: usize| -> Result<Value, WorkflowError> {
                match v {
                    Value::Null => Ok(Value::Null),
                    Value::String(s) if s.contains('\0') => Err(invalid(field, "contains a NUL character", "содержит символ NUL")),
                    Value::String(s) if s.trim().is_empty() => Ok(Value::Null),
                    Value::String(s) if s.chars().count() <= max => Ok(Value::String(s.trim().to_string())),
                    Value::String(_) => Err(invalid(field, "too long", "слишком длинное значение")),
                    _ => Err(invalid(field, "must be a string", "должно быть строкой")),
                }
            };
            let new = match field {
                "phone" => match text(40)? {
                    Value::String(s) => {
                        let p = voronka_domain::Phone::parse(&s, region)
                            .ok_or_else(|| invalid("phone", "not a valid phone number", "некорректный номер телефона"))?;
                        idents.push(p.identity());
                        Value::String(p.as_str().into())
                    }
                    other => other,
                },
                "email" => match text(254)? {
                    Value::String(s) => {
                        let e = voronka_domain::Email::parse(&s)
                            .ok_or_else(|| invalid("email", "not a valid e-mail address", "некорректный адрес e-mail"))?;
                        idents.push(e.identity());
                        Value::String(e.as_str().into())
                    }
                    other => other,
                },
                "messenger" => match text(100)? {
                    Value::String(s) => {
                        let m = voronka_domain::Messenger::parse(&s, region).ok_or_else(|| {
                            invalid("messenger", "use @telegram, wa:+7…, vk.com/…", "укажите @telegram, wa:+7…, vk.com/…")
                        })?;
                        idents.push(m.identity());
                        Value::String(m.as_str().into())
                    }
                    other => other,
                },
                "budget" => match v {
                    Value::Null => Value::Null,
                    Value::Number(n) if n.as_f64().is_some_and(|x| x >= 0.0) => v.clone(),
                    _ => return Err(invalid("budget", "must be a number not below 0", "нужно неотрицательное число")),
                },
                "fields" => match v {
                    Value::Object(o) if o.len() <= 50 && v.to_string().len() <= 16 * 1024 => {
                        let mut merged = current.fields.as_object().cloned().unwrap_or_default();
                        for (fk, fv) in o {
                            if fv.is_null() {
                                merged.remove(fk);
                            } else {
                                merged.insert(fk.clone(), fv.clone());
                            }
                        }
                        Value::Object(merged)
                    }
                    _ => return Err(invalid("fields", "must be an object of at most 50 fields", "нужен объект не более чем из 50 полей")),
                },
                "message" => text(10_000)?,
                "interest" => text(1000)?,
                "company" => text(300)?,
                "city" => text(100)?,
                _ => text(200)?,
            };
            let old = before.get(field).cloned().unwrap_or(Value::Null);
            if old != new {
                changes.push((field, old, new));
            }
        }
        if changes.is_empty() {
            return Ok(current);
        }
        // Contacts that already belong to another lead are refused, not stolen.
        for ident in &idents {
            let owner: Option<Uuid> = with_read!(&self.db, p => {
                sqlx::query_scalar::<_, Uuid>("SELECT lead_id FROM identities WHERE ident = $1").bind(ident).fetch_optional(p).await?
            });
            if let Some(other) = owner.filter(|o| *o != id) {
                let field = ident.split(':').next().unwrap_or("phone");
                let field = match field {
                    "phone" => "phone",
                    "email" => "email",
                    _ => "messenger",
                };
                return Err(WorkflowError::ContactTaken { field: field.into(), lead_id: other });
            }
        }
        let now = self.now();
        let get = |f: &str| -> Option<Value> { changes.iter().find(|c| c.0 == f).map(|c| c.2.clone()) };
        let s = |f: &str| -> Option<String> {
            match get(f) {
                Some(Value::String(x)) => Some(x),
                Some(_) => None,
                None => before.get(f).and_then(Value::as_str).map(String::from),
            }
        };
        let budget = match get("budget") {
            Some(v) => v.as_f64(),
            None => current.budget,
        };
        let fields = get("fields").unwrap_or(current.fields.clone());
        let phone = s("phone");
        let search = voronka_domain::lead::search_text(
            s("name").as_deref(),
            s("company").as_deref(),
            s("email").as_deref(),
            phone.clone().map(voronka_domain::Phone::from_e164_unchecked).as_ref(),
            s("messenger").as_deref(),
        );
        write_tx!(&self.db, tx => {
            sqlx::query(
                "UPDATE leads SET name = $1, phone = $2, email = $3, messenger = $4, company = $5, position = $6, city = $7, interest = $8, \
                 message = $9, budget = $10, fields = $11, search = $12, updated_at = $13 WHERE id = $14",
            )
            .bind(s("name")).bind(phone.as_deref()).bind(s("email")).bind(s("messenger")).bind(s("company")).bind(s("position")).bind(s("city"))
            .bind(s("interest")).bind(s("message")).bind(budget).bind(&fields).bind(&search).bind(now).bind(id)
            .execute(&mut *tx).await?;
            for ident in &idents {
                let kind = ident.split(':').next().unwrap_or("other");
                sqlx::query("INSERT INTO identities (ident, kind, lead_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
                    .bind(ident).bind(kind).bind(id).bind(now).execute(&mut *tx).await?;
            }
            for (field, old, new) in &changes {
                sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'field_changed', $2, $3, $4, $2)")
                    .bind(id).bind(now).bind(actor).bind(json!({"field": field, "old": old, "new": new})).execute(&mut *tx).await?;
            }
        });
        self.rescore_lead(id).await?;
        self.lead(id).await?.ok_or(WorkflowError::NotFound)
    }

    /// Re-scores one lead from its profile and events with the active model (after a
    /// profile edit); a crossing of the sales-ready threshold moves it to sales.
    pub async fn rescore_lead(&self, id: Uuid) -> Result<(), StoreError> {
        let (version, model) = self.refresh_model().await?;
        let Some(lead) = self.lead(id).await? else { return Ok(()) };
        let row: Option<(Vec<u8>, i64, f64, f64)> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT ledger, model_version, score, priority FROM lead_scores WHERE lead_id = $1").bind(id).fetch_optional(p).await?
        });
        let events: Option<Vec<u8>> = with_read!(&self.db, p => {
            sqlx::query_scalar::<_, Vec<u8>>("SELECT events FROM lead_inputs WHERE lead_id = $1").bind(id).fetch_optional(p).await?
        });
        let sql = format!("SELECT {} FROM {} WHERE l.id = $1", crate::leads::LEAD_COLUMNS, crate::leads::LEAD_FROM);
        let lrow: Option<crate::leads::LeadRow> =
            with_read!(&self.db, p => { sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await? });
        let Some(lrow) = lrow else { return Ok(()) };
        let (ledger, old_version, score, priority) = row.unwrap_or((vec![1], 0, 0.0, 0.0));
        let pass = crate::rescore::Pass::single(self, model.clone(), version).await?;
        let input = crate::rescore::Input {
            lead_id: id,
            ledger,
            version: old_version,
            score,
            priority,
            events,
            profile: Some(crate::intake::profile_of_row(&lrow)),
            created: Some(lrow.created_at.micros()),
        };
        let Some(out) = pass.run(&input) else { return Ok(()) };
        let now = self.now();
        let threshold = model.thresholds().sales_ready;
        let cross = lead.score < threshold && out.score >= threshold && matches!(lead.status.as_str(), "new" | "nurturing");
        // Beside the lead's row, locked as a foreign key's check would (PostgreSQL's score
        // table has none): a lead deleted meanwhile gets no score row.
        let upsert = format!(
            "INSERT INTO lead_scores (lead_id, score, priority, profile, temperature, grade, ledger, model_version, scored_at, status, owner_id) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, status, owner_id FROM leads WHERE id = $1{} \
             ON CONFLICT (lead_id) DO UPDATE SET score = excluded.score, priority = excluded.priority, \
             profile = excluded.profile, temperature = excluded.temperature, grade = excluded.grade, ledger = excluded.ledger, \
             model_version = excluded.model_version, scored_at = excluded.scored_at",
            if self.db.is_sqlite() { "" } else { " FOR KEY SHARE" }
        );
        write_tx!(&self.db, tx => {
            sqlx::query(sqlx::AssertSqlSafe(upsert.clone()))
            .bind(id).bind(out.score).bind(out.priority).bind(out.profile).bind(out.temperature).bind(out.grade).bind(&out.ledger).bind(version).bind(now)
            .execute(&mut *tx).await?;
            if cross {
                let n = sqlx::query("UPDATE leads SET status = 'sales_ready', updated_at = $1 WHERE id = $2 AND status IN ('new', 'nurturing')")
                    .bind(now).bind(id).execute(&mut *tx).await?.rows_affected();
                if n == 1 {
                    let data = json!({"from": lead.status, "to": "sales_ready", "reason": "score_threshold", "score": (out.score * 10.0).round() / 10.0});
                    sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'status_changed', $2, 'scoring', $3, $2)")
                        .bind(id).bind(now).bind(&data).execute(&mut *tx).await?;
                    sqlx::query("INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) VALUES ('lead.sales_ready', $1, $2, $3, $3)")
                        .bind(id).bind(&data).bind(now).execute(&mut *tx).await?;
                }
            }
        });
        Ok(())
    }
}
