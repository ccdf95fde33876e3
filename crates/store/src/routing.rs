//! Who gets a lead: routing by the assignment rules among the people on duty now, the
//! visible queue when nobody is, manual reassignment, and escalation of leads whose owner
//! did not touch them by the response deadline. Every step is a conditional update, so two
//! processes never assign one lead twice.

use crate::db::with_read;
use crate::ts::Ts;
use crate::users::{Access, User};
use crate::workflow::{WorkflowError, invalid, write_tx};
use crate::{Lead, Store, StoreError};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use uuid::Uuid;
use voronka_domain::assign::{Candidate, LeadFacts, choose, sla_seconds};

/// Statuses from which routing takes a lead.
/// Used as `status IN {ROUTABLE}`: open, unowned-able states, and not waiting for triage.
const ROUTABLE: &str = "('new', 'nurturing', 'sales_ready', 'postponed') AND triage IS NULL";
/// Statuses of leads that count against a person's capacity.
const OPEN_WORK: &str = "('assigned', 'in_progress', 'qualified', 'postponed')";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RouteOutcome {
    Assigned {
        user_id: Uuid,
        rule: String,
    },
    /// Nobody on duty: the lead waits in the queue.
    Queued,
    /// Already owned, closed, or changed by someone else meanwhile.
    Skipped,
}

/// One escalation: the deadline passed without a touch.
#[derive(Debug, Clone, Serialize)]
pub struct Escalation {
    pub lead_id: Uuid,
    pub from_user: Option<Uuid>,
    pub to_user: Option<Uuid>,
}

/// Records that `user` was just given a lead. The mark is later than every other person's,
/// even within one clock tick, so that "in turn" really rotates.
async fn mark_assigned<'c, DB>(tx: &mut sqlx::Transaction<'c, DB>, user: Uuid, now: Ts) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    Ts: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB>,
    Uuid: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    (Option<Ts>,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let (latest,): (Option<Ts>,) = sqlx::query_as("SELECT MAX(last_assigned_at) FROM users").fetch_one(&mut **tx).await?;
    let mark = match latest {
        Some(l) if l >= now => Ts::from(l.0 + chrono::Duration::microseconds(1)),
        _ => now,
    };
    sqlx::query("UPDATE users SET last_assigned_at = $1 WHERE id = $2").bind(mark).bind(user).execute(&mut **tx).await?;
    Ok(())
}

impl Store {
    /// People who can take leads, as routing sees them at `now`.
    async fn candidates(&self, now: Ts) -> Result<(Vec<Candidate>, HashMap<Uuid, User>), StoreError> {
        let users: Vec<User> =
            self.users(None).await?.into_iter().filter(|u| u.active && matches!(u.role.as_str(), "manager" | "telemarketer")).collect();
        let sql = format!("SELECT owner_id, COUNT(*) FROM leads WHERE owner_id IS NOT NULL AND status IN {OPEN_WORK} GROUP BY owner_id");
        let loads: Vec<(Uuid, i64)> = with_read!(&self.db, p => { sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await? });
        let loads: HashMap<Uuid, i64> = loads.into_iter().collect();
        let people = users
            .iter()
            .map(|u| Candidate {
                id: u.id,
                team_id: u.team_id,
                level: u.level.clone(),
                industries: u.industries.clone(),
                regions: u.regions.clone(),
                segments: u.segments.clone(),
                on_duty: u.duty().is_some_and(|d| d.on_duty(now.0)),
                open_leads: loads.get(&u.id).copied().unwrap_or(0) as u32,
                capacity: u.capacity.max(0) as u32,
                last_assigned: u.last_assigned_at.map(|t| t.micros()),
            })
            .collect();
        Ok((people, users.into_iter().map(|u| (u.id, u)).collect()))
    }

    fn facts(lead: &Lead) -> LeadFacts {
        let field = |k: &str| lead.fields.get(k).and_then(Value::as_str).map(String::from);
        LeadFacts {
            channel: lead.channel.clone(),
            temperature: lead.temperature.clone(),
            score: lead.score,
            region: lead.city.clone(),
            industry: field("industry"),
            segment: field("segment"),
            campaign: lead.campaign.clone(),
        }
    }

    /// The response deadline of a lead assigned at `at`, in the company's working time.
    async fn deadline(&self, lead: &Lead, at: Ts) -> Result<Option<Ts>, StoreError> {
        let Some(secs) = sla_seconds(&self.slas().await?, &lead.channel, &lead.temperature) else { return Ok(None) };
        let cal = self.calendar().await?;
        Ok(Some(Ts::from(match cal.duty() {
            Some(d) => d.add_working(at.0, secs),
            None => at.0 + chrono::Duration::seconds(secs),
        })))
    }

    /// Routes an unowned lead: assigns it by the rules to someone on duty, or queues it
    /// (once) and tells the heads of sales.
    pub async fn route_lead(&self, id: Uuid) -> Result<RouteOutcome, StoreError> {
        let Some(lead) = self.lead(id).await? else { return Ok(RouteOutcome::Skipped) };
        let routable = lead.owner.is_none() && matches!(lead.status.as_str(), "new" | "nurturing" | "sales_ready" | "postponed");
        if !routable {
            return Ok(RouteOutcome::Skipped);
        }
        let now = self.now();
        let (people, _) = self.candidates(now).await?;
        let rules = self.assignment_rules().await?;
        match choose(&rules, &Self::facts(&lead), &people, None) {
            Some((user, rule)) => {
                let name = rules.get(rule).map(|r| r.name.clone()).unwrap_or_default();
                if self.give(&lead, user, "routing", &name, now).await? {
                    Ok(RouteOutcome::Assigned { user_id: user, rule: name })
                } else {
                    Ok(RouteOutcome::Skipped)
                }
            }
            None => {
                let first_time = write_tx!(&self.db, tx => {
                    let sql = format!("UPDATE leads SET queued_at = $1 WHERE id = $2 AND owner_id IS NULL AND queued_at IS NULL AND status IN {ROUTABLE}");
                    let n = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(id).execute(&mut *tx).await?.rows_affected();
                    if n == 1 {
                        sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'queued', $2, 'routing', $3, $2)")
                            .bind(id).bind(now).bind(json!({"reason": "nobody on duty"})).execute(&mut *tx).await?;
                    }
                    n == 1
                });
                if first_time {
                    let heads = self.supervisors(None).await?;
                    self.notify(&heads, "lead_queued", Some(id), &json!({"name": lead.name, "temperature": lead.temperature})).await?;
                }
                Ok(RouteOutcome::Queued)
            }
        }
    }

    /// Assigns the lead to `user` when it is still unowned (routing) or still owned by its
    /// previous owner; true when this call did it.
    async fn give(&self, lead: &Lead, user: Uuid, actor: &str, rule: &str, now: Ts) -> Result<bool, StoreError> {
        let due = self.deadline(lead, now).await?;
        let from = lead.owner.as_ref().map(|o| o.id);
        let done = write_tx!(&self.db, tx => {
            let sql = match from {
                None => format!(
                    "UPDATE leads SET owner_id = $1, status = 'assigned', assigned_at = $2, sla_due_at = $3, first_touch_at = NULL, queued_at = NULL, updated_at = $2 \
                     WHERE id = $4 AND owner_id IS NULL AND status IN {ROUTABLE}"
                ),
                Some(_) => "UPDATE leads SET owner_id = $1, assigned_at = $2, sla_due_at = $3, first_touch_at = NULL, queued_at = NULL, updated_at = $2, \
                            status = CASE WHEN status IN ('new', 'nurturing', 'sales_ready') THEN 'assigned' ELSE status END \
                            WHERE id = $4 AND owner_id = $5".to_string(),
            };
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user).bind(now).bind(due).bind(lead.id);
            if let Some(f) = from {
                q = q.bind(f);
            }
            let n = q.execute(&mut *tx).await?.rows_affected();
            if n == 1 {
                mark_assigned(&mut tx, user, now).await?;
                let data = json!({"from": from, "to": user, "rule": rule, "deadline": due});
                sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'assigned', $2, $3, $4, $2)")
                    .bind(lead.id).bind(now).bind(actor).bind(&data).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) VALUES ('lead.assigned', $1, $2, $3, $3)")
                    .bind(lead.id).bind(&data).bind(now).execute(&mut *tx).await?;
            }
            n == 1
        });
        if done {
            self.notify(&[user], "lead_assigned", Some(lead.id), &json!({"name": lead.name, "deadline": due})).await?;
        }
        Ok(done)
    }

    /// Manual reassignment by a head of sales or an admin.
    pub async fn reassign(&self, id: Uuid, user: Uuid, actor: &str, access: &Access) -> Result<Lead, WorkflowError> {
        let lead = self.lead_as(id, access).await?.ok_or(WorkflowError::NotFound)?;
        let target = self
            .user(user)
            .await?
            .filter(|u| u.active)
            .ok_or_else(|| invalid("user_id", "no such active user", "нет такого активного пользователя"))?;
        if let Access::Team { team_id, user_id } = access
            && target.team_id != *team_id
            && target.id != *user_id
        {
            return Err(invalid("user_id", "not in your team", "не из вашей команды"));
        }
        if matches!(lead.status.as_str(), "converted" | "refused" | "junk") {
            return Err(WorkflowError::InvalidTransition { from: lead.status.clone(), to: "assigned".into() });
        }
        if lead.owner.as_ref().map(|o| o.id) == Some(user) {
            return Ok(lead);
        }
        if !self.give(&lead, user, actor, "manual", self.now()).await? {
            return Err(WorkflowError::Store(StoreError::Invalid("the lead changed meanwhile; retry".into())));
        }
        self.lead(id).await?.ok_or(WorkflowError::NotFound)
    }

    /// Leads waiting for someone on duty, oldest first.
    pub async fn queue(&self, access: &Access) -> Result<Vec<Lead>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE l.queued_at IS NOT NULL AND l.owner_id IS NULL AND {} ORDER BY l.queued_at LIMIT 500",
            crate::leads::LEAD_COLUMNS,
            crate::leads::LEAD_FROM,
            self.access_sql(access)
        );
        let rows: Vec<crate::leads::LeadRow> = with_read!(&self.db, p => { sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await? });
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(self.lead_of(r).await?);
        }
        Ok(out)
    }

    /// Tries to assign every queued lead (run when people come on duty).
    pub async fn drain_queue(&self) -> Result<usize, StoreError> {
        let ids: Vec<Uuid> = with_read!(&self.db, p => {
            sqlx::query_scalar::<_, Uuid>("SELECT id FROM leads WHERE queued_at IS NOT NULL AND owner_id IS NULL ORDER BY queued_at LIMIT 1000").fetch_all(p).await?
        });
        let mut assigned = 0;
        for id in ids {
            if matches!(self.route_lead(id).await?, RouteOutcome::Assigned { .. }) {
                assigned += 1;
            }
        }
        Ok(assigned)
    }

    /// Escalates every lead whose response deadline has passed without its owner's touch:
    /// it goes to the next eligible person and the heads of sales are told; each escalation
    /// is recorded.
    pub async fn escalate_due(&self) -> Result<Vec<Escalation>, StoreError> {
        let now = self.now();
        let due: Vec<(Uuid, Option<Uuid>, Ts)> = with_read!(&self.db, p => {
            sqlx::query_as(
                "SELECT id, owner_id, sla_due_at FROM leads WHERE sla_due_at IS NOT NULL AND sla_due_at <= $1 AND first_touch_at IS NULL AND owner_id IS NOT NULL ORDER BY sla_due_at LIMIT 500",
            )
            .bind(now).fetch_all(p).await?
        });
        let mut out = Vec::new();
        if due.is_empty() {
            return Ok(out);
        }
        let (mut people, _) = self.candidates(now).await?;
        let rules = self.assignment_rules().await?;
        for (id, owner, deadline) in due {
            let Some(lead) = self.lead(id).await? else { continue };
            let next = choose(&rules, &Self::facts(&lead), &people, owner).map(|(u, _)| u);
            let new_due = match next {
                Some(_) => self.deadline(&lead, now).await?,
                None => None,
            };
            // Exactly once: only while the lead is still the same owner's, untouched, with that deadline.
            let recorded = write_tx!(&self.db, tx => {
                let n = sqlx::query(
                    "UPDATE leads SET owner_id = COALESCE($1, owner_id), assigned_at = CASE WHEN $1 IS NULL THEN assigned_at ELSE $2 END, \
                     sla_due_at = $3, updated_at = $2 WHERE id = $4 AND owner_id = $5 AND first_touch_at IS NULL AND sla_due_at = $6",
                )
                .bind(next).bind(now).bind(new_due).bind(id).bind(owner).bind(deadline)
                .execute(&mut *tx).await?.rows_affected();
                if n == 1 {
                    sqlx::query("INSERT INTO escalations (lead_id, from_user, to_user, deadline, at) VALUES ($1, $2, $3, $4, $5)")
                        .bind(id).bind(owner).bind(next).bind(deadline).bind(now).execute(&mut *tx).await?;
                    let data = json!({"from": owner, "to": next, "deadline": deadline});
                    sqlx::query("INSERT INTO events (lead_id, kind, at, actor, data, created_at) VALUES ($1, 'escalated', $2, 'sla', $3, $2)")
                        .bind(id).bind(now).bind(&data).execute(&mut *tx).await?;
                    if let Some(n) = next {
                        mark_assigned(&mut tx, n, now).await?;
                        sqlx::query("INSERT INTO outbox (topic, aggregate_id, payload, created_at, available_at) VALUES ('lead.assigned', $1, $2, $3, $3)")
                            .bind(id).bind(&data).bind(now).execute(&mut *tx).await?;
                    }
                }
                n == 1
            });
            if recorded {
                let team = match owner {
                    Some(o) => self.user(o).await?.and_then(|u| u.team_id),
                    None => None,
                };
                let heads = self.supervisors(team).await?;
                self.notify(&heads, "lead_escalated", Some(id), &json!({"name": lead.name, "from": owner, "to": next})).await?;
                if let Some(n) = next {
                    self.notify(&[n], "lead_assigned", Some(id), &json!({"name": lead.name, "escalated": true})).await?;
                    // The next lead of this pass sees the move: the new owner's turn is taken
                    // and the load shifts.
                    let latest = people.iter().filter_map(|c| c.last_assigned).max().unwrap_or(i64::MIN);
                    for c in people.iter_mut() {
                        if c.id == n {
                            c.open_leads += 1;
                            c.last_assigned = Some(now.micros().max(latest.saturating_add(1)));
                        } else if Some(c.id) == owner {
                            c.open_leads = c.open_leads.saturating_sub(1);
                        }
                    }
                }
                out.push(Escalation { lead_id: id, from_user: owner, to_user: next });
            }
        }
        Ok(out)
    }

    /// Recorded escalations (for analytics): (lead, from, to, deadline, at).
    pub async fn escalations(&self) -> Result<Vec<(Uuid, Option<Uuid>, Option<Uuid>, Ts, Ts)>, StoreError> {
        Ok(with_read!(&self.db, p => {
            sqlx::query_as("SELECT lead_id, from_user, to_user, deadline, at FROM escalations ORDER BY id").fetch_all(p).await?
        }))
    }
}
