//! Transport: the HTTP API (axum) and the gRPC API (tonic) over the serving
//! and control layers.
//!
//! Each handler is thin: admit → decode → call serving or control → encode
//! → respond. Errors from the layers below are typed
//! ([`ServeError`](crate::serving::ServeError),
//! [`ChangeError`](crate::control::manager::ChangeError), …) and become an
//! [`ApiError`](error::ApiError) of one [`ErrorKind`](error::ErrorKind) here,
//! in [`error`], once.
//!
//! | module     | concern                                                       |
//! |------------|---------------------------------------------------------------|
//! | `score`    | `POST /v1/score`, the hot path                                |
//! | `grpc`     | `oasis.v1.Scoring/Score`, health and reflection               |
//! | `status`   | policies, routes, versions, health, readiness, metrics        |
//! | `events`   | `POST /v1/events` (delivery state and outcomes)               |
//! | `outcomes` | `POST /v1/outcomes` (outcome events for replay)               |
//! | `admin`    | the admin API: uploads, rollout changes, audit (token needed) |
//! | `auth`     | admin bearer tokens, compared in constant time                |
//! | `dashboard`| the operators' page (embedded assets), served with the admin API |
//! | `openapi`  | the OpenAPI 3.1 document (`/openapi.json`)                    |
//! | `error`    | [`ErrorKind`](error::ErrorKind) and the one JSON error shape  |
//! | `content`  | the JSON endpoints' `Content-Type` check (415)                |
//! | `listener` | the accept loop: connection limit, read and idle timeouts     |
//! | `state`    | what handlers share: the scorer and the body limit            |
//!
//! Rules: the transports share the serving layer and import nothing from
//! each other but the refusal counter ([`score::refused`]) and the error
//! mapping; no layer below imports this one.

pub mod admin;
pub mod auth;
pub mod content;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod grpc;
pub mod grpc_service;
pub mod listener;
pub mod openapi;
pub mod outcomes;
pub mod score;
pub mod state;
pub mod status;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

pub use state::AppState;

/// Builds the public router over `state`: the whole public HTTP surface in
/// one place (the admin routes are [`admin::router`]).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/score", post(score::score))
        .route("/v1/outcomes", post(outcomes::record))
        .route("/v1/events", post(events::record))
        .merge(reads())
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        .route("/openapi.json", get(openapi::serve))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The status reads (policies, routes, versions): on the public API, and
/// beside the admin API on its own listener, where the dashboard reads them.
pub fn reads() -> Router<AppState> {
    Router::new()
        .route("/v1/policies", get(status::list))
        .route("/v1/policies/{policy}", get(status::get))
        .route("/v1/policies/{policy}/versions", get(status::versions))
        .route("/v1/routes", get(status::routes))
        .route("/v1/routes/{route}", get(status::route))
        .route("/v1/campaigns", get(status::campaigns))
}
