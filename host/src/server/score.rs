//! `POST /v1/score`: the hot path.
//!
//! ```text
//! body ─► parse (borrowing) ─► resolve route ─► validate ─► take a queue slot
//!      ─► wait for an instance (bounded) ─► columnar batch + policy call on a
//!         blocking thread ─► on failure: fallback policy, else host
//!         passthrough ─► response
//! ```
//!
//! The caller always gets scores for a well-formed request: a policy fault
//! becomes a `fallback` answer naming the error kind, never a 5xx. Only an
//! overload is a 503 (with `Retry-After`): the policy's queue is full, or no
//! instance freed up within the queue deadline. Nothing is compiled here, and
//! no lock is held while guest code runs: the registry snapshot is an `Arc`,
//! the permits semaphore slots. Every line logged from the parsed request on
//! carries its `request_id` (the `score` span).

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::bindings::WitDecisions;
use crate::columnar;
use crate::error::CallError;
use crate::policy::CallOutcome;
use crate::request::{self, ScoreRequest};
use crate::response::{self, FallbackInfo, PolicyRef, ScoreResponse, Timing, Variant};
use crate::server::api_error::ApiError;
use crate::server::metrics::RequestLabels;
use crate::server::registry::{ActivePolicy, Snapshot};
use crate::server::state::AppState;

/// Admission: at most `max_inflight` scoring requests in progress. Runs
/// before the body is read, so a flood of large bodies is refused (503)
/// instead of buffered.
pub async fn admit(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match state.inflight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => {
            let e = ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many scoring requests in progress",
                )
            };
            refuse(&state, e)
        }
    }
}

/// Handler of `POST /v1/score`.
pub async fn score(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let status = e.status();
            let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "bad_body"
            };
            let msg = format!("{} (limit {} bytes)", e.body_text(), state.max_body_bytes);
            return refuse(&state, ApiError::new(status, kind, msg));
        }
    };
    let req = match request::parse(&body) {
        Ok(r) => r,
        Err(e) => return refuse(&state, e.into()),
    };
    let span = tracing::info_span!(
        "score",
        request_id = %req.context.request_id,
        route = tracing::field::Empty,
        policy = tracing::field::Empty,
        version = tracing::field::Empty,
    );
    async {
        match score_parsed(&state, &req, started).await {
            Ok(resp) => resp,
            Err(e) => refuse(&state, e),
        }
    }
    .instrument(span)
    .await
}

/// Counts and logs a refused request, and renders it.
fn refuse(state: &AppState, e: ApiError) -> Response {
    state.metrics.reject(e.status.as_u16(), e.reason());
    if e.status.is_server_error() {
        tracing::warn!(status = e.status.as_u16(), kind = e.kind, message = %e.message, "request refused");
    } else {
        tracing::debug!(status = e.status.as_u16(), kind = e.kind, message = %e.message, "request refused");
    }
    e.into_response()
}

async fn score_parsed(
    state: &AppState,
    req: &ScoreRequest<'_>,
    started: Instant,
) -> Result<Response, ApiError> {
    if !state.registry.is_ready() {
        return Err(ApiError::not_ready());
    }
    let snapshot = state.registry.snapshot();
    let (route, active) = snapshot.resolve(req.route.as_deref())?;
    let span = tracing::Span::current();
    span.record("route", route.as_str());
    span.record("policy", active.key.as_str());
    span.record("version", active.identity.version.as_str());
    req.validate(active.policy.limits().max_candidates)?;

    let (decisions, policy_us, served_by, fallback) = match call(state, &active, req).await? {
        Ok(o) => (o.decisions, o.usage.wall_us, active.identity.clone(), None),
        Err(error) => {
            active.metrics.failed(error.kind());
            tracing::warn!(kind = error.kind().as_str(), %error, "policy failed; serving the fallback");
            let (d, us, by) = fallback(state, &snapshot, &active, req).await;
            (d, us, by, Some(error))
        }
    };
    let variant = if fallback.is_some() {
        Variant::Fallback
    } else {
        Variant::Stable
    };
    let resp = ScoreResponse {
        request_id: &req.context.request_id,
        route: Some(&route),
        policy: &served_by,
        variant,
        fallback: fallback.as_ref().map(|error| FallbackInfo {
            failed: &active.identity,
            error_kind: error.kind(),
            error: error.to_string(),
        }),
        scores: response::scored(req, &decisions),
        debug: req.debug.then(|| response::debug_entries(req, &decisions)),
        timing: Timing {
            server_us: started.elapsed().as_micros() as u64,
            policy_us,
        },
    };
    // ~110 bytes per candidate in the JSON.
    let mut body = Vec::with_capacity(256 + 128 * req.candidates.len());
    serde_json::to_writer(&mut body, &resp).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding the response: {e}"),
        )
    })?;
    let m = &state.metrics;
    let variant_label = if variant == Variant::Stable {
        "stable"
    } else {
        "fallback"
    };
    m.requests
        .get_or_create(&RequestLabels {
            route,
            variant: variant_label,
        })
        .inc();
    m.request_latency.observe(started.elapsed().as_secs_f64());
    tracing::debug!(candidates = req.candidates.len(), policy_us, "scored");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Runs `active` on `req` once an instance is free: the columnar batch is
/// built and the policy called on a blocking thread.
///
/// # Errors
/// [`ApiError::overloaded`] when the policy's queue is full or no instance
/// frees up within the queue deadline.
async fn call(
    state: &AppState,
    active: &Arc<ActivePolicy>,
    req: &ScoreRequest<'_>,
) -> Result<Result<CallOutcome, CallError>, ApiError> {
    let permits = acquire(state, active).await?;
    let batch = columnar::to_wit(req, &active.columns, &active.policy.info().context_features);
    let policy = active.clone();
    let span = tracing::Span::current();
    let in_use = state.metrics.instances_in_use.clone();
    tokio::task::spawn_blocking(move || {
        let _permits = permits;
        let _in_use = GaugeGuard::new(&in_use);
        let started = Instant::now();
        let result = span.in_scope(|| policy.policy.call(&batch));
        policy
            .metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        result
    })
    .await
    .map_err(|e| {
        // Only a panic in host code ends up here; guest faults are values.
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("policy task failed: {e}"),
        )
    })
}

/// Increments a gauge for as long as it lives. Decrementing in `Drop` keeps
/// the gauge right when a request future is dropped mid-way (client gone).
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(g: &Gauge) -> Self {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A queue slot, the policy's instance permit and a global instance permit.
type Permits = (
    OwnedSemaphorePermit,
    OwnedSemaphorePermit,
    OwnedSemaphorePermit,
);

/// Takes a queue slot (refusing at once when the queue is full), then waits
/// up to the policy's queue deadline for a policy slot and a global slot.
async fn acquire(state: &AppState, active: &ActivePolicy) -> Result<Permits, ApiError> {
    let overloaded = || ApiError::overloaded(&active.key);
    let slot = active
        .queue
        .clone()
        .try_acquire_owned()
        .map_err(|_| overloaded())?;
    let _waiting = GaugeGuard::new(&active.metrics.queue_depth);
    let wait = async {
        let own = active.permits.clone().acquire_owned().await;
        let global = state.instances.clone().acquire_owned().await;
        (own, global)
    };
    match tokio::time::timeout(active.manifest.concurrency.queue_timeout, wait).await {
        Ok((Ok(own), Ok(global))) => Ok((slot, own, global)),
        _ => Err(overloaded()),
    }
}

/// Scores with the policy's fallback, else (or if that fails too, is
/// overloaded, or refuses this many candidates) with the host's relevance
/// passthrough. Never fails.
async fn fallback(
    state: &AppState,
    snapshot: &Snapshot,
    failed: &ActivePolicy,
    req: &ScoreRequest<'_>,
) -> (WitDecisions, u64, Arc<PolicyRef>) {
    let fb = failed
        .manifest
        .fallback
        .as_deref()
        .and_then(|k| snapshot.active(k));
    if let Some(fb) = fb.filter(|fb| req.candidates.len() <= fb.policy.limits().max_candidates) {
        match call(state, &fb, req).await {
            Ok(Ok(o)) => return (o.decisions, o.usage.wall_us, fb.identity.clone()),
            Ok(Err(e)) => {
                fb.metrics.failed(e.kind());
                tracing::error!(fallback = %fb.key, kind = e.kind().as_str(), error = %e, "fallback policy failed too; serving relevance passthrough");
            }
            Err(e) => {
                tracing::warn!(fallback = %fb.key, error = %e.message, "fallback policy overloaded; serving relevance passthrough")
            }
        }
    }
    (response::passthrough(req), 0, PASSTHROUGH.clone())
}

/// Identity of the host's built-in relevance passthrough.
pub static PASSTHROUGH: LazyLock<Arc<PolicyRef>> = LazyLock::new(|| {
    Arc::new(PolicyRef {
        name: "host-passthrough".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        digest: "builtin".into(),
    })
});
