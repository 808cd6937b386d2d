//! The gRPC API: `oasis.v1.Scoring/Score` (proto/oasis/v1/scoring.proto),
//! the standard health service (`grpc.health.v1`) and server reflection, on
//! their own listener (`oasis serve --grpc-listen`).
//!
//! ```text
//! bytes ─► admit ─► Scorer::score_proto ──────────────────► encode::proto
//! (grpc_service)    (request::proto_view: read in place;      └► Scorer::after
//!                    packed::direct_view: checked on the
//!                    columns, strings borrowed; else prost,
//!                    from_proto + validate; then the same
//!                    serving as HTTP's)
//! ```
//!
//! Errors are the HTTP API's [`ApiError`]s as gRPC statuses ([`status`]):
//! the message is the same, and the kind, field and valid names travel in
//! the status details (`google.rpc.ErrorInfo`, `BadRequest`, `RetryInfo`)
//! and in the `oasis-error-kind` / `oasis-error-field` metadata.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oasis_proto::v1;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_types::{ErrorDetails, StatusExt};
use tracing::Instrument;

use crate::api::error::ApiError;
use crate::api::grpc_service::{Score, ScoringServer};
use crate::api::state::AppState;
use crate::serving::{self, Received, Transport, encode};
use crate::telemetry::trace::{self, HeaderCarrier};

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

impl Score for ScoringService {
    async fn score(&self, request: Request<Bytes>) -> Result<Response<v1::ScoreResponse>, Status> {
        // tonic has read the message's bytes; the clock starts here, as the
        // HTTP API's starts once the body is read (decoding is timed).
        let started = Instant::now();
        let span = serving::span(Transport::Grpc);
        trace::adopt_caller(&span, &HeaderCarrier(request.metadata().as_ref()));
        score_in_span(&self.state, request, started)
            .instrument(span)
            .await
    }
}

/// admit → decode → score → encode → after, inside the request's span.
async fn score_in_span(
    state: &AppState,
    request: Request<Bytes>,
    started: Instant,
) -> Result<Response<v1::ScoreResponse>, Status> {
    let scorer = &state.scorer;
    // The HTTP API's `--max-inflight`, shared by both front ends.
    let _slot = tracing::debug_span!("admission")
        .in_scope(|| scorer.admit())
        .map_err(|e| refuse(state, e.into()))?;
    let bytes = request.into_inner();
    let msg = crate::request::proto_view::ProtoMessage::new(&bytes);
    let scored = scorer
        .score_proto(&msg, started)
        .await
        .map_err(|e| refuse(state, e.into()))?;
    let resp = tracing::debug_span!("encode").in_scope(|| encode::proto(&scored));
    scorer.after(scored, Received::Parsed, Transport::Grpc);
    Ok(Response::new(resp))
}

fn refuse(state: &AppState, e: ApiError) -> Status {
    state.refused(&e, Transport::Grpc);
    status(&e)
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
    let code = e.kind.grpc();
    let mut meta = HashMap::new();
    meta.insert("http_status".to_string(), e.status.as_u16().to_string());
    if let Some(field) = &e.field {
        meta.insert("field".to_string(), field.clone());
    }
    if let Some(known) = &e.known {
        meta.insert("known".to_string(), known.join(","));
    }
    let mut details = ErrorDetails::with_error_info(e.kind.as_str(), ERROR_DOMAIN, meta);
    if let (Some(field), Code::InvalidArgument) = (&e.field, code) {
        details.add_bad_request_violation(field.clone(), e.message.clone());
    }
    if let Some(s) = e.retry_after {
        details.set_retry_info(Some(Duration::from_secs(s.into())));
    }
    let mut status = Status::with_error_details(code, e.message.clone(), details);
    let md = status.metadata_mut();
    if let Ok(v) = e.kind.as_str().parse() {
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
    let registry = state.scorer.registry().clone();
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
    let scoring = ScoringServer::new(ScoringService::new(state)).max_decoding_message_size(max);
    // Responses must not wait for Nagle's algorithm (tonic sets
    // TCP_NODELAY only on listeners it binds itself): the HTTP listener's
    // setting, the same way.
    use tokio_stream::StreamExt;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener)
        .map(|s| s.map(crate::api::listener::no_delay));
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(scoring)
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await?;
    Ok(())
}
