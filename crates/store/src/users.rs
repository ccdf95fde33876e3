//! Users, teams and who may see which leads. Passwords are kept as argon2id hashes.

use crate::db::{Db, with_read, with_write};
use crate::ts::Ts;
use crate::{Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use voronka_domain::schedule::{Duty, WeekHours, parse_tz};

pub const ROLES: &[&str] = &["admin", "head_of_sales", "manager", "telemarketer", "marketer"];
pub const LEVELS: &[&str] = &["junior", "senior"];

/// Who may see and change which leads. Enforced in the store's queries.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Access {
    /// Admins, marketers and system tokens.
    #[default]
    All,
    /// A head of sales: the team's leads, own leads and the unassigned queue.
    Team { team_id: Option<Uuid>, user_id: Uuid },
    /// A manager or telemarketer: own leads only.
    Own(Uuid),
}

impl Access {
    pub fn of(user: Option<&UserRef>) -> Access {
        match user {
            None => Access::All,
            Some(u) => match u.role.as_str() {
                "admin" | "marketer" => Access::All,
                "head_of_sales" => Access::Team { team_id: u.team_id, user_id: u.id },
                _ => Access::Own(u.id),
            },
        }
    }
}

/// The user behind a token or a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRef {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub team_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub team_id: Option<Uuid>,
    pub level: String,
    pub industries: Vec<String>,
    pub regions: Vec<String>,
    pub segments: Vec<String>,
    pub capacity: i64,
    pub timezone: String,
    #[schema(value_type = Object)]
    pub hours: WeekHours,
    pub days_off: Vec<String>,
    /// Inclusive `[from, to]` dates.
    pub vacations: Vec<[String; 2]>,
    pub active: bool,
    pub lang: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_assigned_at: Option<Ts>,
}

impl User {
    pub fn as_ref(&self) -> UserRef {
        UserRef { id: self.id, name: self.name.clone(), role: self.role.clone(), team_id: self.team_id }
    }

    /// The user's duty: schedule in their time zone, days off, vacations.
    pub fn duty(&self) -> Option<Duty> {
        let tz = parse_tz(&self.timezone)?;
        let date = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        let days_off = self.days_off.iter().filter_map(|d| date(d)).collect();
        let vacations = self.vacations.iter().filter_map(|[a, b]| Some((date(a)?, date(b)?))).collect();
        Duty::new(tz, &self.hours, days_off, vacations).ok()
    }
}

/// A user as created or changed through the API (every field optional on change).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub email: Option<String>,
    pub name: Option<String>,
    pub role: Option<String>,
    pub password: Option<String>,
    pub team_id: Option<Uuid>,
    pub level: Option<String>,
    pub industries: Option<Vec<String>>,
    pub regions: Option<Vec<String>>,
    pub segments: Option<Vec<String>>,
    pub capacity: Option<i64>,
    pub timezone: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub hours: Option<WeekHours>,
    pub days_off: Option<Vec<String>>,
    pub vacations: Option<Vec<[String; 2]>>,
    pub active: Option<bool>,
    pub lang: Option<String>,
}

/// Problems with a user spec, by field (English and Russian).
pub type UserErrors = Vec<(String, &'static str, &'static str)>;

impl UserSpec {
    /// Checks every given field; on create, email and role are required.
    pub fn check(&self, create: bool) -> UserErrors {
        let mut e: UserErrors = Vec::new();
        match &self.email {
            Some(m) if voronka_domain::Email::parse(m).is_none() => {
                e.push(("email".into(), "not a valid e-mail address", "некорректный адрес e-mail"))
            }
            None if create => e.push(("email".into(), "required", "обязательное поле")),
            _ => {}
        }
        match &self.role {
            Some(r) if !ROLES.contains(&r.as_str()) => e.push((
                "role".into(),
                "use admin, head_of_sales, manager, telemarketer or marketer",
                "допустимо admin, head_of_sales, manager, telemarketer или marketer",
            )),
            None if create => e.push(("role".into(), "required", "обязательное поле")),
            _ => {}
        }
        if self.level.as_ref().is_some_and(|l| !LEVELS.contains(&l.as_str())) {
            e.push(("level".into(), "use junior or senior", "допустимо junior или senior"));
        }
        if self.password.as_ref().is_some_and(|p| p.chars().count() < 8 || p.len() > 1024) {
            e.push(("password".into(), "use 8 to 1024 characters", "от 8 до 1024 символов"));
        }
        if self.capacity.is_some_and(|c| !(0..=100_000).contains(&c)) {
            e.push(("capacity".into(), "must be from 0 to 100000", "от 0 до 100000"));
        }
        if self.timezone.as_ref().is_some_and(|t| parse_tz(t).is_none()) {
            e.push(("timezone".into(), "not a time zone such as Europe/Moscow", "не часовой пояс вида Europe/Moscow"));
        }
        if self.hours.as_ref().is_some_and(|h| h.shifts().is_err()) {
            e.push((
                "hours".into(),
                "use [[\"09:00\",\"18:00\"]] per weekday (mon…sun)",
                "укажите [[\"09:00\",\"18:00\"]] для дней mon…sun",
            ));
        }
        let date = |s: &String| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok();
        if self.days_off.as_ref().is_some_and(|d| !d.iter().all(date)) {
            e.push(("days_off".into(), "use dates like 2027-03-08", "укажите даты вида 2027-03-08"));
        }
        if self.vacations.as_ref().is_some_and(|v| !v.iter().all(|[a, b]| date(a) && date(b) && a <= b)) {
            e.push((
                "vacations".into(),
                "use [from, to] dates like [\"2027-07-01\",\"2027-07-14\"]",
                "укажите [с, по] вида [\"2027-07-01\",\"2027-07-14\"]",
            ));
        }
        if self.lang.as_ref().is_some_and(|l| l != "ru" && l != "en") {
            e.push(("lang".into(), "use ru or en", "допустимо ru или en"));
        }
        if self.name.as_ref().is_some_and(|n| n.trim().is_empty() || n.chars().count() > 200) {
            e.push(("name".into(), "use 1 to 200 characters", "от 1 до 200 символов"));
        }
        e
    }
}

/// A hash of a password nobody has, to verify against when the user is unknown.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("voronka-no-such-user").unwrap_or_default())
}

pub fn hash_password(password: &str) -> Result<String, StoreError> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Other(anyhow::anyhow!("password hashing failed: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: Uuid,
    email: String,
    name: String,
    role: String,
    team_id: Option<Uuid>,
    level: String,
    industries: Value,
    regions: Value,
    segments: Value,
    capacity: i64,
    timezone: String,
    hours: Value,
    days_off: Value,
    vacations: Value,
    active: bool,
    lang: String,
    last_assigned_at: Option<Ts>,
}

fn list(v: Value) -> Vec<String> {
    serde_json::from_value(v).unwrap_or_default()
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> User {
        User {
            id: r.id,
            email: r.email,
            name: r.name,
            role: r.role,
            team_id: r.team_id,
            level: r.level,
            industries: list(r.industries),
            regions: list(r.regions),
            segments: list(r.segments),
            capacity: r.capacity,
            timezone: r.timezone,
            hours: serde_json::from_value(r.hours).unwrap_or_default(),
            days_off: list(r.days_off),
            vacations: serde_json::from_value(r.vacations).unwrap_or_default(),
            active: r.active,
            lang: r.lang,
            last_assigned_at: r.last_assigned_at,
        }
    }
}

pub(crate) const USER_COLUMNS: &str = "id, email, name, role, team_id, level, industries, regions, segments, capacity, timezone, hours, days_off, \
    vacations, active, lang, last_assigned_at";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Team {
    pub id: Uuid,
    pub name: String,
}

impl Store {
    /// A literal of a uuid for SQL built here (the id is ours, so inlining is safe).
    pub(crate) fn uuid_lit(&self, id: Uuid) -> String {
        match &self.db {
            Db::Sqlite { .. } => format!("X'{}'", id.simple()),
            Db::Pg(_) => format!("'{id}'::uuid"),
        }
    }

    /// The SQL condition (on `leads l`) for what `access` may see.
    pub(crate) fn access_sql(&self, access: &Access) -> String {
        match access {
            Access::All => "TRUE".into(),
            Access::Own(u) => format!("l.owner_id = {}", self.uuid_lit(*u)),
            Access::Team { team_id, user_id } => {
                let team = match team_id {
                    Some(t) => format!(" OR l.owner_id IN (SELECT id FROM users WHERE team_id = {})", self.uuid_lit(*t)),
                    None => String::new(),
                };
                format!("(l.owner_id IS NULL OR l.owner_id = {}{team})", self.uuid_lit(*user_id))
            }
        }
    }

    pub async fn create_team(&self, name: &str) -> Result<Team, StoreError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(StoreError::Invalid("the team needs a name of 1 to 200 characters".into()));
        }
        let team = Team { id: Uuid::now_v7(), name: name.to_string() };
        let now = self.now();
        with_write!(&self.db, p => {
            sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)").bind(team.id).bind(&team.name).bind(now).execute(p).await
                .map_err(|e| if e.as_database_error().is_some_and(|d| d.is_unique_violation()) { StoreError::Invalid("a team with this name exists".into()) } else { e.into() })?;
        });
        Ok(team)
    }

    pub async fn teams(&self) -> Result<Vec<Team>, StoreError> {
        let rows: Vec<(Uuid, String)> =
            with_read!(&self.db, p => { sqlx::query_as("SELECT id, name FROM teams ORDER BY name").fetch_all(p).await? });
        Ok(rows.into_iter().map(|(id, name)| Team { id, name }).collect())
    }

    /// Creates a user from a checked spec (see `UserSpec::check`).
    pub async fn create_user(&self, spec: &UserSpec) -> Result<User, StoreError> {
        let email = spec.email.as_deref().and_then(voronka_domain::Email::parse).ok_or(StoreError::Invalid("email".into()))?;
        let hash = spec.password.as_deref().map(hash_password).transpose()?;
        let id = Uuid::now_v7();
        let now = self.now();
        let hours = serde_json::to_value(spec.hours.clone().unwrap_or_else(WeekHours::office)).unwrap_or(Value::Null);
        let arr = |v: &Option<Vec<String>>| Value::from(v.clone().unwrap_or_default());
        let vacations = serde_json::to_value(spec.vacations.clone().unwrap_or_default()).unwrap_or(Value::Null);
        let name = spec.name.clone().unwrap_or_else(|| email.as_str().split('@').next().unwrap_or("").to_string());
        with_write!(&self.db, p => {
            sqlx::query(
                "INSERT INTO users (id, email, name, role, password_hash, team_id, level, industries, regions, segments, capacity, timezone, hours, \
                 days_off, vacations, active, lang, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18)",
            )
            .bind(id).bind(email.as_str()).bind(&name).bind(spec.role.as_deref().unwrap_or("manager")).bind(hash.as_deref())
            .bind(spec.team_id).bind(spec.level.as_deref().unwrap_or("junior")).bind(arr(&spec.industries)).bind(arr(&spec.regions))
            .bind(arr(&spec.segments)).bind(spec.capacity.unwrap_or(50)).bind(spec.timezone.as_deref().unwrap_or("Europe/Moscow"))
            .bind(&hours).bind(arr(&spec.days_off)).bind(&vacations).bind(spec.active.unwrap_or(true)).bind(spec.lang.as_deref().unwrap_or("ru"))
            .bind(now)
            .execute(p).await
            .map_err(|e| if e.as_database_error().is_some_and(|d| d.is_unique_violation()) { StoreError::Invalid("a user with this e-mail exists".into()) }
                else if e.as_database_error().is_some_and(|d| d.is_foreign_key_violation()) { StoreError::Invalid("no such team".into()) } else { e.into() })?;
        });
        self.user(id).await?.ok_or(StoreError::NotFound)
    }

    /// Changes the given fields of a user.
    pub async fn update_user(&self, id: Uuid, spec: &UserSpec) -> Result<User, StoreError> {
        let current = self.user(id).await?.ok_or(StoreError::NotFound)?;
        let hash = spec.password.as_deref().map(hash_password).transpose()?;
        let email = match &spec.email {
            Some(e) => voronka_domain::Email::parse(e).ok_or(StoreError::Invalid("email".into()))?.as_str().to_string(),
            None => current.email.clone(),
        };
        let now = self.now();
        let hours = serde_json::to_value(spec.hours.clone().unwrap_or(current.hours.clone())).unwrap_or(Value::Null);
        let pick = |v: &Option<Vec<String>>, cur: &Vec<String>| Value::from(v.clone().unwrap_or_else(|| cur.clone()));
        let vacations = serde_json::to_value(spec.vacations.clone().unwrap_or(current.vacations.clone())).unwrap_or(Value::Null);
        with_write!(&self.db, p => {
            sqlx::query(
                "UPDATE users SET email = $1, name = $2, role = $3, password_hash = COALESCE($4, password_hash), team_id = $5, level = $6, \
                 industries = $7, regions = $8, segments = $9, capacity = $10, timezone = $11, hours = $12, days_off = $13, vacations = $14, \
                 active = $15, lang = $16, updated_at = $17 WHERE id = $18",
            )
            .bind(&email).bind(spec.name.as_deref().unwrap_or(&current.name)).bind(spec.role.as_deref().unwrap_or(&current.role))
            .bind(hash.as_deref()).bind(spec.team_id.or(current.team_id)).bind(spec.level.as_deref().unwrap_or(&current.level))
            .bind(pick(&spec.industries, &current.industries)).bind(pick(&spec.regions, &current.regions)).bind(pick(&spec.segments, &current.segments))
            .bind(spec.capacity.unwrap_or(current.capacity)).bind(spec.timezone.as_deref().unwrap_or(&current.timezone)).bind(&hours)
            .bind(pick(&spec.days_off, &current.days_off)).bind(&vacations).bind(spec.active.unwrap_or(current.active))
            .bind(spec.lang.as_deref().unwrap_or(&current.lang)).bind(now).bind(id)
            .execute(p).await
            .map_err(|e| if e.as_database_error().is_some_and(|d| d.is_unique_violation()) { StoreError::Invalid("a user with this e-mail exists".into()) }
                else if e.as_database_error().is_some_and(|d| d.is_foreign_key_violation()) { StoreError::Invalid("no such team".into()) } else { e.into() })?;
        });
        if hash.is_some() {
            // A new password ends every session that the old one opened.
            self.delete_user_sessions(id).await?;
        }
        self.user(id).await?.ok_or(StoreError::NotFound)
    }

    pub async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row: Option<UserRow> =
            with_read!(&self.db, p => { sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await? });
        Ok(row.map(User::from))
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let Some(e) = voronka_domain::Email::parse(email) else { return Ok(None) };
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        let row: Option<UserRow> =
            with_read!(&self.db, p => { sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(e.as_str()).fetch_optional(p).await? });
        Ok(row.map(User::from))
    }

    /// The user with this e-mail when the password matches (and the user is active).
    pub async fn check_password(&self, email: &str, password: &str) -> Result<Option<User>, StoreError> {
        let Some(e) = voronka_domain::Email::parse(email) else { return Ok(None) };
        let row: Option<(Uuid, Option<String>, bool)> = with_read!(&self.db, p => {
            sqlx::query_as("SELECT id, password_hash, active FROM users WHERE email = $1").bind(e.as_str()).fetch_optional(p).await?
        });
        match row {
            Some((id, Some(hash), true)) => {
                let ok = tokio::task::spawn_blocking({
                    let (password, hash) = (password.to_string(), hash);
                    move || verify_password(&password, &hash)
                })
                .await
                .unwrap_or(false);
                if ok { self.user(id).await } else { Ok(None) }
            }
            _ => {
                // Spend the same time as for a real user, so the answer does not tell
                // which e-mails have accounts.
                let _ = tokio::task::spawn_blocking(|| verify_password("x", dummy_hash())).await;
                Ok(None)
            }
        }
    }

    /// Users a viewer may list: everyone for admins, the team for a head of sales.
    pub async fn users(&self, team: Option<Uuid>) -> Result<Vec<User>, StoreError> {
        let rows: Vec<UserRow> = match team {
            None => {
                let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name, id");
                with_read!(&self.db, p => { sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await? })
            }
            Some(t) => {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE team_id = $1 ORDER BY name, id");
                with_read!(&self.db, p => { sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(t).fetch_all(p).await? })
            }
        };
        Ok(rows.into_iter().map(User::from).collect())
    }

    /// Creates an API token that acts as `user`.
    pub async fn create_user_token(&self, user: Uuid, name: &str, scopes: &[String]) -> Result<(Uuid, String), StoreError> {
        let (id, token) = self.create_token(name, scopes).await?;
        with_write!(&self.db, p => {
            sqlx::query("UPDATE api_tokens SET user_id = $1 WHERE id = $2").bind(user).bind(id).execute(p).await?;
        });
        Ok((id, token))
    }
}

#[cfg(test)]
mod password_tests {
    use super::*;

    #[test]
    fn passwords_are_stored_as_argon2id_and_checked() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert_ne!(h, hash_password("correct horse battery").unwrap(), "salted");
    }
}
