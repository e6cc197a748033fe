//! Connecting to PostgreSQL: creates the database when it does not exist yet, and applies the
//! outbox's migrations (apalis-postgres, schema `apalis`) and then this project's (which add to
//! the outbox's table). Both binaries call this at start-up; concurrent callers are serialized
//! by the migrators' advisory locks.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::error::{Error, Result};

/// Where the database is and how to use it.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Created if it does not exist.
    pub url: String,
    /// Largest number of connections one process opens.
    pub max_connections: u32,
    /// How long start-up waits for an unreachable database.
    pub startup_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "postgres://postgres@127.0.0.1:5432/orchestration".into(),
            max_connections: 20,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// Connects to the database `settings` name (creating it) and migrates it: what every
/// process does first.
pub async fn open(settings: &DatabaseSettings) -> Result<PgPool> {
    connect_and_migrate(
        &settings.url,
        settings.max_connections,
        settings.startup_timeout,
    )
    .await
}

/// Opens a pool, creating the database named in `url` if it is missing.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?;
    match PgConnection::connect_with(&options).await {
        Ok(conn) => {
            let _ = conn.close().await;
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            create_database(&options).await?;
        }
        Err(e) => return Err(e.into()),
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    Ok(pool)
}

async fn create_database(options: &PgConnectOptions) -> Result<()> {
    let name = options
        .get_database()
        .ok_or_else(|| Error::conflict("DATABASE_URL names no database"))?
        .to_string();
    let admin = options.clone().database("postgres");
    let mut conn = admin.connect().await?;
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
    {
        Ok(_) => {
            tracing::info!(database = %name, "created database");
        }
        // Another process created it first: that is what we wanted.
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
        Err(e) => return Err(e.into()),
    }
    let _ = conn.close().await;
    Ok(())
}

/// Applies the schema. Safe to run from many processes at once.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    apalis_postgres::PostgresStorage::<()>::setup(pool)
        .await
        .map_err(|e| match e {
            apalis_postgres::Error::Database(e) => Error::Database(e),
            other => Error::Database(sqlx::Error::Protocol(format!(
                "the outbox's migrations failed: {other}"
            ))),
        })?;
    sqlx::migrate!("../migrations").run(pool).await?;
    Ok(())
}

/// Connects and migrates, retrying for a while so that a service started together with its
/// database does not fail just because it came up first.
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
    wait: Duration,
) -> Result<PgPool> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let attempt = async {
            let pool = connect(url, max_connections).await?;
            migrate(&pool).await?;
            Ok::<_, Error>(pool)
        }
        .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(Error::Database(e))
                if is_transient(&e) && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %e, "database not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Errors that mean "the database is not there right now" rather than "this can never work".
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => {
            // 57P01 admin shutdown, 57P03 cannot connect now, 08xxx connection exceptions.
            db.code()
                .map(|c| c.starts_with("08") || c == "57P01" || c == "57P03")
                .unwrap_or(false)
        }
        _ => false,
    }
}
