//! The gRPC API: `oasis.v1.Scoring/Score` (proto/oasis/v1/scoring.proto),
//! the standard health service (`grpc.health.v1`) and server reflection, on
//! their own listener (`oasis serve --grpc-listen`).
//!
//! ```text
//! protobuf ─► request::packed::from_proto ─► score::score_parsed ─► ScoreResponse
//!            (borrows the message's strings    (the HTTP API's validation,
//!             and packed feature rows)          chain, fallbacks, backpressure,
//!                                               metrics, decision log)
//! ```
//!
//! Errors are the HTTP API's [`ApiError`]s as gRPC statuses ([`status`]):
//! the message is the same, and the kind, field and valid names travel in
//! the status details (`google.rpc.ErrorInfo`, `BadRequest`, `RetryInfo`)
//! and in the `oasis-error-kind` / `oasis-error-field` metadata.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use oasis_proto::v1;
use oasis_proto::v1::scoring_server::{Scoring, ScoringServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_types::{ErrorDetails, StatusExt};
use tracing::Instrument;

use crate::metadata::PolicyRef;
use crate::request::{self, ValidRequest};
use crate::response;
use crate::server::api_error::ApiError;
use crate::server::chain::Served;
use crate::server::score::{self, Received, Transport};
use crate::server::state::AppState;

/// The scoring service over the server's shared state.
#[derive(Clone)]
pub struct ScoringService {
    state: AppState,
}

impl ScoringService {
    /// The service over `state`.
    pub fn new(state: AppState) -> Self {
        ScoringService { state }
    }
}

#[tonic::async_trait]
impl Scoring for ScoringService {
    async fn score(
        &self,
        request: Request<v1::ScoreRequest>,
    ) -> Result<Response<v1::ScoreResponse>, Status> {
        // tonic has decoded the message by now; the clock starts here, as
        // the HTTP API's starts once the body is read.
        let started = Instant::now();
        let state = &self.state;
        // The HTTP API's `--max-inflight`, shared by both front ends.
        let Ok(_inflight) = state.inflight.clone().try_acquire_owned() else {
            let e = ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many scoring requests in progress",
                )
            };
            return Err(refuse(state, e));
        };
        let msg = request.into_inner();
        let req = match request::packed::from_proto(&msg) {
            Ok(r) => r,
            Err(e) => return Err(refuse(state, e.into())),
        };
        let span = score::span(&req);
        async {
            score::score_parsed(
                state,
                req,
                Received::Parsed,
                started,
                Transport::Grpc,
                respond,
            )
            .await
            .map(Response::new)
            .map_err(|e| refuse(state, e))
        }
        .instrument(span)
        .await
    }
}

fn refuse(state: &AppState, e: ApiError) -> Status {
    score::refused(state, &e, Transport::Grpc);
    status(&e)
}

/// The gRPC status code of an API error kind.
///
/// | kind | HTTP | gRPC |
/// |---|---|---|
/// | `malformed_request`, `invalid_request` | 400, 422 | `INVALID_ARGUMENT` |
/// | `unknown_route` | 404 | `NOT_FOUND` |
/// | `overloaded` | 503 | `RESOURCE_EXHAUSTED` |
/// | `policy_unavailable`, `not_ready` | 503 | `UNAVAILABLE` |
/// | anything else (`internal`) | 500 | `INTERNAL` |
pub fn code(kind: &str) -> Code {
    match kind {
        "malformed_request" | "invalid_request" | "bad_body" => Code::InvalidArgument,
        "unknown_route" | "unknown_policy" => Code::NotFound,
        "overloaded" | "too_large" => Code::ResourceExhausted,
        "policy_unavailable" | "not_ready" => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// Metadata key of the error kind (`invalid_request`, ...).
pub const KIND_HEADER: &str = "oasis-error-kind";
/// Metadata key of the offending field (`candidates[3].relevance`).
pub const FIELD_HEADER: &str = "oasis-error-field";
/// `google.rpc.ErrorInfo.domain` of Oasis's errors.
pub const ERROR_DOMAIN: &str = "oasis";

/// An API error as a gRPC status: the same message; the kind, field, valid
/// names and HTTP status in a `google.rpc.ErrorInfo` (reason = kind,
/// metadata `field`, `known` comma-separated, `http_status`), the field in a
/// `google.rpc.BadRequest` violation, the retry delay in a
/// `google.rpc.RetryInfo`; the kind and field also as metadata.
pub fn status(e: &ApiError) -> Status {
    let code = code(e.kind);
    let mut meta = HashMap::new();
    meta.insert("http_status".to_string(), e.status.as_u16().to_string());
    if let Some(field) = &e.field {
        meta.insert("field".to_string(), field.clone());
    }
    if let Some(known) = &e.known {
        meta.insert("known".to_string(), known.join(","));
    }
    let mut details = ErrorDetails::with_error_info(e.kind, ERROR_DOMAIN, meta);
    if let (Some(field), Code::InvalidArgument) = (&e.field, code) {
        details.add_bad_request_violation(field.clone(), e.message.clone());
    }
    if let Some(s) = e.retry_after {
        details.set_retry_info(Some(Duration::from_secs(s.into())));
    }
    let mut status = Status::with_error_details(code, e.message.clone(), details);
    let md = status.metadata_mut();
    if let Ok(v) = e.kind.parse() {
        md.insert(KIND_HEADER, v);
    }
    if let Some(v) = e.field.as_deref().and_then(|f| f.parse().ok()) {
        md.insert(FIELD_HEADER, v);
    }
    if let Some(s) = e.retry_after {
        md.insert("retry-after", s.into());
    }
    status
}

fn policy_ref(p: &PolicyRef) -> v1::PolicyRef {
    v1::PolicyRef {
        name: p.name.to_string(),
        version: p.version.to_string(),
        digest: p.digest.to_string(),
        settings_sha256: p.settings_sha256.as_deref().unwrap_or_default().to_string(),
    }
}

/// The response: the JSON response's fields, scores as columns.
fn respond(
    req: &ValidRequest<'_>,
    route: &str,
    served: &Served,
    started: Instant,
) -> Result<v1::ScoreResponse, ApiError> {
    use oasis_contract::ReasonBits;
    let d = &served.decisions;
    let debug = if req.debug {
        response::debug_entries(req, d)
            .into_iter()
            .map(|e| v1::DebugEntry {
                name: e.name.to_string(),
                candidate: e.candidate.unwrap_or("").to_string(),
                value: e.value,
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(v1::ScoreResponse {
        request_id: req.context.request_id.to_string(),
        route: route.to_string(),
        policy: Some(policy_ref(&served.by)),
        variant: served.variant.as_str().to_string(),
        arm: served.arm.as_str().to_string(),
        fallback: served.failures.first().map(|(failed, error)| v1::Fallback {
            failed: Some(policy_ref(failed)),
            error_kind: error.kind().as_str().to_string(),
            error: error.to_string(),
        }),
        scores: Some(v1::Scores {
            ids: req.candidates.iter().map(|c| c.id.to_string()).collect(),
            scores: d.scores.clone(),
            eligible: d.eligible.clone(),
            reasons: d.reasons.iter().map(|r| r.reason_bits().into()).collect(),
            propensity: d.propensity.clone(),
            reason_names: oasis_contract::reason::REASONS
                .iter()
                .map(|(_, n)| n.to_string())
                .collect(),
        }),
        debug,
        timing: Some(v1::Timing {
            server_us: started.elapsed().as_micros() as u64,
            policy_us: served.policy_us,
        }),
    })
}

/// Serves the gRPC API on `listener` until `stop` is cancelled: scoring,
/// health (`NOT_SERVING` until the initial policy set is loaded, then
/// `SERVING`, for the whole server `""` and for `oasis.v1.Scoring`) and
/// reflection (v1 and v1alpha, for grpcurl and other tools).
///
/// # Errors
/// When the reflection service cannot be built or the listener fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let names = ["", oasis_proto::SERVICE_NAME];
    for name in names {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let registry = state.registry.clone();
    let ready_stop = stop.clone();
    tokio::spawn(async move {
        while !registry.is_ready() {
            tokio::select! {
                _ = ready_stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        for name in names {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        ready_stop.cancelled().await;
        for name in names {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    });
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(oasis_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(oasis_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let max = state.max_body_bytes;
    let scoring = ScoringServer::new(ScoringService::new(state))
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    // Small responses must not wait for Nagle's algorithm (tonic sets
    // TCP_NODELAY only on listeners it binds itself).
    use tokio_stream::StreamExt;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok::<_, std::io::Error>(s)
    });
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(scoring)
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await?;
    Ok(())
}
