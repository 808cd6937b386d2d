//! `POST /v1/score`: the hot path.
//!
//! ```text
//! body ─► parse (borrowing) ─► resolve route ─► validate ─► columnar batch
//!      ─► wait for an instance (bounded) ─► policy call on a blocking thread
//!      ─► on failure: fallback policy, else host passthrough ─► response
//! ```
//!
//! The caller always gets scores for a well-formed request: a policy fault
//! becomes a `fallback` answer naming the error kind, never a 5xx. Only an
//! overload (no instance within the queue deadline) is a 503, with
//! `Retry-After`. Nothing is compiled here, and no lock is held while guest
//! code runs: the registry snapshot is an `Arc`, the permit a semaphore slot.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::bindings::{WitDecisions, WitRequest};
use crate::columnar;
use crate::error::CallError;
use crate::policy::CallOutcome;
use crate::request::{self, ScoreRequest};
use crate::response::{self, FallbackInfo, PolicyRef, ScoreResponse, Timing, Variant};
use crate::server::api_error::ApiError;
use crate::server::metrics::RequestLabels;
use crate::server::registry::ActivePolicy;
use crate::server::state::AppState;

/// Handler of `POST /v1/score`.
pub async fn score(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    match score_inner(&state, body, started).await {
        Ok(resp) => resp,
        Err(e) => {
            state.metrics.reject(e.status.as_u16(), e.reason());
            if e.status.is_server_error() {
                tracing::warn!(status = e.status.as_u16(), kind = e.kind, message = %e.message, "request refused");
            } else {
                tracing::debug!(status = e.status.as_u16(), kind = e.kind, message = %e.message, "request refused");
            }
            e.into_response()
        }
    }
}

async fn score_inner(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
    started: Instant,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        let status = e.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_body"
        };
        ApiError::new(
            status,
            kind,
            format!("{} (limit {} bytes)", e.body_text(), state.max_body_bytes),
        )
    })?;
    let req = request::parse(&body)?;
    let snapshot = state.registry.snapshot();
    let (route, active) = snapshot.resolve(req.route.as_deref())?;
    req.validate(active.policy.limits().max_candidates)?;

    let span = tracing::info_span!(
        "score",
        request_id = %req.context.request_id,
        route = %route,
        policy = %active.key,
        version = %active.policy.info().version,
    );
    async {
        let batch = columnar::to_wit(&req, &active.columns, &active.policy.info().context_features);
        let primary = call(state, &active, batch).await?;
        let (decisions, policy_us, served_by, fallback) = match primary {
            Ok(o) => (o.decisions, o.usage.wall_us, PolicyRef::from(active.policy.info()), None),
            Err(error) => {
                active.metrics.failed(error.kind());
                tracing::warn!(kind = error.kind().as_str(), %error, "policy failed; serving the fallback");
                let (d, us, by) = fallback(state, &snapshot, &active, &req).await;
                let info = FallbackInfo {
                    failed: PolicyRef::from(active.policy.info()),
                    error_kind: error.kind(),
                    error: error.to_string(),
                };
                (d, us, by, Some(info))
            }
        };
        let variant = if fallback.is_some() { Variant::Fallback } else { Variant::Stable };
        let resp = ScoreResponse {
            request_id: &req.context.request_id,
            route: Some(&route),
            policy: served_by,
            variant,
            fallback,
            scores: response::scored(&req, &decisions),
            debug: req.debug.then(|| response::debug_entries(&req, &decisions)),
            timing: Timing { server_us: started.elapsed().as_micros() as u64, policy_us },
        };
        let body = serde_json::to_vec(&resp).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("encoding the response: {e}"))
        })?;
        let m = &state.metrics;
        m.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                variant: if variant == Variant::Stable { "stable" } else { "fallback" },
            })
            .inc();
        m.request_latency.observe(started.elapsed().as_secs_f64());
        tracing::debug!(candidates = req.candidates.len(), policy_us, "scored");
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    }
    .instrument(span)
    .await
}

/// Runs `active` on `batch` on a blocking thread once an instance is free.
///
/// # Errors
/// [`ApiError::overloaded`] when no instance frees up within the queue deadline.
async fn call(
    state: &AppState,
    active: &Arc<ActivePolicy>,
    batch: WitRequest,
) -> Result<Result<CallOutcome, CallError>, ApiError> {
    let permits = acquire(state, active).await?;
    let policy = active.clone();
    let span = tracing::Span::current();
    state.metrics.instances_in_use.inc();
    let joined = tokio::task::spawn_blocking(move || {
        let _permits = permits;
        span.in_scope(|| policy.policy.call(&batch))
    })
    .await;
    state.metrics.instances_in_use.dec();
    let result = joined.map_err(|e| {
        // Only a panic in host code ends up here; guest faults are values.
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("policy task failed: {e}"),
        )
    })?;
    if let Ok(o) = &result {
        active.metrics.latency.observe(o.usage.wall_us as f64 / 1e6);
    }
    Ok(result)
}

/// Waits up to the policy's queue deadline for a slot of the policy and one
/// of the global instance pool.
async fn acquire(
    state: &AppState,
    active: &ActivePolicy,
) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), ApiError> {
    let overloaded = || ApiError::overloaded(&active.key);
    let queue = &active.metrics.queue_depth;
    let wait = async {
        let own = active.permits.clone().acquire_owned().await;
        let global = state.instances.clone().acquire_owned().await;
        (own, global)
    };
    queue.inc();
    let got = tokio::time::timeout(active.manifest.concurrency.queue_timeout, wait).await;
    queue.dec();
    match got {
        Ok((Ok(own), Ok(global))) => Ok((own, global)),
        _ => Err(overloaded()),
    }
}

/// Scores with the policy's fallback, else (or if that fails too) with the
/// host's relevance passthrough. Never fails.
async fn fallback(
    state: &AppState,
    snapshot: &crate::server::registry::Snapshot,
    failed: &ActivePolicy,
    req: &ScoreRequest<'_>,
) -> (WitDecisions, u64, PolicyRef) {
    if let Some(fb) = failed
        .manifest
        .fallback
        .as_deref()
        .and_then(|k| snapshot.active(k))
    {
        let batch = columnar::to_wit(req, &fb.columns, &fb.policy.info().context_features);
        match call(state, &fb, batch).await {
            Ok(Ok(o)) => {
                return (
                    o.decisions,
                    o.usage.wall_us,
                    PolicyRef::from(fb.policy.info()),
                );
            }
            Ok(Err(e)) => {
                fb.metrics.failed(e.kind());
                tracing::error!(fallback = %fb.key, kind = e.kind().as_str(), error = %e, "fallback policy failed too; serving relevance passthrough");
            }
            Err(e) => {
                tracing::warn!(fallback = %fb.key, error = %e.message, "fallback policy overloaded; serving relevance passthrough")
            }
        }
    }
    (response::passthrough(req), 0, passthrough_ref())
}

/// Identity of the host's built-in relevance passthrough.
pub fn passthrough_ref() -> PolicyRef {
    PolicyRef {
        name: "host-passthrough".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        digest: "builtin".into(),
    }
}
