//! Webhooks in the database. Inbound: the endpoints call-tracking services, chats, social
//! lead forms and landing-page builders post to, each with its own secret, and a receipt per
//! event id (so a replayed event is recognised, and call and chat response times are kept
//! for analytics). Outbound: subscriptions, and one delivery row per subscription and
//! outbox message, claimed under a lease, retried with back-off, then dead-lettered.

use crate::db::{with_read, with_write};
use crate::imports::JsonText;
use crate::outbox::OutboxItem;
use crate::ts::Ts;
use crate::workflow::write_tx;
use crate::{Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// The kinds of inbound endpoint.
pub const HOOK_KINDS: &[&str] = &["call_tracking", "chat", "lead_ad", "generic"];

/// The outbox topics a subscription may ask for.
pub const WEBHOOK_EVENTS: &[&str] = &["lead.created", "lead.assigned", "lead.state_changed", "lead.converted"];

/// An inbound webhook endpoint: `POST /hooks/{hook_key}`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct HookEndpoint {
    pub id: Uuid,
    /// The path key of `POST /hooks/{hook_key}`.
    pub hook_key: String,
    pub name: String,
    /// `call_tracking`, `chat`, `lead_ad` or `generic`.
    pub kind: String,
    /// The HMAC-SHA256 key the sender signs with (shown to admins only).
    pub secret: String,
    /// The channel its leads get.
    pub channel: String,
    /// The campaign its leads get unless the event maps to another.
    pub campaign: Option<String>,
    /// Kind-specific settings: for `generic`, lead field → path into the body
    /// (`{"phone": "contact.phone"}`); for `lead_ad`, `{"forms": {"FORM_ID": "campaign"}}`.
    #[schema(value_type = Object)]
    #[sqlx(try_from = "String")]
    pub mapping: JsonText,
    pub active: bool,
    #[schema(value_type = String)]
    pub created_at: Ts,
}

const ENDPOINT_COLUMNS: &str = "id, hook_key, name, kind, secret, channel, campaign, mapping, active, created_at";

/// A new endpoint, validated by the caller.
pub struct NewEndpoint<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub channel: &'a str,
    pub campaign: Option<&'a str>,
    pub mapping: &'a Value,
}

/// What an inbound event did, kept per endpoint and event id.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub endpoint_id: Uuid,
    pub event_id: String,
    /// `call`, `chat`, `lead_ad` or `generic`.
    pub kind: &'static str,
    /// `created`, `repeat`, `returning` or `interest`.
    pub outcome: String,
    pub lead_id: Option<Uuid>,
    pub visitor_id: Option<String>,
    pub answered: Option<bool>,
    pub wait_seconds: Option<i32>,
    pub talk_seconds: Option<i32>,
    pub response_seconds: Option<i32>,
    pub at: Ts,
}

/// The first answer to an event id.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredReceipt {
    pub outcome: String,
    pub lead_id: Option<Uuid>,
}

/// Calls and chats received over a period: what response analytics needs.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ResponseStats {
    pub calls: i64,
    pub calls_answered: i64,
    pub calls_missed: i64,
    /// Mean wait of answered calls, seconds.
    pub call_wait_avg_seconds: Option<f64>,
    pub chats: i64,
    pub chats_replied: i64,
    /// Mean time from the visitor's first message to the operator's first reply, seconds.
    pub chat_first_reply_avg_seconds: Option<f64>,
}

/// An outbound subscription.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Subscription {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    /// Topics, e.g. `["lead.created", "lead.converted"]`.
    #[schema(value_type = Vec<String>)]
    #[sqlx(try_from = "String")]
    pub events: JsonText,
    /// The HMAC-SHA256 key deliveries are signed with (shown to admins only).
    pub secret: String,
    pub active: bool,
    #[schema(value_type = String)]
    pub created_at: Ts,
}

impl Subscription {
    pub fn wants(&self, topic: &str) -> bool {
        self.events.0.as_array().is_some_and(|a| a.iter().any(|e| e.as_str() == Some(topic)))
    }
}

const SUBSCRIPTION_COLUMNS: &str = "id, name, url, events, secret, active, created_at";

/// One message for one subscriber, as shown: its state and last error.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Delivery {
    /// The event id the receiver deduplicates by (the same on every attempt).
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub topic: String,
    pub lead_id: Option<Uuid>,
    /// `pending`, `delivered`, `dead` or `cancelled`.
    pub status: String,
    pub attempts: i32,
    #[schema(value_type = String)]
    pub next_at: Ts,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    #[schema(value_type = String)]
    pub created_at: Ts,
    #[schema(value_type = Option<String>)]
    pub done_at: Option<Ts>,
}

const DELIVERY_COLUMNS: &str =
    "id, subscription_id, topic, lead_id, status, attempts, next_at, last_status, last_error, created_at, done_at";

/// A delivery claimed for sending, with what sending needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryJob {
    pub id: Uuid,
    pub topic: String,
    pub payload: String,
    pub attempts: i32,
    pub created_at: Ts,
    pub url: String,
    pub secret: String,
}

/// Inserts a receipt inside a transaction (compiled once per backend); true when the event
/// id is new.
macro_rules! insert_receipt {
    ($tx:ident, $r:expr, $now:expr) => {{
        let r: &Receipt = $r;
        sqlx::query(
            "INSERT INTO hook_receipts (endpoint_id, event_id, kind, outcome, lead_id, visitor_id, answered, wait_seconds, talk_seconds, response_seconds, at, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        )
        .bind(r.endpoint_id)
        .bind(r.event_id.as_str())
        .bind(r.kind)
        .bind(r.outcome.as_str())
        .bind(r.lead_id)
        .bind(r.visitor_id.as_deref())
        .bind(r.answered)
        .bind(r.wait_seconds)
        .bind(r.talk_seconds)
        .bind(r.response_seconds)
        .bind(r.at)
        .bind($now)
        .execute(&mut *$tx)
        .await?
        .rows_affected()
            == 1
    }};
}

impl Store {
    pub async fn create_hook_endpoint(&self, e: &NewEndpoint<'_>) -> Result<HookEndpoint, StoreError> {
        let id = Uuid::now_v7();
        let key = crate::random_key("wh_", 18);
        let secret = crate::random_key("", 32);
        let now = self.now();
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO hook_endpoints (id, hook_key, name, kind, secret, channel, campaign, mapping, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                .bind(id).bind(&key).bind(e.name).bind(e.kind).bind(&secret).bind(e.channel).bind(e.campaign).bind(e.mapping.to_string()).bind(now)
                .execute(p).await?;
        });
        self.hook_endpoint(id).await?.ok_or(StoreError::NotFound)
    }

    pub async fn hook_endpoint(&self, id: Uuid) -> Result<Option<HookEndpoint>, StoreError> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM hook_endpoints WHERE id = $1");
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await?))
    }

    pub async fn hook_endpoint_by_key(&self, key: &str) -> Result<Option<HookEndpoint>, StoreError> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM hook_endpoints WHERE hook_key = $1");
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(key).fetch_optional(p).await?))
    }

    pub async fn hook_endpoints(&self) -> Result<Vec<HookEndpoint>, StoreError> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM hook_endpoints ORDER BY created_at");
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await?))
    }

    /// Turns an endpoint on or off; a new secret when `rotate`.
    pub async fn update_hook_endpoint(&self, id: Uuid, active: Option<bool>, rotate: bool) -> Result<HookEndpoint, StoreError> {
        let secret = rotate.then(|| crate::random_key("", 32));
        let n = with_write!(&self.db, p => {
            sqlx::query("UPDATE hook_endpoints SET active = COALESCE($1, active), secret = COALESCE($2, secret) WHERE id = $3")
                .bind(active).bind(secret).bind(id).execute(p).await?.rows_affected()
        });
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        self.hook_endpoint(id).await?.ok_or(StoreError::NotFound)
    }

    /// The first answer to an endpoint's event id, if it was seen before.
    pub async fn hook_receipt(&self, endpoint: Uuid, event_id: &str) -> Result<Option<StoredReceipt>, StoreError> {
        Ok(with_read!(&self.db, p => {
            sqlx::query_as("SELECT outcome, lead_id FROM hook_receipts WHERE endpoint_id = $1 AND event_id = $2")
                .bind(endpoint).bind(event_id).fetch_optional(p).await?
        }))
    }

    /// Records what an event did; false when its id was recorded before (the first stays).
    pub async fn record_hook_receipt(&self, r: &Receipt) -> Result<bool, StoreError> {
        let now = self.now();
        Ok(write_tx!(&self.db, tx => { insert_receipt!(tx, r, now) }))
    }

    /// Anonymous interest (a chat without contacts): the receipt and a timeline event of the
    /// visitor in one transaction, joined to the lead when the visitor leaves contacts.
    /// False when the event id was seen before (nothing is written then).
    pub async fn record_hook_interest(&self, r: &Receipt, event_kind: &str, data: &Value) -> Result<bool, StoreError> {
        let now = self.now();
        Ok(write_tx!(&self.db, tx => {
            let fresh = insert_receipt!(tx, r, now);
            if fresh {
                sqlx::query("INSERT INTO events (lead_id, visitor_id, kind, at, actor, data, created_at) VALUES (NULL, $1, $2, $3, $4, $5, $6)")
                    .bind(r.visitor_id.as_deref()).bind(event_kind).bind(r.at).bind(format!("hook:{}", r.endpoint_id)).bind(data).bind(now)
                    .execute(&mut *tx).await?;
            }
            fresh
        }))
    }

    /// Calls and chats received in `[from, to)`.
    pub async fn response_stats(&self, from: Ts, to: Ts) -> Result<ResponseStats, StoreError> {
        type Row = (i64, Option<i64>, Option<i64>, Option<f64>, i64, Option<i64>, Option<f64>);
        let sql = "SELECT \
            COUNT(CASE WHEN kind = 'call' THEN 1 END), \
            SUM(CASE WHEN kind = 'call' AND answered THEN 1 ELSE 0 END), \
            SUM(CASE WHEN kind = 'call' AND NOT answered THEN 1 ELSE 0 END), \
            AVG(CASE WHEN kind = 'call' AND answered THEN CAST(wait_seconds AS DOUBLE PRECISION) END), \
            COUNT(CASE WHEN kind = 'chat' THEN 1 END), \
            SUM(CASE WHEN kind = 'chat' AND response_seconds IS NOT NULL THEN 1 ELSE 0 END), \
            AVG(CASE WHEN kind = 'chat' THEN CAST(response_seconds AS DOUBLE PRECISION) END) \
            FROM hook_receipts WHERE at >= $1 AND at < $2";
        let r: Row = with_read!(&self.db, p => sqlx::query_as(sql).bind(from).bind(to).fetch_one(p).await?);
        Ok(ResponseStats {
            calls: r.0,
            calls_answered: r.1.unwrap_or(0),
            calls_missed: r.2.unwrap_or(0),
            call_wait_avg_seconds: r.3,
            chats: r.4,
            chats_replied: r.5.unwrap_or(0),
            chat_first_reply_avg_seconds: r.6,
        })
    }

    /// Campaigns with a tracking number: (code, number as entered).
    pub async fn campaign_numbers(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(with_read!(&self.db, p => {
            sqlx::query_as("SELECT code, tracking_number FROM campaigns WHERE tracking_number IS NOT NULL ORDER BY code").fetch_all(p).await?
        }))
    }

    // Outbound.

    pub async fn create_subscription(&self, name: &str, url: &str, events: &[String]) -> Result<Subscription, StoreError> {
        let id = Uuid::now_v7();
        let secret = crate::random_key("", 32);
        let now = self.now();
        let mut events = events.to_vec();
        events.sort();
        events.dedup();
        let events = serde_json::to_string(&events).map_err(anyhow::Error::from)?;
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO webhook_subscriptions (id, name, url, events, secret, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(id).bind(name).bind(url).bind(events).bind(&secret).bind(now).execute(p).await?;
        });
        self.subscription(id).await?.ok_or(StoreError::NotFound)
    }

    pub async fn subscription(&self, id: Uuid) -> Result<Option<Subscription>, StoreError> {
        let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE id = $1");
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await?))
    }

    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions ORDER BY created_at");
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await?))
    }

    /// Removes a subscription; its pending deliveries are cancelled (the log stays).
    pub async fn delete_subscription(&self, id: Uuid) -> Result<(), StoreError> {
        let now = self.now();
        let n = write_tx!(&self.db, tx => {
            sqlx::query("UPDATE webhook_deliveries SET status = 'cancelled', done_at = $1 WHERE subscription_id = $2 AND status = 'pending'")
                .bind(now).bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected()
        });
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Active subscriptions (read once per dispatch pass).
    pub async fn active_subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE active = TRUE ORDER BY created_at");
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await?))
    }

    /// One delivery per subscription that wants the message's topic. Idempotent: a message
    /// handled twice (a lost lease) gets no second delivery.
    pub async fn fan_out(&self, item: &OutboxItem, subs: &[Subscription], payload: &Value) -> Result<usize, StoreError> {
        let now = self.now();
        let mut n = 0;
        for s in subs.iter().filter(|s| s.wants(&item.topic)) {
            let id = Uuid::now_v7();
            let body = serde_json::json!({
                "id": id, "event": item.topic, "occurred_at": now, "data": payload,
            });
            n += with_write!(&self.db, p => {
                sqlx::query("INSERT INTO webhook_deliveries (id, subscription_id, outbox_id, topic, lead_id, payload, next_at, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (subscription_id, outbox_id) DO NOTHING")
                    .bind(id).bind(s.id).bind(item.id).bind(&item.topic).bind(item.aggregate_id).bind(body.to_string()).bind(now)
                    .execute(p).await?.rows_affected()
            }) as usize;
        }
        Ok(n)
    }

    /// Claims due deliveries for `lease`.
    pub async fn claim_deliveries(&self, worker: &str, limit: i64, lease: chrono::Duration) -> Result<Vec<DeliveryJob>, StoreError> {
        let now = self.now();
        let until = Ts::from(now.0 + lease);
        let lock = if self.db.is_sqlite() { "" } else { " FOR UPDATE SKIP LOCKED" };
        let sql = format!(
            "UPDATE webhook_deliveries SET locked_by = $1, locked_until = $2, attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_at <= $3 AND (locked_until IS NULL OR locked_until < $3) \
              ORDER BY next_at LIMIT $4{lock}) RETURNING id"
        );
        let ids: Vec<Uuid> = with_write!(&self.db, p => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(worker).bind(until).bind(now).bind(limit).fetch_all(p).await?
        });
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let job: Option<DeliveryJob> = with_read!(&self.db, p => {
                sqlx::query_as("SELECT d.id, d.topic, d.payload, d.attempts, d.created_at, s.url, s.secret FROM webhook_deliveries d \
                                JOIN webhook_subscriptions s ON s.id = d.subscription_id WHERE d.id = $1")
                    .bind(id).fetch_optional(p).await?
            });
            match job {
                Some(j) => out.push(j),
                None => self.finish_delivery(id, worker, "cancelled", None, Some("the subscription was removed")).await?,
            }
        }
        Ok(out)
    }

    /// Ends a delivery: `delivered`, `dead` or `cancelled`. Only the worker holding the claim may.
    pub async fn finish_delivery(
        &self,
        id: Uuid,
        worker: &str,
        status: &str,
        http: Option<i32>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        with_write!(&self.db, p => {
            sqlx::query("UPDATE webhook_deliveries SET status = $1, last_status = COALESCE($2, last_status), last_error = $3, done_at = $4, locked_until = NULL \
                         WHERE id = $5 AND locked_by = $6 AND status = 'pending'")
                .bind(status).bind(http).bind(error).bind(now).bind(id).bind(worker).execute(p).await?;
        });
        Ok(())
    }

    /// A failed attempt: tried again at `next`.
    pub async fn retry_delivery(&self, id: Uuid, worker: &str, next: Ts, http: Option<i32>, error: &str) -> Result<(), StoreError> {
        with_write!(&self.db, p => {
            sqlx::query("UPDATE webhook_deliveries SET next_at = $1, last_status = $2, last_error = $3, locked_until = NULL \
                         WHERE id = $4 AND locked_by = $5 AND status = 'pending'")
                .bind(next).bind(http).bind(error).bind(id).bind(worker).execute(p).await?;
        });
        Ok(())
    }

    /// Deliveries, newest first, optionally of one status.
    pub async fn deliveries(&self, status: Option<&str>, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE ($1 IS NULL OR status = $1) ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(status).bind(limit).fetch_all(p).await?))
    }

    pub async fn delivery(&self, id: Uuid) -> Result<Option<Delivery>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1");
        Ok(with_read!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await?))
    }

    /// Sends a dead-lettered delivery again (same event id), with a fresh retry window.
    pub async fn redeliver(&self, id: Uuid) -> Result<Delivery, StoreError> {
        let now = self.now();
        let n = with_write!(&self.db, p => {
            sqlx::query("UPDATE webhook_deliveries SET status = 'pending', next_at = $1, created_at = $1, attempts = 0, done_at = NULL, locked_until = NULL \
                         WHERE id = $2 AND status = 'dead'")
                .bind(now).bind(id).execute(p).await?.rows_affected()
        });
        if n == 0 {
            return Err(StoreError::Invalid("only a dead-lettered delivery can be sent again".into()));
        }
        self.delivery(id).await?.ok_or(StoreError::NotFound)
    }
}
