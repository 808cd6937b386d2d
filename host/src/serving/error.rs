//! Why a request was not scored.

use crate::control::registry::ResolveError;
use crate::request::RequestError;

/// Why a request was not scored. A policy's fault is not here: the chain
/// turns it into a fallback answer.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The initial policy set is still loading.
    #[error("the initial policy set is still loading")]
    NotReady,
    /// Too many requests in progress (`--max-inflight`).
    #[error("too many scoring requests in progress")]
    Busy,
    /// The route's primary policy has no free instance within its queue
    /// deadline, or its queue is full.
    #[error("policy `{policy}` is at its concurrency limit; retry shortly")]
    Overloaded {
        /// The policy key.
        policy: String,
    },
    /// No such route, or its policy never loaded.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The request does not meet the contract.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A fault of the host itself (a panicked task).
    #[error("{0}")]
    Internal(String),
}
