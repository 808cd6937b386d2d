//! Shared server state handed to every handler.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::runtime::Runtime;
use crate::server::metrics::Metrics;
use crate::server::registry::Registry;

/// What handlers share. Cheap to clone (all `Arc`s).
#[derive(Clone)]
pub struct AppState {
    /// Loaded policies and routes.
    pub registry: Arc<Registry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The wasm runtime.
    pub runtime: Runtime,
    /// Instances across all policies, sized below the pooling allocator's
    /// capacity so that a burst queues instead of failing to instantiate.
    pub instances: Arc<Semaphore>,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Bounds scoring requests in progress (bodies in memory included).
    pub inflight: Arc<Semaphore>,
}
