//! What the HTTP handlers and the gRPC service share.

use crate::api::error::ApiError;
use crate::serving::{Scorer, Transport};

/// The transports' state: the serving handle and the transport's own
/// limits. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Scoring, and the read-only views the status endpoints show.
    pub scorer: Scorer,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
}

impl AppState {
    /// The state of transports over `scorer` accepting bodies of up to
    /// `max_body_bytes`.
    pub fn new(scorer: Scorer, max_body_bytes: usize) -> Self {
        AppState {
            scorer,
            max_body_bytes,
        }
    }

    /// Counts and logs a request refused with `e` on `transport` (both
    /// front ends).
    pub fn refused(&self, e: &ApiError, transport: Transport) {
        self.scorer
            .refused(e.status.as_u16(), e.kind.as_str(), &e.message, transport);
    }
}
