//! API tokens: created with a hash of their secret, looked up by that hash on every request,
//! revoked by setting `revoked_at` (effective on the next request, in every API replica).

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::error::{Error, Result};

/// A token as listed: never its secret.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Token {
    pub id: Uuid,
    pub project_id: Option<i64>,
    pub role: Role,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The columns a [`Token`] is read from.
macro_rules! columns {
    () => {
        "id, project_id, role, name, created_at, created_by, revoked_at, last_used_at"
    };
}

pub struct NewToken<'a> {
    pub project_id: Option<i64>,
    pub role: Role,
    pub name: &'a str,
    pub secret_hash: &'a str,
    pub created_by: Option<&'a str>,
}

pub async fn insert(db: impl PgExecutor<'_>, t: &NewToken<'_>) -> Result<Token> {
    sqlx::query_as::<_, Token>(concat!(
        "INSERT INTO api_tokens (id, project_id, role, name, secret_hash, created_by)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(t.project_id)
    .bind(t.role)
    .bind(t.name)
    .bind(t.secret_hash)
    .bind(t.created_by)
    .fetch_one(db)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23503") => {
            Error::NotFound("project")
        }
        _ => super::unique_violation(e, || "a token with this secret exists already".into()),
    })
}

/// The principal behind a secret's hash, if the token exists and is not revoked.
pub async fn authenticate(pool: &PgPool, secret_hash: &str) -> Result<Option<Principal>> {
    // last_used_at is for people auditing tokens; a minute of precision is plenty and keeps
    // this a read on most requests.
    Ok(sqlx::query_as::<_, Principal>(
        "WITH found AS (
             SELECT id, project_id, role, name, last_used_at FROM api_tokens
             WHERE secret_hash = $1 AND revoked_at IS NULL),
         touched AS (
             UPDATE api_tokens t SET last_used_at = now() FROM found
             WHERE t.id = found.id AND (found.last_used_at IS NULL OR found.last_used_at < now() - interval '1 minute'))
         SELECT id AS token_id, project_id, role, name FROM found",
    )
    .bind(secret_hash)
    .fetch_optional(pool)
    .await?)
}

/// Tokens of a project (`Some`), or all of them (`None`), newest first.
pub async fn list(db: impl PgExecutor<'_>, project_id: Option<i64>) -> Result<Vec<Token>> {
    Ok(sqlx::query_as::<_, Token>(concat!(
        "SELECT ",
        columns!(),
        " FROM api_tokens WHERE ($1::bigint IS NULL OR project_id = $1)
         ORDER BY created_at DESC, id DESC LIMIT 1000"
    ))
    .bind(project_id)
    .fetch_all(db)
    .await?)
}

/// Revokes a token visible to the caller (its project, or any for a deployment-wide admin).
pub async fn revoke(db: impl PgExecutor<'_>, project_id: Option<i64>, id: Uuid) -> Result<Token> {
    sqlx::query_as::<_, Token>(concat!(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
         WHERE id = $1 AND ($2::bigint IS NULL OR project_id = $2) RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(project_id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("token"))
}

/// Makes sure the deployment has an admin token. With `configured` (ORCH_ADMIN_TOKEN) that
/// secret is the bootstrap admin; without it, a secret is generated the first time only and
/// returned so it can be shown once. Safe when several API replicas start at once.
pub async fn bootstrap(pool: &PgPool, configured: Option<&str>) -> Result<Option<String>> {
    let mut tx = pool.begin().await?;
    // One bootstrap at a time across replicas.
    sqlx::query("SELECT pg_advisory_xact_lock(7343021)")
        .execute(&mut *tx)
        .await?;
    let generated = match configured {
        Some(secret) => {
            let hash = crate::auth::token_hash(secret);
            sqlx::query(
                "INSERT INTO api_tokens (id, project_id, role, name, secret_hash, created_by)
                 VALUES ($1, NULL, 'admin', 'bootstrap-admin', $2, 'ORCH_ADMIN_TOKEN')
                 ON CONFLICT (secret_hash) DO UPDATE SET revoked_at = NULL",
            )
            .bind(Uuid::now_v7())
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
            None
        }
        None => {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE role = 'admin' AND revoked_at IS NULL)",
            )
            .fetch_one(&mut *tx)
            .await?;
            if exists {
                None
            } else {
                let secret = crate::auth::token_generate();
                insert(
                    &mut *tx,
                    &NewToken {
                        project_id: None,
                        role: Role::Admin,
                        name: "bootstrap-admin",
                        secret_hash: &crate::auth::token_hash(&secret),
                        created_by: Some("first start"),
                    },
                )
                .await?;
                Some(secret)
            }
        }
    };
    tx.commit().await?;
    Ok(generated)
}
