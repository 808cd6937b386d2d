//! Shared server state handed to every handler.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::server::metrics::Metrics;
use crate::server::registry::Registry;

/// What handlers share. Cheap to clone (all `Arc`s).
#[derive(Clone)]
pub struct AppState {
    /// Loaded policies and routes.
    pub registry: Arc<Registry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Instances across all policies, sized below the pooling allocator's
    /// capacity so that a burst queues instead of failing to instantiate.
    pub instances: Arc<Semaphore>,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Bounds scoring requests in progress (bodies in memory included).
    pub inflight: Arc<Semaphore>,
}

impl AppState {
    /// State over `registry` for a runtime of `max_instances` instances.
    /// Two pool slots are kept for loads and smoke tests, so requests use
    /// at most `max_instances - 2` at once.
    pub fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        max_instances: u32,
        max_body_bytes: usize,
        max_inflight: usize,
    ) -> Self {
        AppState {
            registry,
            metrics,
            instances: Arc::new(Semaphore::new(
                max_instances.saturating_sub(2).max(1) as usize
            )),
            max_body_bytes,
            inflight: Arc::new(Semaphore::new(max_inflight.max(1))),
        }
    }
}
