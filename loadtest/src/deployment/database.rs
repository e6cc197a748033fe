//! A database of a deployment's own: created with a unique name, dropped when done.

use anyhow::Context as _;
use sqlx::Connection as _;

/// A fresh database on a server.
#[derive(Debug, Clone)]
pub struct Database {
    /// The server URL without a database (options after `?` stay after the name).
    pub server: String,
    pub name: String,
    pub url: String,
}

impl Database {
    /// Creates `<prefix>_<random hex>` on `server`.
    pub async fn create(server: &str, prefix: &str) -> anyhow::Result<Database> {
        let name = format!(
            "{prefix}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let mut admin = sqlx::PgConnection::connect(&url_of(server, "postgres"))
            .await
            .with_context(|| format!("connecting to {server}"))?;
        // The name is ours: a fixed prefix and hex digits.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .context("creating the deployment's database")?;
        let _ = admin.close().await;
        Ok(Database {
            server: server.to_string(),
            url: url_of(server, &name),
            name,
        })
    }

    /// Drops the database, whoever is still connected.
    pub async fn drop_it(&self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&url_of(&self.server, "postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

/// Drops `db` from a thread of its own: for `Drop` implementations, which may run inside or
/// outside a runtime.
pub fn drop_database_blocking(db: &Database) {
    let db = db.clone();
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let _ = rt.block_on(db.drop_it());
    })
    .join();
}

/// The URL of database `name` on `server`: options after `?` stay after the name.
pub fn url_of(server: &str, name: &str) -> String {
    match server.split_once('?') {
        Some((server, options)) => format!("{}/{name}?{options}", server.trim_end_matches('/')),
        None => format!("{}/{name}", server.trim_end_matches('/')),
    }
}
