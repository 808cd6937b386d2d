//! `POST /v1/score`: the hot path's HTTP front end.
//!
//! ```text
//! body ─► admit ─► Scorer::score_json ─────────────────► encode::json ─► 200
//!                  (resolve the route, decode straight      └► Scorer::after
//!                   into its columns, else parse + validate;  (log, shadows, metrics)
//!                   fill, chain, write-back, guardrail)
//! ```
//!
//! The caller always gets scores for a well-formed request: a policy fault
//! becomes a `fallback` answer naming the error kind, never a 5xx. Only an
//! overload is a 503 (with `Retry-After`): too many requests in progress,
//! the policy's queue is full, or no instance freed up within the queue
//! deadline. Every line logged from the parsed request on carries its
//! `request_id` (the `score` span).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::api::content;
use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::request::ScoreRequest;
use crate::response::ScoreResponse;
use crate::serving::{self, Received, Transport, encode};
use crate::telemetry::trace::{self, CallerContext};

/// Handler of `POST /v1/score`. At most `max_inflight` requests are scored at
/// once (admission, after the body is read); more get 503 `overloaded`.
#[utoipa::path(post, path = "/v1/score", operation_id = "score", tag = "score", summary = "Score a request's candidates with its route's policy",
    description = "Always answers a well-formed request: a failing policy gives a 200 with `\"variant\": \"fallback\"`, scores from the next arm of the serving chain and a `fallback` naming the failure.",
    request_body(content = ScoreRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One score per candidate, in request order", body = ScoreResponse),
        (status = 400, description = "Not JSON of the right shape (`malformed_request`; `field` is the JSON path) or an unreadable body (`bad_body`)", body = crate::api::error::ApiErrorBody),
        (status = 404, description = "No such route or policy, or no default route (`unknown_route`); `known` lists the valid names", body = crate::api::error::ApiErrorBody),
        (status = 408, description = "The body did not arrive within the body read timeout (`body_timeout`)", body = crate::api::error::ApiErrorBody),
        (status = 413, description = "Body over `--max-body-bytes` (`too_large`)", body = crate::api::error::ApiErrorBody),
        (status = 415, description = "A body labelled with a `Content-Type` other than JSON, e.g. `text/plain` (`unsupported_media_type`); no `Content-Type` is read as JSON", body = crate::api::error::ApiErrorBody),
        (status = 422, description = "A value the contract refuses (`invalid_request`); `field` names it", body = crate::api::error::ApiErrorBody),
        (status = 500, description = "The response could not be encoded (`internal`)", body = crate::api::error::ApiErrorBody),
        (status = 503, description = "Overloaded (`overloaded`), the route's policy never loaded (`policy_unavailable`), or the initial policy set is still loading (`not_ready`)",
            body = crate::api::error::ApiErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ))]
pub async fn score(
    State(state): State<AppState>,
    Caller(caller): Caller,
    content::JsonContent(labelled): content::Json,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let span = serving::span(Transport::Http);
    if let Some(caller) = &caller {
        trace::adopt_caller(&span, caller);
    }
    if let Err(e) = labelled {
        let _in = span.enter();
        return refuse(&state, e);
    }
    score_in_span(&state, body, started).instrument(span).await
}

/// The caller's trace context from the request's headers: copied only when
/// traces are on (the `HeaderMap` extractor would clone every header of
/// every request).
pub struct Caller(Option<CallerContext>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller(CallerContext::from_headers(&parts.headers)))
    }
}

/// admit → decode → score → encode → after, inside the request's span.
async fn score_in_span(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
    started: Instant,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return refuse(state, ApiError::body(e, state.max_body_bytes)),
    };
    let scorer = &state.scorer;
    let _slot = match tracing::debug_span!("admission").in_scope(|| scorer.admit()) {
        Ok(slot) => slot,
        Err(e) => return refuse(state, e.into()),
    };
    let scored = match scorer.score_json(&body, started).await {
        Ok(s) => s,
        Err(e) => return refuse(state, e.into()),
    };
    let json = match tracing::debug_span!("encode").in_scope(|| encode::json(&scored)) {
        Ok(json) => json,
        Err(e) => return refuse(state, e.into()),
    };
    scorer.after(scored, Received::Json(&body), Transport::Http);
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// Counts and logs a refused request, and renders it.
fn refuse(state: &AppState, e: ApiError) -> Response {
    state.refused(&e, Transport::Http);
    e.into_response()
}
