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
    Ok(database_url(admin_url, name))
}

/// `admin_url` with its database name replaced by `name`; its parameters (`?sslmode=…`) kept,
/// but for a `dbname`, which would name the admin database again.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => {
            let kept: Vec<&str> = q.split('&').filter(|p| !p.is_empty() && p.split('=').next() != Some("dbname")).collect();
            (b, if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) })
        }
        None => (admin_url, String::new()),
    };
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    format!("{base}/{name}{query}")
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

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn a_database_url_keeps_the_admin_urls_parameters() {
        assert_eq!(database_url("postgres://u@h:5432/postgres", "vt_1"), "postgres://u@h:5432/vt_1");
        assert_eq!(
            database_url("postgres://u@h:5432/postgres?sslmode=disable&application_name=x", "vt_1"),
            "postgres://u@h:5432/vt_1?sslmode=disable&application_name=x"
        );
        assert_eq!(database_url("postgres://u@h/?sslmode=require", "vt_1"), "postgres://u@h/vt_1?sslmode=require");
        assert_eq!(database_url("postgres://u@h/postgres?dbname=postgres&sslmode=disable", "vt_1"), "postgres://u@h/vt_1?sslmode=disable");
        assert_eq!(database_url("postgres://u@h/postgres?dbname=postgres", "vt_1"), "postgres://u@h/vt_1");
    }
}
