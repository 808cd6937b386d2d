//! `POST /v1/score`: the hot path.
//!
//! ```text
//! body ─► parse (borrowing) ─► resolve route ─► validate ─► serving chain
//!      (per arm: queue slot, instance, columnar batch + policy call on a
//!      blocking thread; on failure the next arm: fallback policy, then host
//!      passthrough; see `chain`) ─► response
//! ```
//!
//! The caller always gets scores for a well-formed request: a policy fault
//! becomes a `fallback` answer naming the error kind, never a 5xx. Only an
//! overload is a 503 (with `Retry-After`): the policy's queue is full, or no
//! instance freed up within the queue deadline. Nothing is compiled here, and
//! no lock is held while guest code runs: the registry snapshot is an `Arc`,
//! the permits semaphore slots. Every line logged from the parsed request on
//! carries its `request_id` (the `score` span).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::request::{self, ScoreRequest, ValidRequest, Validate};
use crate::response::{self, FallbackInfo, ScoreResponse, Timing};
use crate::sandbox::visible;
use crate::server::api_error::ApiError;
use crate::server::chain::{self, Served};
use crate::server::manifest::Guardrails;
use crate::server::metrics::RequestLabels;
use crate::server::registry::{ArmKind, RoutePlan};
use crate::server::route_stats::lock;
use crate::server::shadow;
use crate::server::state::AppState;

/// The front end a request came through (the `transport` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `POST /v1/score`, JSON.
    Http,
    /// `oasis.v1.Scoring/Score`, protobuf.
    Grpc,
}

impl Transport {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
        }
    }
}

/// The request as received, for the decision log (which keeps requests as
/// JSON, so that `oasis replay` reads one format).
#[derive(Debug, Clone, Copy)]
pub enum Received<'b> {
    /// The JSON body, logged as sent.
    Json(&'b Bytes),
    /// Not JSON (gRPC): encoded as JSON from the parsed request, and only
    /// when the request is logged.
    Parsed,
}

/// The `score` span of one request: every line logged while scoring it
/// carries its request id, route, policy and version.
pub fn span(req: &ScoreRequest<'_>) -> tracing::Span {
    tracing::info_span!(
        "score",
        request_id = %visible(&req.context.request_id),
        route = tracing::field::Empty,
        policy = tracing::field::Empty,
        version = tracing::field::Empty,
    )
}

/// Handler of `POST /v1/score`. At most `max_inflight` requests are scored at
/// once (admission, after the body is read); more get 503 `overloaded`.
#[utoipa::path(post, path = "/v1/score", tag = "score", summary = "Score a request's candidates with its route's policy",
    description = "Always answers a well-formed request: a failing policy gives a 200 with `\"variant\": \"fallback\"`, scores from the next arm of the serving chain and a `fallback` naming the failure.",
    request_body(content = ScoreRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One score per candidate, in request order", body = ScoreResponse),
        (status = 400, description = "Not JSON of the right shape (`malformed_request`; `field` is the JSON path) or an unreadable body (`bad_body`)", body = crate::server::openapi::ApiErrorBody),
        (status = 404, description = "No such route or policy, or no default route (`unknown_route`); `known` lists the valid names", body = crate::server::openapi::ApiErrorBody),
        (status = 408, description = "The body did not arrive within the body read timeout (`body_timeout`)", body = crate::server::openapi::ApiErrorBody),
        (status = 413, description = "Body over `--max-body-bytes` (`too_large`)", body = crate::server::openapi::ApiErrorBody),
        (status = 422, description = "A value the contract refuses (`invalid_request`); `field` names it", body = crate::server::openapi::ApiErrorBody),
        (status = 500, description = "The response could not be encoded (`internal`)", body = crate::server::openapi::ApiErrorBody),
        (status = 503, description = "Overloaded (`overloaded`), the route's policy never loaded (`policy_unavailable`), or the initial policy set is still loading (`not_ready`)",
            body = crate::server::openapi::ApiErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ))]
pub async fn score(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(e) => return refuse(&state, ApiError::body(e, state.max_body_bytes)),
    };
    // Admission comes after the body is read (within the listener's body
    // timeout), so a client that is slow to send never holds a permit.
    let Ok(_permit) = state.inflight.clone().try_acquire_owned() else {
        return refuse(&state, ApiError::inflight());
    };
    let req = match request::parse(&body) {
        Ok(r) => r,
        Err(e) => return refuse(&state, e.into()),
    };
    let span = span(&req);
    async {
        let scored = score_parsed(
            &state,
            req,
            Received::Json(&body),
            started,
            Transport::Http,
            respond,
        )
        .await;
        match scored {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => refuse(&state, e),
        }
    }
    .instrument(span)
    .await
}

/// Counts and logs a refused request, and renders it.
fn refuse(state: &AppState, e: ApiError) -> Response {
    refused(state, &e, Transport::Http);
    e.into_response()
}

/// Counts and logs a refused request.
pub fn refused(state: &AppState, e: &ApiError, transport: Transport) {
    state
        .metrics
        .reject(e.status.as_u16(), e.reason(), transport.as_str());
    if e.status.is_server_error() {
        tracing::warn!(status = e.status.as_u16(), kind = e.kind, transport = transport.as_str(), message = %visible(&e.message), "request refused");
    } else {
        tracing::debug!(status = e.status.as_u16(), kind = e.kind, transport = transport.as_str(), message = %visible(&e.message), "request refused");
    }
}

/// Resolves the route, validates against its policy's limits, walks the
/// route's serving chain, and has `respond` encode the answer; then logs the
/// decision, runs the shadows and counts the request. Both front ends (JSON
/// and gRPC) go through here, so they share validation, the chain, the
/// fallbacks, backpressure, metrics and decision logging.
pub async fn score_parsed<'a, R>(
    state: &AppState,
    req: ScoreRequest<'a>,
    received: Received<'_>,
    started: Instant,
    transport: Transport,
    respond: impl FnOnce(&ValidRequest<'a>, &str, &Served, Instant) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    if !state.registry.is_ready() {
        return Err(ApiError::not_ready());
    }
    let snapshot = state.registry.snapshot();
    let (route, plan) = snapshot.resolve(req.route.as_deref())?;
    // The route's contract is its stable version's (or, killed, its baseline's).
    let Some(main) = plan.stable.as_ref().or(plan.baseline.as_ref()) else {
        return Err(ApiError::from(
            crate::server::registry::ResolveError::Unavailable {
                route,
                policy: plan.policy.clone(),
                error: None,
            },
        ));
    };
    let span = tracing::Span::current();
    span.record("route", route.as_str());
    span.record("policy", main.key());
    span.record("version", main.policy.identity().version.as_str());
    let mut req = req.validate(main.policy.limits().max_candidates)?;
    // Delivery state the request did not send (request values win).
    let fill = match &state.delivery {
        Some(d) => d.fill(&mut req).await,
        None => None,
    };
    let arms = plan.arms(&req.context.listener_id);
    let served = chain::serve(state, arms, plan.primary(), &req).await?;
    // Only the served arm writes state (shadows and fallbacks never do).
    if let Some(d) = &state.delivery
        && served.arm != ArmKind::Passthrough
    {
        d.served(&req, &served.decisions.campaign_updates);
    }
    if let (Some((ArmKind::Canary, ok, us)), Some(g)) = (served.first, &plan.guardrails) {
        guard_canary(state, &plan, ok, us, g);
    }
    let body = respond(&req, &route, &served, started)?;
    let logged = state
        .decision_log
        .as_ref()
        .filter(|l| l.sampled(&plan, &req.context.request_id));
    let raw = logged.map(|_| match received {
        Received::Json(body) => body.clone(),
        Received::Parsed => Bytes::from(serde_json::to_vec(&*req).unwrap_or_default()),
    });
    if let (Some(log), Some(raw)) = (logged, &raw) {
        let server_us = started.elapsed().as_micros() as u64;
        log.served(
            &route,
            &req.context.request_id,
            raw,
            fill.as_ref(),
            &served,
            server_us,
        );
    }
    shadow::spawn(state, &plan, &req, &served, raw.as_ref(), fill.as_ref());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            variant: served.variant.as_str(),
            transport: transport.as_str(),
        })
        .inc();
    state
        .metrics
        .request_latency
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(
        candidates = req.candidates.len(),
        policy_us = served.policy_us,
        "scored"
    );
    Ok(body)
}

/// The response body: the served decisions joined back to candidate ids.
fn respond(
    req: &ValidRequest<'_>,
    route: &str,
    served: &Served,
    started: Instant,
) -> Result<Vec<u8>, ApiError> {
    let d = &served.decisions;
    let resp = ScoreResponse {
        request_id: &req.context.request_id,
        route: Some(route),
        policy: &served.by,
        variant: served.variant,
        arm: Some(served.arm.as_str()),
        fallback: served.failures.first().map(|(failed, error)| FallbackInfo {
            failed,
            error_kind: error.kind(),
            error: error.to_string(),
        }),
        scores: response::scored(req, d),
        debug: req.debug.then(|| response::debug_entries(req, d)),
        timing: Timing {
            server_us: started.elapsed().as_micros() as u64,
            policy_us: served.policy_us,
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
    Ok(body)
}

/// Feeds one canary call to the route's guardrails; on a breach, asks the
/// rollout manager (off the request path) to roll the canary back.
fn guard_canary(state: &AppState, plan: &RoutePlan, ok: bool, us: u64, g: &Guardrails) {
    let Some((canary, _)) = &plan.canary else {
        return;
    };
    let digest = &canary.policy.identity().digest;
    let runtime = state.route_stats.get(&plan.route);
    let breach = lock(&runtime.canary).record(digest, ok, us, g);
    if let Some(reason) = breach {
        tracing::error!(route = %plan.route, %digest, %reason, "canary guardrail breached; rolling it back");
        state.rollbacks.request(&plan.route, digest, reason);
    }
}
