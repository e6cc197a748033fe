//! Connecting to PostgreSQL: creates the database when it does not exist yet, and applies this
//! project's migrations and the queue's. Both binaries call this at start-up; concurrent callers
//! are serialized by the migrators' advisory locks.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::error::{Error, Result};

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

use sqlx::PgConnection;

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

/// Applies our schema. Safe to run from many processes at once.
pub async fn migrate(pool: &PgPool) -> Result<()> {
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
