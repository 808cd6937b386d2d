//! One error shape for every error the API returns, and the one list of
//! error kinds.
//!
//! ```json
//! {"error": {"status": 422, "kind": "invalid_request",
//!            "message": "invalid request: `candidates[3].relevance` must be a finite number",
//!            "field": "candidates[3].relevance"}}
//! ```
//!
//! [`ErrorKind`] is the vocabulary: each kind has its HTTP status, its gRPC
//! code and its wire name, and [`ErrorKind::ALL`] lists them for the OpenAPI
//! document. The layers below the transport (serving, control, the library)
//! return their own typed errors ([`ServeError`], [`ChangeError`],
//! [`RequestError`], [`ResolveError`]); each is mapped to an [`ApiError`]
//! here, once, the way kubewarden's `handle_evaluation_error` maps its
//! evaluation errors at the edge.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;

use crate::control::manager::ChangeError;
use crate::control::registry::ResolveError;
use crate::control::rollout::RolloutError;
use crate::request::RequestError;
use crate::sandbox::visible;
use crate::serving::ServeError;

/// Declares [`ErrorKind`] from one table: variant, wire name, HTTP status,
/// gRPC code, and what it means.
macro_rules! error_kinds {
    ($($(#[doc = $doc:literal])+ $variant:ident = ($name:literal, $status:ident, $code:ident),)+) => {
        /// What went wrong, machine-readable: the `kind` of every error body,
        /// the `google.rpc.ErrorInfo.reason` of every gRPC error, and the
        /// `reason` label of the `oasis_rejected_requests` metric.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl ErrorKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant,)+];

            /// The wire name (`snake_case`).
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorKind::$variant => $name,)+ }
            }

            /// The HTTP status this kind is answered with.
            pub fn status(self) -> StatusCode {
                match self { $(ErrorKind::$variant => StatusCode::$status,)+ }
            }

            /// The gRPC status code of this kind.
            pub fn grpc(self) -> Code {
                match self { $(ErrorKind::$variant => Code::$code,)+ }
            }

            /// The kind with wire name `name`.
            pub fn from_name(name: &str) -> Option<ErrorKind> {
                match name { $($name => Some(ErrorKind::$variant),)+ _ => None }
            }
        }
    };
}

error_kinds! {
    /// The body is not JSON of the right shape; `field` is the JSON path.
    /// (An admin body's rejection keeps axum's status: 422 for a
    /// wrong-typed value.)
    MalformedRequest = ("malformed_request", BAD_REQUEST, InvalidArgument),
    /// The body is labelled with a `Content-Type` the endpoint does not
    /// take (`text/plain` on a JSON endpoint, or none on an admin JSON body).
    UnsupportedMediaType = ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, InvalidArgument),
    /// A value the contract refuses; `field` names it.
    InvalidRequest = ("invalid_request", UNPROCESSABLE_ENTITY, InvalidArgument),
    /// The body could not be read.
    BadBody = ("bad_body", BAD_REQUEST, InvalidArgument),
    /// The body is over the size limit.
    TooLarge = ("too_large", PAYLOAD_TOO_LARGE, ResourceExhausted),
    /// The body did not arrive within the body read timeout.
    BodyTimeout = ("body_timeout", REQUEST_TIMEOUT, DeadlineExceeded),
    /// More events in one request than allowed.
    TooManyEvents = ("too_many_events", PAYLOAD_TOO_LARGE, ResourceExhausted),
    /// No such route or policy, or no default route; `known` lists names.
    UnknownRoute = ("unknown_route", NOT_FOUND, NotFound),
    /// No policy with that key; `known` lists the keys.
    UnknownPolicy = ("unknown_policy", NOT_FOUND, NotFound),
    /// The version is not stored (or not a loaded policy, for a shadow).
    UnknownVersion = ("unknown_version", NOT_FOUND, NotFound),
    /// No endpoint at that path.
    NotFound = ("not_found", NOT_FOUND, NotFound),
    /// The path does not take that method; see the `Allow` header.
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED, Unimplemented),
    /// The admin API needs a bearer token and none (or a malformed one) came.
    Unauthorized = ("unauthorized", UNAUTHORIZED, Unauthenticated),
    /// The bearer token is not an admin token.
    Forbidden = ("forbidden", FORBIDDEN, PermissionDenied),
    /// A rollout change that does not apply to the route's state (409), or
    /// a value out of range (422).
    Refused = ("refused", CONFLICT, FailedPrecondition),
    /// A rollout change made on a revision that is no longer the committed
    /// one (`If-Match`); the message names the current revision.
    Conflict = ("conflict", CONFLICT, Aborted),
    /// The control store (Redis) cannot be reached: rollout changes are
    /// refused, serving goes on; retry after `Retry-After`.
    ControlStoreUnavailable = ("control_store_unavailable", SERVICE_UNAVAILABLE, Unavailable),
    /// A shadow reference that is not `key` or `key@sha256:…`.
    InvalidShadow = ("invalid_shadow", UNPROCESSABLE_ENTITY, InvalidArgument),
    /// An uploaded module that does not load.
    InvalidModule = ("invalid_module", UNPROCESSABLE_ENTITY, InvalidArgument),
    /// Too many requests in progress, or the policy is at its concurrency
    /// limit; retry after `Retry-After`.
    Overloaded = ("overloaded", SERVICE_UNAVAILABLE, ResourceExhausted),
    /// The initial policy set is still loading.
    NotReady = ("not_ready", SERVICE_UNAVAILABLE, Unavailable),
    /// The route's policy has no version loaded.
    PolicyUnavailable = ("policy_unavailable", SERVICE_UNAVAILABLE, Unavailable),
    /// `/v1/events` on a server that keeps no delivery state and logs no
    /// decisions.
    EventsDisabled = ("events_disabled", NOT_FOUND, NotFound),
    /// `/v1/outcomes` on a server that logs no decisions.
    OutcomesDisabled = ("outcomes_disabled", NOT_FOUND, NotFound),
    /// The delivery state store cannot take the events now.
    EventsBusy = ("events_busy", SERVICE_UNAVAILABLE, Unavailable),
    /// The outcome log cannot take the events now.
    OutcomesBusy = ("outcomes_busy", SERVICE_UNAVAILABLE, Unavailable),
    /// A fault of the server itself.
    Internal = ("internal", INTERNAL_SERVER_ERROR, Internal),
}

impl Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl utoipa::PartialSchema for ErrorKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::Type(
                utoipa::openapi::schema::Type::String,
            ))
            .enum_values(Some(ErrorKind::ALL.iter().map(|k| k.as_str())))
            .description(Some("What went wrong, machine-readable"))
            .into()
    }
}

impl utoipa::ToSchema for ErrorKind {}

/// An API error: status, machine-readable kind, message and details.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// HTTP status (the kind's, but for the exceptions [`ErrorKind`] names).
    #[serde(serialize_with = "status_code")]
    #[schema(value_type = u16)]
    pub status: StatusCode,
    /// Machine-readable kind.
    pub kind: ErrorKind,
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
    /// An error of `kind`, answered with the kind's status.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            status: kind.status(),
            kind,
            message: message.into(),
            field: None,
            known: None,
            retry_after: None,
        }
    }

    /// The same error answered with `status` instead of the kind's (see
    /// [`ErrorKind`] for where that happens).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The same error naming the offending `field`.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The same error listing the `known` valid names.
    pub fn with_known(mut self, known: Vec<String>) -> Self {
        self.known = Some(known);
        self
    }

    /// The same error, to be retried after `seconds`.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 413 for a body over `limit` bytes, 408 for one that did not arrive
    /// within the listener's body read timeout, else 400 for a body that
    /// could not be read.
    pub fn body(e: axum::extract::rejection::BytesRejection, limit: usize) -> Self {
        if crate::api::listener::is_body_timeout(&e) {
            return Self::new(ErrorKind::BodyTimeout, e.body_text());
        }
        let status = e.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorKind::TooLarge
        } else {
            ErrorKind::BadBody
        };
        Self::new(kind, format!("{} (limit {limit} bytes)", e.body_text())).with_status(status)
    }

    /// 503: more than `--max-inflight` scoring requests in progress.
    pub fn inflight() -> Self {
        Self::new(ErrorKind::Overloaded, ServeError::Busy.to_string()).retry_after(1)
    }

    /// 404 for an unknown policy name.
    pub fn unknown_policy(name: &str, known: Vec<String>) -> Self {
        Self::new(
            ErrorKind::UnknownPolicy,
            format!("no policy named `{name}`"),
        )
        .with_known(known)
    }

    /// 500 for a fault of the server itself.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, e.to_string())
    }
}

/// The router's fallback: 404 `not_found` in the API's error shape, naming
/// the path, for a path no endpoint serves.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!(
            "no endpoint at {}; the API is described at /openapi.json",
            visible(uri.path())
        ),
    )
}

/// 405 `method_not_allowed` in the API's error shape. The router adds the
/// `Allow` header listing the methods the path takes.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!(
            "{method} is not allowed on {}; see the Allow header",
            visible(uri.path())
        ),
    )
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match &e {
            RequestError::Malformed { path, .. } => {
                let field = path.clone();
                ApiError::new(ErrorKind::MalformedRequest, e.to_string()).with_field(field)
            }
            RequestError::Invalid { field, .. } => {
                let field = field.clone();
                ApiError::new(ErrorKind::InvalidRequest, e.to_string()).with_field(field)
            }
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    /// An admin JSON body's rejection: 415 `unsupported_media_type` without
    /// `Content-Type: application/json`, else `malformed_request` with
    /// axum's status (400 syntax, 422 shape, 413 size).
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection;
        let kind = match e {
            JsonRejection::MissingJsonContentType(_) => ErrorKind::UnsupportedMediaType,
            _ => ErrorKind::MalformedRequest,
        };
        ApiError::new(kind, e.body_text()).with_status(e.status())
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        let message = e.to_string();
        match e {
            ResolveError::Unknown { known, .. } | ResolveError::NoDefault { known } => {
                ApiError::new(ErrorKind::UnknownRoute, message)
                    .with_field("route")
                    .with_known(known)
            }
            ResolveError::Unavailable { .. } => {
                ApiError::new(ErrorKind::PolicyUnavailable, message).retry_after(5)
            }
        }
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::NotReady => {
                ApiError::new(ErrorKind::NotReady, e.to_string()).retry_after(1)
            }
            ServeError::Busy => ApiError::inflight(),
            ServeError::Overloaded { .. } => {
                ApiError::new(ErrorKind::Overloaded, e.to_string()).retry_after(1)
            }
            ServeError::Resolve(e) => e.into(),
            ServeError::Request(e) => e.into(),
            ServeError::Internal(message) => ApiError::new(ErrorKind::Internal, message),
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        let message = e.to_string();
        match e {
            ChangeError::UnknownRoute { known, .. } => {
                ApiError::new(ErrorKind::UnknownRoute, message).with_known(known)
            }
            ChangeError::UnknownPolicy { known, .. } => {
                ApiError::new(ErrorKind::UnknownPolicy, message).with_known(known)
            }
            ChangeError::NotStored { policy, .. } => ApiError::new(
                ErrorKind::UnknownVersion,
                format!("{message}; upload it first (POST /admin/v1/policies/{policy}/versions)"),
            ),
            ChangeError::InvalidField { field, .. } => {
                ApiError::new(ErrorKind::InvalidRequest, message).with_field(field)
            }
            ChangeError::UnknownShadow { .. } => ApiError::new(ErrorKind::UnknownVersion, message),
            ChangeError::InvalidShadow(_) => ApiError::new(ErrorKind::InvalidShadow, message),
            ChangeError::Refused(r) => {
                let status = match r {
                    RolloutError::Percent(_) | RolloutError::Shadow(_) => {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                    _ => StatusCode::CONFLICT,
                };
                ApiError::new(ErrorKind::Refused, message).with_status(status)
            }
            ChangeError::InvalidModule(_) => ApiError::new(ErrorKind::InvalidModule, message),
            ChangeError::Conflict { .. } => ApiError::new(ErrorKind::Conflict, message),
            ChangeError::StoreUnavailable(_) => {
                ApiError::new(ErrorKind::ControlStoreUnavailable, message).retry_after(1)
            }
            ChangeError::Internal(_) => ApiError::new(ErrorKind::Internal, message),
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

/// Every error: `{"error": {status, kind, message, field?, known?}}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "documentation only: read by utoipa, never built")]
pub struct ApiErrorBody {
    /// The error.
    pub error: ApiError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_its_wire_name_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(k.as_str()), Some(k));
            assert!(seen.insert(k.as_str()), "{k} twice");
            assert!(
                k.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{k} is not snake_case"
            );
        }
        assert_eq!(ErrorKind::from_name("nonsense"), None);
    }

    #[test]
    fn client_errors_and_server_errors_map_to_matching_grpc_codes() {
        for &k in ErrorKind::ALL {
            let s = k.status();
            if s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST {
                assert_eq!(k.grpc(), Code::InvalidArgument, "{k}");
            }
            if s == StatusCode::NOT_FOUND {
                assert_eq!(k.grpc(), Code::NotFound, "{k}");
            }
            if s == StatusCode::SERVICE_UNAVAILABLE {
                assert!(
                    matches!(k.grpc(), Code::Unavailable | Code::ResourceExhausted),
                    "{k}"
                );
            }
        }
        assert_eq!(ErrorKind::Internal.grpc(), Code::Internal);
    }

    #[test]
    fn the_body_serializes_the_kind_by_its_wire_name() {
        let e = ApiError::new(ErrorKind::InvalidRequest, "bad").with_field("context.surface");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "invalid_request");
        assert_eq!(v["status"], 422);
        assert_eq!(v["field"], "context.surface");
    }
}
