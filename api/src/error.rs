//! The one place where errors become HTTP responses: `{"error":{"code":..,"message":..}}`.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orchestration_core::Error as CoreError;
use serde::Serialize;
use utoipa::{ToResponse, ToSchema};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Unauthorized(String),
}

/// What went wrong, for programs; `message` says it for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    Internal,
    DatabaseUnavailable,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::Core(CoreError::Invalid(_)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::ValidationFailed,
            ),
            ApiError::Core(CoreError::NotFound(_)) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Core(CoreError::Conflict(_)) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ApiError::Core(CoreError::Forbidden(_)) => {
                (StatusCode::FORBIDDEN, ErrorCode::Forbidden)
            }
            ApiError::Core(CoreError::Database(e)) if orchestration_core::db::is_transient(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::DatabaseUnavailable,
            ),
            ApiError::Core(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            ApiError::Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::ValidationFailed,
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
            ),
            ApiError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed)
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status.is_server_error() {
            // The cause goes to the log with its chain; the client gets no internals.
            tracing::error!(error = %self, "request failed");
            match code {
                ErrorCode::DatabaseUnavailable => {
                    "the database is unavailable; try again shortly".to_string()
                }
                _ => "internal error".to_string(),
            }
        } else {
            self.to_string()
        };
        let body = ErrorBody {
            error: ErrorDetail { code, message },
        };
        (status, axum::Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::Unprocessable(format!(
                "invalid request body: {}",
                e.body_text().trim_start_matches(
                    "Failed to deserialize the JSON body into the target type: "
                )
            )),
            JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!(
                "malformed JSON: {}",
                e.body_text()
                    .trim_start_matches("Failed to parse the request body as JSON: ")
            )),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a request body with Content-Type: application/json".into(),
            ),
            JsonRejection::BytesRejection(e) => e.into(),
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("request body is too large".into())
        } else {
            ApiError::BadRequest(format!("cannot read request body: {}", e.body_text()))
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(format!(
            "invalid query string: {}",
            r.body_text()
                .trim_start_matches("Failed to deserialize query string: ")
        ))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::NotFound(format!("no such resource: {}", r.body_text()))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

// Reusable error responses for the OpenAPI document: each is an [`ErrorBody`].

/// The request is malformed: a query parameter of the wrong form, or a body that is not JSON.
#[derive(ToResponse)]
pub struct BadRequest(pub ErrorBody);

/// The AlertManager token is missing or wrong.
#[derive(ToResponse)]
pub struct Unauthorized(pub ErrorBody);

/// The actor may not do this (e.g. approve a run they triggered).
#[derive(ToResponse)]
pub struct Forbidden(pub ErrorBody);

/// No such resource in this project (ids that are not ours are simply not found), or no such
/// project.
#[derive(ToResponse)]
pub struct NotFound(pub ErrorBody);

/// The request conflicts with the current state (a duplicate name, a run that is not in a
/// state that allows this).
#[derive(ToResponse)]
pub struct Conflict(pub ErrorBody);

/// The body is larger than the service accepts.
#[derive(ToResponse)]
pub struct PayloadTooLarge(pub ErrorBody);

/// The body is not sent as `Content-Type: application/json`.
#[derive(ToResponse)]
pub struct UnsupportedMediaType(pub ErrorBody);

/// The body is JSON of the wrong shape, or its values are not valid.
#[derive(ToResponse)]
pub struct Unprocessable(pub ErrorBody);

/// The database does not answer; try again shortly.
#[derive(ToResponse)]
pub struct Unavailable(pub ErrorBody);
