//! One error shape for every HTTP error the API returns.
//!
//! ```json
//! {"error": {"status": 422, "kind": "invalid_request",
//!            "message": "invalid request: `candidates[3].relevance` must be a finite number",
//!            "field": "candidates[3].relevance"}}
//! ```

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::request::RequestError;
use crate::server::registry::ResolveError;

/// An API error: status, machine-readable kind, message and details.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// HTTP status.
    #[serde(serialize_with = "status_code")]
    #[schema(value_type = u16)]
    pub status: StatusCode,
    /// Machine-readable kind.
    pub kind: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The offending request field, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Valid names, for unknown routes and policies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known: Option<Vec<String>>,
    /// Seconds after which to retry (503).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

fn status_code<S: serde::Serializer>(s: &StatusCode, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_u16(s.as_u16())
}

impl ApiError {
    /// A bare error.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            field: None,
            known: None,
            retry_after: None,
        }
    }

    /// 413 for a body over `limit` bytes, 408 for one that did not arrive
    /// within the listener's body read timeout, else 400 for a body that
    /// could not be read.
    pub fn body(e: axum::extract::rejection::BytesRejection, limit: usize) -> Self {
        if crate::server::listener::is_body_timeout(&e) {
            return Self::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", e.body_text());
        }
        let status = e.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_body"
        };
        Self::new(
            status,
            kind,
            format!("{} (limit {limit} bytes)", e.body_text()),
        )
    }

    /// 503: more than `--max-inflight` scoring requests in progress.
    pub fn inflight() -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many scoring requests in progress",
            )
        }
    }

    /// 503: no policy instance became free within the queue deadline.
    pub fn overloaded(policy: &str) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("policy `{policy}` is at its concurrency limit; retry shortly"),
            )
        }
    }

    /// 503 while the initial policy set is still loading.
    pub fn not_ready() -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the initial policy set is still loading",
            )
        }
    }

    /// 404 for an unknown policy name.
    pub fn unknown_policy(name: &str, known: Vec<String>) -> Self {
        ApiError {
            known: Some(known),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "unknown_policy",
                format!("no policy named `{name}`"),
            )
        }
    }

    /// Metric label of the error.
    pub fn reason(&self) -> &'static str {
        self.kind
    }
}

/// The router's fallback: 404 `not_found` in the API's error shape, naming
/// the path, for a path no endpoint serves.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no endpoint at {}; the API is described at /openapi.json",
            crate::sandbox::visible(uri.path())
        ),
    )
}

/// 405 `method_not_allowed` in the API's error shape. The router adds the
/// `Allow` header listing the methods the path takes.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}; see the Allow header",
            crate::sandbox::visible(uri.path())
        ),
    )
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match &e {
            RequestError::Malformed { path, .. } => ApiError {
                field: Some(path.clone()),
                ..Self::new(StatusCode::BAD_REQUEST, "malformed_request", e.to_string())
            },
            RequestError::Invalid { field, .. } => ApiError {
                field: Some(field.clone()),
                ..Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    e.to_string(),
                )
            },
        }
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Unknown { name, known } => ApiError {
                field: Some("route".into()),
                known: Some(known),
                ..Self::new(
                    StatusCode::NOT_FOUND,
                    "unknown_route",
                    format!("no route or policy named `{name}`"),
                )
            },
            ResolveError::NoDefault { known } => ApiError {
                field: Some("route".into()),
                known: Some(known),
                ..Self::new(
                    StatusCode::NOT_FOUND,
                    "unknown_route",
                    "the request names no route and no default route is configured",
                )
            },
            ResolveError::Unavailable {
                route,
                policy,
                error,
            } => ApiError {
                retry_after: Some(5),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "policy_unavailable",
                    format!(
                        "route `{route}`: policy `{policy}` has no version loaded ({})",
                        error.as_deref().unwrap_or("not loaded yet")
                    ),
                )
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": &self });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
