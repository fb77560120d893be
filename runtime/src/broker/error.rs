//! Error answers: JSON `{code, message}` with the right status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::queue::QueueError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds the client should wait before trying again (`Retry-After`).
    pub retry_after: Option<u64>,
}

/// Marks an error response with its code, for the error metrics.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(self, seconds: u64) -> Self {
        ApiError {
            retry_after: Some(seconds),
            ..self
        }
    }
}

/// How long a client refused because its address holds too many places
/// is asked to wait: places free as sessions end, at no set time.
const ADDRESS_FULL_RETRY_SECONDS: u64 = 30;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(Body {
                code: self.code,
                message: &self.message,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let retry_after = match e {
            QueueError::AddressRateLimited { retry_after_ms } => {
                Some((retry_after_ms.max(1) as u64).div_ceil(1000))
            }
            QueueError::AddressFull => Some(ADDRESS_FULL_RETRY_SECONDS),
            _ => None,
        };
        let (status, code) = match e {
            QueueError::NotConfigured => (StatusCode::SERVICE_UNAVAILABLE, "room_not_ready"),
            QueueError::Rejected => (StatusCode::FORBIDDEN, "rejected"),
            QueueError::RoomClosed => (StatusCode::GONE, "room_closed"),
            QueueError::AddressRateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_joins")
            }
            QueueError::AddressFull => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
            QueueError::InvalidInvite => (StatusCode::FORBIDDEN, "invalid_invite"),
            QueueError::UnknownSession => (StatusCode::NOT_FOUND, "unknown_session"),
            QueueError::NotActive => (StatusCode::CONFLICT, "not_active"),
            QueueError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            QueueError::Malformed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "store call failed");
        }
        ApiError {
            retry_after,
            ..ApiError::new(status, code, e.to_string())
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let (status, code) = match e {
            AuthError::MissingUserToken => (StatusCode::UNAUTHORIZED, "missing_token"),
            AuthError::InvalidUserToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            AuthError::MissingSessionToken => (StatusCode::UNAUTHORIZED, "missing_session_token"),
            AuthError::InvalidSessionToken => (StatusCode::UNAUTHORIZED, "invalid_session_token"),
            AuthError::WrongRoom => (StatusCode::FORBIDDEN, "wrong_room"),
            AuthError::WrongSession => (StatusCode::FORBIDDEN, "wrong_session"),
        };
        ApiError::new(status, code, e.to_string())
    }
}
