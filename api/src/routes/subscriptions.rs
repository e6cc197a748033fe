//! Webhook subscriptions: a project's lifecycle events POSTed to a URL of its choosing,
//! through the outbox, with retries, and each delivery listed with its attempts.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use orchestration_core::store::{deliveries, subscriptions};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, ProjectParam, ProjectScope, parse_id};
use crate::wire::{Delivery, ItemList, Subscription, SubscriptionInput};

/// The event filter a body asks for, checked: known kinds, `<machine>.*`, or `*`.
fn events(asked: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let asked = asked.unwrap_or_default();
    if asked.is_empty() {
        return Ok(vec!["*".to_string()]);
    }
    if asked.len() > 64 {
        return Err(ApiError::Unprocessable(
            "events may list at most 64 kinds".into(),
        ));
    }
    let kinds = orchestration_core::effects::kinds();
    for kind in &asked {
        let known = kind == "*"
            || kinds.contains(kind)
            || matches!(kind.as_str(), "run.*" | "node.*" | "approval.*");
        if !known {
            return Err(ApiError::Unprocessable(format!(
                "events: unknown event kind {kind:?}; use *, run.*, node.*, approval.* or one of {}",
                kinds.join(", ")
            )));
        }
    }
    let mut events = asked;
    events.sort();
    events.dedup();
    Ok(events)
}

/// Subscribes a URL to the project's lifecycle events. The URL must resolve to public
/// addresses unless the deployment allows private ones (`ORCH_SUBSCRIPTIONS_ALLOW_PRIVATE`).
#[utoipa::path(
    post,
    path = "/api/subscriptions",
    operation_id = "createSubscription",
    tag = "subscriptions",
    params(ProjectParam),
    request_body = SubscriptionInput,
    responses(
        (status = 201, description = "The new subscription", body = Subscription),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 413, response = crate::error::PayloadTooLarge),
        (status = 415, response = crate::error::UnsupportedMediaType),
        (status = 422, response = crate::error::Unprocessable),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    caller: Caller,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<SubscriptionInput>,
) -> ApiResult<(StatusCode, Json<Subscription>)> {
    let url = body.url.trim();
    if url.is_empty() || url.len() > 2048 {
        return Err(ApiError::Unprocessable(
            "url must be 1 to 2048 characters".into(),
        ));
    }
    orchestration_worker::webhook::destination(url, state.allow_private_webhooks)
        .await
        .map_err(ApiError::Unprocessable)?;
    if let Some(secret) = &body.secret
        && (secret.is_empty() || secret.len() > 512)
    {
        return Err(ApiError::Unprocessable(
            "secret must be 1 to 512 characters".into(),
        ));
    }
    let events = events(body.events)?;
    let created_by = caller.identity(&headers)?;
    let subscription = subscriptions::insert(
        &state.pool,
        project,
        url,
        &events,
        body.secret.as_deref(),
        created_by.as_deref(),
    )
    .await?;
    // This process delivers from now on; the others hear of it by notification.
    if let Err(e) = state.engine.outbox().refresh(&state.pool).await {
        tracing::warn!(error = %e, "could not reload the subscriptions; the watch will");
    }
    tracing::info!(subscription = %subscription.id, project, url, "subscription created");
    Ok((StatusCode::CREATED, Json(subscription.into())))
}

/// The project's subscriptions (never their secrets).
#[utoipa::path(
    get,
    path = "/api/subscriptions",
    operation_id = "listSubscriptions",
    tag = "subscriptions",
    params(ProjectParam),
    responses(
        (status = 200, description = "The project's subscriptions", body = ItemList<Subscription>),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
) -> ApiResult<Json<ItemList<Subscription>>> {
    let items = subscriptions::list(&state.pool, project).await?;
    Ok(Json(items.into()))
}

/// One subscription.
#[utoipa::path(
    get,
    path = "/api/subscriptions/{id}",
    operation_id = "getSubscription",
    tag = "subscriptions",
    params(ProjectParam, ("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription", body = Subscription),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
) -> ApiResult<Json<Subscription>> {
    let id = parse_id(&id, "subscription")?;
    Ok(Json(
        subscriptions::get(&state.pool, project, id).await?.into(),
    ))
}

/// Ends a subscription: nothing more is delivered to it, deliveries not made yet included.
#[utoipa::path(
    delete,
    path = "/api/subscriptions/{id}",
    operation_id = "deleteSubscription",
    tag = "subscriptions",
    params(ProjectParam, ("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "subscription")?;
    subscriptions::delete(&state.pool, project, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// At most this many deliveries, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// A subscription's deliveries, newest first: each event's status, attempts and last error.
#[utoipa::path(
    get,
    path = "/api/subscriptions/{id}/deliveries",
    operation_id = "listDeliveries",
    tag = "subscriptions",
    params(ProjectParam, ("id" = String, Path, description = "Subscription id"), DeliveryParams),
    responses(
        (status = 200, description = "Deliveries", body = ItemList<Delivery>),
        (status = 400, response = crate::error::BadRequest),
        (status = 404, response = crate::error::NotFound),
        (status = 503, response = crate::error::Unavailable),
    )
)]
pub async fn deliveries(
    State(state): State<AppState>,
    ProjectScope(project): ProjectScope,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> ApiResult<Json<ItemList<Delivery>>> {
    let id = parse_id(&id, "subscription")?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    // Another project's subscription is not found.
    subscriptions::get(&state.pool, project, id).await?;
    let items = deliveries::list(&state.pool, id, limit).await?;
    Ok(Json(items.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_the_lifecycle_subjects() {
        assert_eq!(events(None).unwrap(), ["*"]);
        assert_eq!(
            events(Some(vec![
                "run.failed".into(),
                "approval.requested".into(),
                "run.failed".into()
            ]))
            .unwrap(),
            ["approval.requested", "run.failed"]
        );
        assert!(events(Some(vec!["run.exploded".into()])).is_err());
        assert!(events(Some(vec!["approval.*".into()])).is_ok());
    }
}
