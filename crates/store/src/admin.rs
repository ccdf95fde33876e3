//! Configuration records: API tokens (kept as SHA-256 hashes, never in plain text), sites,
//! forms, and what public endpoints keep that is not a lead (spam, anonymous interest).

use crate::db::{Db, with_read, with_write};
use crate::ts::Ts;
use crate::{Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Scopes a token may carry; `admin` implies every other.
pub const SCOPES: &[&str] = &["leads:read", "leads:write", "events:write", "admin"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    /// The user the token acts as; none for a system token.
    pub user: Option<crate::users::UserRef>,
}

impl TokenInfo {
    pub fn allows(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "admin")
    }

    /// What the token may see.
    pub fn access(&self) -> crate::users::Access {
        crate::users::Access::of(self.user.as_ref())
    }

    /// How the token appears on timelines: its user's name, or the token's.
    pub fn actor(&self) -> String {
        match &self.user {
            Some(u) => format!("user:{}", u.name),
            None => format!("token:{}", self.name),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub id: Uuid,
    pub site_key: String,
    pub name: String,
    pub origins: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Form {
    pub id: Uuid,
    pub form_key: String,
    pub name: String,
    pub site_id: Option<Uuid>,
    pub thank_you_url: Option<String>,
    pub channel: String,
    pub campaign: Option<String>,
    pub honeypot_field: String,
    pub field_map: Map<String, Value>,
}

/// What `form create` and the settings page ask for.
#[derive(Debug, Clone, Default)]
pub struct FormSpec {
    pub name: String,
    pub thank_you_url: Option<String>,
    pub site_id: Option<Uuid>,
    pub channel: Option<String>,
    pub campaign: Option<String>,
    pub honeypot_field: Option<String>,
    pub field_map: Map<String, Value>,
}

/// A random URL-safe key with a readable prefix (`vk_…` tokens, `f_…` forms, `s_…` sites).
pub fn random_key(prefix: &str, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(&buf))
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    name: String,
    scopes: String,
    user_id: Option<Uuid>,
    user_name: Option<String>,
    role: Option<String>,
    team_id: Option<Uuid>,
}

/// A token as the settings page lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenListed {
    pub id: Uuid,
    pub name: String,
    pub scopes: String,
    pub user_name: Option<String>,
    pub created_at: Ts,
    pub revoked_at: Option<Ts>,
}

#[derive(sqlx::FromRow)]
struct SiteRow {
    id: Uuid,
    site_key: String,
    name: String,
    origins: Value,
}

#[derive(sqlx::FromRow)]
struct FormRow {
    id: Uuid,
    form_key: String,
    name: String,
    site_id: Option<Uuid>,
    thank_you_url: Option<String>,
    channel: String,
    campaign: Option<String>,
    honeypot_field: String,
    field_map: Value,
}

impl From<SiteRow> for Site {
    fn from(r: SiteRow) -> Site {
        Site {
            id: r.id,
            site_key: r.site_key,
            name: r.name,
            origins: r.origins.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default(),
        }
    }
}

impl From<FormRow> for Form {
    fn from(r: FormRow) -> Form {
        Form {
            id: r.id,
            form_key: r.form_key,
            name: r.name,
            site_id: r.site_id,
            thank_you_url: r.thank_you_url,
            channel: r.channel,
            campaign: r.campaign,
            honeypot_field: r.honeypot_field,
            field_map: match r.field_map {
                Value::Object(m) => m,
                _ => Map::new(),
            },
        }
    }
}

impl Store {
    /// Creates an API token and returns it; only its hash is stored.
    pub async fn create_token(&self, name: &str, scopes: &[String]) -> Result<(Uuid, String), StoreError> {
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("the token needs a name".into()));
        }
        if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
            return Err(StoreError::Invalid(format!("unknown scope {bad:?}: use {}", SCOPES.join(", "))));
        }
        let token = random_key("vk_", 32);
        let id = Uuid::now_v7();
        let hash = hash_token(&token);
        let scopes = if scopes.is_empty() { "leads:read leads:write".to_string() } else { scopes.join(" ") };
        let now = self.now();
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO api_tokens (id, name, token_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id).bind(name.trim()).bind(hash.as_slice()).bind(scopes).bind(now)
                .execute(p).await?;
        });
        Ok((id, token))
    }

    /// The live token with this hash, if any.
    pub async fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenInfo>, StoreError> {
        // A token of a deactivated user stops working.
        let row: Option<TokenRow> = with_read!(&self.db, p => {
            sqlx::query_as(
                "SELECT t.id, t.name, t.scopes, t.user_id, u.name AS user_name, u.role, u.team_id FROM api_tokens t \
                 LEFT JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.user_id IS NULL OR u.active)",
            )
            .bind(hash.as_slice()).fetch_optional(p).await?
        });
        Ok(row.map(|r| TokenInfo {
            id: r.id,
            name: r.name,
            scopes: r.scopes.split_whitespace().map(String::from).collect(),
            user: match (r.user_id, r.user_name, r.role) {
                (Some(id), Some(name), Some(role)) => Some(crate::users::UserRef { id, name, role, team_id: r.team_id }),
                _ => None,
            },
        }))
    }

    /// Every token, newest first, for the settings page (never the token itself).
    pub async fn list_tokens(&self) -> Result<Vec<TokenListed>, StoreError> {
        Ok(with_read!(&self.db, p => {
            sqlx::query_as(
                "SELECT t.id, t.name, t.scopes, u.name AS user_name, t.created_at, t.revoked_at FROM api_tokens t \
                 LEFT JOIN users u ON u.id = t.user_id ORDER BY t.created_at DESC, t.id DESC",
            )
            .fetch_all(p).await?
        }))
    }

    /// Every site, by name.
    pub async fn sites(&self) -> Result<Vec<Site>, StoreError> {
        let rows: Vec<SiteRow> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT id, site_key, name, origins FROM sites ORDER BY name, id").fetch_all(p).await?
        });
        Ok(rows.into_iter().map(Site::from).collect())
    }

    /// Every form, by name.
    pub async fn forms(&self) -> Result<Vec<Form>, StoreError> {
        let rows: Vec<FormRow> = with_read!(&self.db, p => {
            sqlx::query_as(
                "SELECT id, form_key, name, site_id, thank_you_url, channel, campaign, honeypot_field, field_map FROM forms ORDER BY name, id",
            )
            .fetch_all(p).await?
        });
        Ok(rows.into_iter().map(Form::from).collect())
    }

    pub async fn revoke_token(&self, id: Uuid) -> Result<(), StoreError> {
        let now = self.now();
        let n = with_write!(&self.db, p => {
            sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now).bind(id).execute(p).await?.rows_affected()
        });
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    pub async fn create_site(&self, name: &str, origins: &[String]) -> Result<Site, StoreError> {
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("the site needs a name".into()));
        }
        let site = Site { id: Uuid::now_v7(), site_key: random_key("s_", 16), name: name.trim().to_string(), origins: origins.to_vec() };
        let now = self.now();
        let origins = Value::from(site.origins.clone());
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO sites (id, site_key, name, origins, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(site.id).bind(&site.site_key).bind(&site.name).bind(&origins).bind(now)
                .execute(p).await?;
        });
        Ok(site)
    }

    pub async fn site_by_key(&self, key: &str) -> Result<Option<Site>, StoreError> {
        let row: Option<SiteRow> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT id, site_key, name, origins FROM sites WHERE site_key = $1").bind(key).fetch_optional(p).await?
        });
        Ok(row.map(Site::from))
    }

    pub async fn create_form(&self, spec: &FormSpec) -> Result<Form, StoreError> {
        if spec.name.trim().is_empty() {
            return Err(StoreError::Invalid("the form needs a name".into()));
        }
        if let Some(u) = &spec.thank_you_url
            && (!(u.starts_with("https://") || u.starts_with("http://") || u.starts_with('/')) || u.len() > 2048)
        {
            return Err(StoreError::Invalid("the thank-you URL must start with https://, http:// or /".into()));
        }
        let channel = spec.channel.clone().unwrap_or_else(|| "web_form".into());
        if !voronka_domain::lead::is_slug(&channel) {
            return Err(StoreError::Invalid(format!("bad channel code {channel:?}")));
        }
        let form = Form {
            id: Uuid::now_v7(),
            form_key: random_key("f_", 16),
            name: spec.name.trim().to_string(),
            site_id: spec.site_id,
            thank_you_url: spec.thank_you_url.clone(),
            channel,
            campaign: spec.campaign.clone(),
            honeypot_field: spec.honeypot_field.clone().unwrap_or_else(|| "_hp".into()),
            field_map: spec.field_map.clone(),
        };
        let now = self.now();
        let map = Value::Object(form.field_map.clone());
        with_write!(&self.db, p => {
            sqlx::query(
                "INSERT INTO forms (id, form_key, name, site_id, thank_you_url, channel, campaign, honeypot_field, field_map, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(form.id).bind(&form.form_key).bind(&form.name).bind(form.site_id).bind(form.thank_you_url.as_deref())
            .bind(&form.channel).bind(form.campaign.as_deref()).bind(&form.honeypot_field).bind(&map).bind(now)
            .execute(p).await?;
        });
        Ok(form)
    }

    pub async fn form_by_key(&self, key: &str) -> Result<Option<Form>, StoreError> {
        let row: Option<FormRow> = with_read!(&self.db, p => {
            sqlx::query_as(
                "SELECT id, form_key, name, site_id, thank_you_url, channel, campaign, honeypot_field, field_map FROM forms WHERE form_key = $1",
            )
            .bind(key).fetch_optional(p).await?
        });
        Ok(row.map(Form::from))
    }

    /// Keeps a submission that a honeypot or a filter called spam; it is not a lead.
    pub async fn record_spam(&self, form_id: Option<Uuid>, ip: Option<&str>, reason: &str, data: &Value) -> Result<(), StoreError> {
        let now = self.now();
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO spam_submissions (form_id, ip, reason, data, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(form_id).bind(ip).bind(reason).bind(data).bind(now)
                .execute(p).await?;
        });
        Ok(())
    }

    pub async fn spam_count(&self) -> Result<i64, StoreError> {
        Ok(with_read!(&self.db, p => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM spam_submissions").fetch_one(p).await?
        }))
    }

    /// Keeps anonymous interest (no usable contact) against a visitor; it joins the lead
    /// when the visitor later leaves contacts.
    pub async fn record_interest(
        &self,
        visitor_id: Option<&str>,
        site_id: Option<Uuid>,
        kind: &str,
        at: Ts,
        data: &Value,
    ) -> Result<(), StoreError> {
        let now = self.now();
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO events (lead_id, visitor_id, site_id, kind, at, data, created_at) VALUES (NULL, $1, $2, $3, $4, $5, $6)")
                .bind(visitor_id).bind(site_id).bind(kind).bind(at).bind(data).bind(now)
                .execute(p).await?;
        });
        Ok(())
    }

    /// Anonymous events of a visitor that have not joined a lead yet.
    pub async fn visitor_interest_count(&self, visitor_id: &str) -> Result<i64, StoreError> {
        Ok(with_read!(&self.db, p => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events WHERE visitor_id = $1 AND lead_id IS NULL")
                .bind(visitor_id).fetch_one(p).await?
        }))
    }

    /// Counts for tests and operations.
    pub async fn count(&self, table: CountOf) -> Result<i64, StoreError> {
        let sql = match table {
            CountOf::Leads => "SELECT COUNT(*) FROM leads",
            CountOf::Events => "SELECT COUNT(*) FROM events",
            CountOf::Outbox => "SELECT COUNT(*) FROM outbox",
            CountOf::Identities => "SELECT COUNT(*) FROM identities",
        };
        Ok(with_read!(&self.db, p => { sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await? }))
    }
}

#[derive(Debug, Clone, Copy)]
pub enum CountOf {
    Leads,
    Events,
    Outbox,
    Identities,
}

impl Store {
    /// Forgets idempotency keys older than `before`; returns how many were removed.
    pub async fn purge_idempotency_keys(&self, before: crate::Ts) -> Result<u64, StoreError> {
        Ok(with_write!(&self.db, p => {
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1").bind(before).execute(p).await?.rows_affected()
        }))
    }
}

impl Store {
    /// Takes (or renews) the lease on a periodic job for `ttl`; true when this holder has it.
    /// Several processes on one database run each periodic job once per period this way.
    pub async fn try_lease(&self, name: &str, holder: &str, ttl: chrono::Duration) -> Result<bool, StoreError> {
        let now = self.now();
        let until = crate::Ts::from(now.0 + ttl);
        let n = with_write!(&self.db, p => {
            sqlx::query(
                "INSERT INTO job_leases (name, holder, until) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                 WHERE job_leases.until < $4 OR job_leases.holder = excluded.holder",
            )
            .bind(name).bind(holder).bind(until).bind(now)
            .execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Gives a lease up before its time, so that any process may take it at its next tick
    /// (a job whose lease outlasts a long pass releases it when the pass is done, and a
    /// restarted process does not wait out the lease its earlier self held).
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let now = self.now();
        let past = crate::Ts::from(now.0 - chrono::Duration::microseconds(1));
        with_write!(&self.db, p => {
            sqlx::query("UPDATE job_leases SET until = $1 WHERE name = $2 AND holder = $3")
                .bind(past).bind(name).bind(holder).execute(p).await?;
        });
        Ok(())
    }
}

impl Store {
    /// Topics in the outbox, oldest first (for tests and operations).
    pub async fn outbox_topics(&self) -> Result<Vec<String>, StoreError> {
        Ok(with_read!(&self.db, p => {
            sqlx::query_scalar::<_, String>("SELECT topic FROM outbox ORDER BY id").fetch_all(p).await?
        }))
    }
}

impl Store {
    /// On PostgreSQL with autovacuum switched off (for the server, or for a table), vacuums
    /// and analyses the tables that need it by autovacuum's own default thresholds: dead
    /// rows over 50 + 20 % of the live ones, or rows inserted since the last vacuum over
    /// 1,000 + 20 %. Without it dead rows pile up after every update (a model change leaves a
    /// million), and index-only scans read the table instead (the dashboard of a freshly
    /// filled million-lead database took 1.0–1.3 s instead of 0.1 s). Returns the tables
    /// vacuumed; SQLite needs none of this.
    pub async fn vacuum_neglected(&self) -> Result<Vec<String>, StoreError> {
        let Db::Pg(pool) = &self.db else { return Ok(Vec::new()) };
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT format('%I.%I', s.schemaname, s.relname) FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
             WHERE (current_setting('autovacuum') = 'off' \
                    OR EXISTS (SELECT 1 FROM unnest(c.reloptions) o WHERE o ~* '^autovacuum_enabled=(false|off|no|f|n|0)$')) \
               AND (s.n_dead_tup > 50 + 0.2 * s.n_live_tup OR s.n_ins_since_vacuum > 1000 + 0.2 * s.n_live_tup) \
             ORDER BY s.relname",
        )
        .fetch_all(pool)
        .await?;
        // Names from the catalog, quoted by format('%I'). One table failing does not stop
        // the others; the first error is returned after them.
        let mut done = Vec::with_capacity(tables.len());
        let mut failed = None;
        for t in tables {
            let started = std::time::Instant::now();
            match sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM (ANALYZE) {t}"))).execute(pool).await {
                Ok(_) => {
                    tracing::info!(table = %t, millis = started.elapsed().as_millis() as u64, "vacuumed (autovacuum is off)");
                    done.push(t);
                }
                Err(e) => {
                    tracing::warn!(table = %t, error = %e, "vacuum failed");
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(done),
        }
    }
}
