//! Creating and dropping whole PostgreSQL databases, for tests and benchmarks that need a
//! fresh database per run.

use anyhow::{Context, Result, bail};
use sqlx::Connection;

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 63 || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        bail!("bad database name {name:?}");
    }
    Ok(())
}

async fn admin(url: &str, sql: String) -> Result<()> {
    let mut c =
        sqlx::PgConnection::connect(url).await.with_context(|| format!("cannot connect to PostgreSQL at {}", crate::redact(url)))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await?;
    c.close().await?;
    Ok(())
}

/// Creates database `name` on the server of `admin_url` and returns its URL.
pub async fn create_pg_database(admin_url: &str, name: &str) -> Result<String> {
    check_name(name)?;
    admin(admin_url, format!("CREATE DATABASE {name}")).await?;
    let base = admin_url.split('?').next().unwrap_or(admin_url);
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    Ok(format!("{base}/{name}"))
}

/// Drops database `name`, closing its connections.
pub async fn drop_pg_database(admin_url: &str, name: &str) -> Result<()> {
    check_name(name)?;
    admin(admin_url, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
}

/// Drops every database whose name starts with `prefix` (leftovers of a crashed run).
pub async fn drop_pg_databases_with_prefix(admin_url: &str, prefix: &str) -> Result<usize> {
    check_name(prefix)?;
    let mut c = sqlx::PgConnection::connect(admin_url).await?;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)").bind(prefix).fetch_all(&mut c).await?;
    c.close().await?;
    for n in &names {
        drop_pg_database(admin_url, n).await?;
    }
    Ok(names.len())
}
