//! Login sessions of the web UI and the record of failed logins.
//!
//! The cookie carries a random id; the database keeps only its SHA-256 hash, so a leaked
//! database does not hand out sessions. Each session has its own CSRF token.

use crate::admin::{hash_token, random_key};
use crate::db::{with_read, with_write};
use crate::ts::Ts;
use crate::users::{USER_COLUMNS, User, UserRow};
use crate::{Store, StoreError};
use uuid::Uuid;

/// How long a session lives without use.
pub const SESSION_IDLE: chrono::Duration = chrono::Duration::hours(12);
/// A session is extended when less than this is left, so a busy user writes rarely.
const EXTEND_WHEN_LEFT: chrono::Duration = chrono::Duration::hours(11);

/// A live session with its user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
    pub expires_at: Ts,
}

/// Failed logins allowed in `FAILURE_WINDOW` for one e-mail, and for one address.
pub const FAILURES_PER_EMAIL: i64 = 5;
pub const FAILURES_PER_IP: i64 = 20;
pub const FAILURE_WINDOW: chrono::Duration = chrono::Duration::minutes(15);

impl Store {
    /// Starts a session for the user and returns the cookie value.
    pub async fn create_session(&self, user: Uuid) -> Result<String, StoreError> {
        let id = random_key("", 32);
        let hash = hash_token(&id);
        let csrf = random_key("", 24);
        let now = self.now();
        let expires = Ts::from(now.0 + SESSION_IDLE);
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(hash.as_slice()).bind(user).bind(&csrf).bind(now).bind(expires).execute(p).await?;
        });
        Ok(id)
    }

    /// The live session of this cookie value, with its active user; extends it when used.
    pub async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let hash = hash_token(id);
        let now = self.now();
        let sql = format!(
            "SELECT s.csrf, s.expires_at, {} FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.active",
            USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ")
        );
        let row: Option<SessionRow> = with_read!(&self.db, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(hash.as_slice()).bind(now).fetch_optional(p).await?
        });
        let Some(row) = row else { return Ok(None) };
        let mut expires_at = row.expires_at;
        if expires_at.0 - now.0 < EXTEND_WHEN_LEFT {
            expires_at = Ts::from(now.0 + SESSION_IDLE);
            with_write!(&self.db, p => {
                sqlx::query("UPDATE sessions SET expires_at = $1 WHERE id_hash = $2").bind(expires_at).bind(hash.as_slice()).execute(p).await?;
            });
        }
        Ok(Some(Session { user: row.user.into(), csrf: row.csrf, expires_at }))
    }

    /// Ends a session; the cookie value stops working at once.
    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let hash = hash_token(id);
        with_write!(&self.db, p => {
            sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(hash.as_slice()).execute(p).await?;
        });
        Ok(())
    }

    /// Ends every session of a user (password change, deactivation).
    pub async fn delete_user_sessions(&self, user: Uuid) -> Result<u64, StoreError> {
        Ok(with_write!(&self.db, p => {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user).execute(p).await?.rows_affected()
        }))
    }

    /// Records a failed login.
    pub async fn record_login_failure(&self, email: &str, ip: &str) -> Result<(), StoreError> {
        let now = self.now();
        let email = email.trim().to_lowercase();
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO login_failures (email, ip, at) VALUES ($1, $2, $3)").bind(email).bind(ip).bind(now).execute(p).await?;
        });
        Ok(())
    }

    /// When logins for this e-mail or from this address are throttled: the seconds to wait.
    pub async fn login_throttled(&self, email: &str, ip: &str) -> Result<Option<u64>, StoreError> {
        let now = self.now();
        let since = Ts::from(now.0 - FAILURE_WINDOW);
        let email = email.trim().to_lowercase();
        let (by_email, first_email, by_ip, first_ip): (i64, Option<Ts>, i64, Option<Ts>) = with_read!(&self.db, p => {
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM login_failures WHERE email = $1 AND at > $3), \
                        (SELECT MIN(at) FROM (SELECT at FROM login_failures WHERE email = $1 AND at > $3 ORDER BY at DESC LIMIT $4) e), \
                        (SELECT COUNT(*) FROM login_failures WHERE ip = $2 AND at > $3), \
                        (SELECT MIN(at) FROM (SELECT at FROM login_failures WHERE ip = $2 AND at > $3 ORDER BY at DESC LIMIT $5) i)",
            )
            .bind(&email).bind(ip).bind(since).bind(FAILURES_PER_EMAIL).bind(FAILURES_PER_IP).fetch_one(p).await?
        });
        // Blocked until the oldest of the last N failures leaves the window.
        let wait = |count: i64, limit: i64, oldest: Option<Ts>| -> Option<u64> {
            if count < limit {
                return None;
            }
            let until = oldest?.0 + FAILURE_WINDOW;
            Some((until - now.0).num_seconds().max(1) as u64)
        };
        Ok(wait(by_email, FAILURES_PER_EMAIL, first_email).max(wait(by_ip, FAILURES_PER_IP, first_ip)))
    }

    /// Forgets the failures of an e-mail after a successful login.
    pub async fn clear_login_failures(&self, email: &str) -> Result<(), StoreError> {
        let email = email.trim().to_lowercase();
        with_write!(&self.db, p => {
            sqlx::query("DELETE FROM login_failures WHERE email = $1").bind(email).execute(p).await?;
        });
        Ok(())
    }

    /// Removes expired sessions and old failures; returns how many rows went.
    pub async fn purge_sessions(&self) -> Result<u64, StoreError> {
        let now = self.now();
        let old = Ts::from(now.0 - FAILURE_WINDOW);
        Ok(with_write!(&self.db, p => {
            let a = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(p).await?.rows_affected();
            let b = sqlx::query("DELETE FROM login_failures WHERE at <= $1").bind(old).execute(p).await?.rows_affected();
            a + b
        }))
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    csrf: String,
    expires_at: Ts,
    #[sqlx(flatten)]
    user: UserRow,
}
