//! How a request came in: its transport, its body as received, its span.

use crate::request::ScoreRequest;
use crate::sandbox::visible;

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
    Json(&'b bytes::Bytes),
    /// Not JSON (gRPC): encoded as JSON from the parsed request, and only
    /// when the request is logged.
    Parsed,
}

/// The `score` span of one request: every line logged while scoring it
/// carries its request id, route, policy and version. The transport enters
/// it around `score`, the encoding and `after`.
pub fn span(req: &ScoreRequest<'_>) -> tracing::Span {
    tracing::info_span!(
        "score",
        request_id = %visible(&req.context.request_id),
        route = tracing::field::Empty,
        policy = tracing::field::Empty,
        version = tracing::field::Empty,
    )
}
