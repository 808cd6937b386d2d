//! Shared server state handed to every handler.

use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};

use crate::server::logging::DecisionLogging;
use crate::server::metrics::Metrics;
use crate::server::registry::Registry;
use crate::server::route_stats::RouteStats;
use crate::server::versions::VersionStore;

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
    /// What serving learns per route (canary windows, shadow divergence).
    pub route_stats: Arc<RouteStats>,
    /// Bounds shadow calls in flight; a shadow that finds none free is shed.
    pub shadows: Arc<Semaphore>,
    /// Where guardrail breaches are sent to be rolled back.
    pub rollbacks: RollbackRequests,
    /// The version store, when serving a policy directory.
    pub store: Option<VersionStore>,
    /// The decision log, when decisions are logged.
    pub decision_log: Option<DecisionLogging>,
    /// The delivery state, when kept.
    pub delivery: Option<crate::delivery::Delivery>,
}

/// A guardrail breach to act on: roll `digest` back on `route`.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackRequest {
    /// The route.
    pub route: String,
    /// The canary version that breached.
    pub digest: String,
    /// The breach.
    pub reason: String,
}

/// The sending side of the rollback queue, and its receiving side until the
/// server's rollout manager takes it.
#[derive(Clone)]
pub struct RollbackRequests {
    tx: mpsc::UnboundedSender<RollbackRequest>,
    rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<RollbackRequest>>>>,
}

impl RollbackRequests {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        RollbackRequests {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }

    /// Queues a rollback. Unbounded, because each canary version trips at
    /// most once per route; never blocks the request path.
    pub fn request(&self, route: &str, digest: &str, reason: String) {
        let _ = self.tx.send(RollbackRequest {
            route: route.to_string(),
            digest: digest.to_string(),
            reason,
        });
    }

    /// The receiving side, once.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<RollbackRequest>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
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
            route_stats: Arc::new(RouteStats::default()),
            shadows: Arc::new(Semaphore::new(DEFAULT_MAX_SHADOW_CALLS)),
            rollbacks: RollbackRequests::new(),
            store: None,
            decision_log: None,
            delivery: None,
        }
    }

    /// The same state, logging decisions to `log`.
    pub fn with_decision_log(mut self, log: DecisionLogging) -> Self {
        self.decision_log = Some(log);
        self
    }

    /// The same state, keeping delivery state in `delivery`.
    pub fn with_delivery(mut self, delivery: crate::delivery::Delivery) -> Self {
        self.delivery = Some(delivery);
        self
    }

    /// The same state, listing stored versions from `store`.
    pub fn with_store(mut self, store: VersionStore) -> Self {
        self.store = Some(store);
        self
    }
}

/// Shadow calls in flight at once, across routes. Shadows are shed first:
/// beyond this, or when fewer than this many instance slots are free, a
/// shadow call is skipped (and counted).
pub const DEFAULT_MAX_SHADOW_CALLS: usize = 4;
