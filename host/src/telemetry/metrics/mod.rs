//! Prometheus metrics, served at `GET /metrics` in the text format, one
//! group per subsystem.
//!
//! | group                      | what it counts                                    |
//! |----------------------------|---------------------------------------------------|
//! | [`requests`]               | answered and refused requests, latency, instances |
//! | [`policy`]                 | per policy version: calls, errors, fallbacks, decisions |
//! | [`arm`]                    | per route and arm: requests, fallbacks, latency, decisions |
//! | [`shadow`]                 | shadow calls and their divergence                 |
//! | [`control`]                | reloads, rollbacks, active policies               |
//! | [`state`]                  | delivery state, events, decision log, outcomes    |
//!
//! Label values are policy keys, versions, routes and error kinds: bounded
//! sets chosen by operators, never request data. Every group registers its
//! own metrics under the `oasis_` prefix in [`Metrics::new`].

pub mod arm;
pub mod control;
pub mod policy;
pub mod requests;
pub mod shadow;
pub mod state;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use arm::ArmFamilies;
pub use control::ControlMetrics;
pub use policy::{FallbackBy, PolicyFamilies, PolicyMetrics};
pub use requests::{RequestLabels, RequestMetrics};
pub use shadow::ShadowMetrics;
pub use state::StateMetrics;

use crate::telemetry::promotion::PromotionStall;

/// The label set of a series without labels that is created on first use
/// (a plain metric is exported from the start, at 0): `name{} value`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct NoLabels;

impl prometheus_client::encoding::EncodeLabelSet for NoLabels {
    fn encode(
        &self,
        _: &mut prometheus_client::encoding::LabelSetEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

/// A gauge of floats.
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~0.8 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
}

/// One registered metric, as scraped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricInfo {
    /// The name as scraped: `oasis_` prefix, counters with `_total`.
    pub name: String,
    /// `counter`, `gauge`, `histogram`, …
    pub kind: &'static str,
    /// The help text.
    pub help: String,
}

/// The registry as the groups see it: it also keeps the list of what was
/// registered, because the exposition leaves out families with no series
/// yet (and the README's table and the Grafana dashboard are checked
/// against the full list).
pub struct Catalog<'a> {
    registry: &'a mut Registry,
    entries: &'a mut Vec<MetricInfo>,
}

impl Catalog<'_> {
    /// Registers `metric` as `oasis_<name>`.
    pub fn register(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        use prometheus_client::metrics::MetricType;
        let kind = match metric.metric_type() {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Info => "info",
            _ => "unknown",
        };
        let suffix = if kind == "counter" { "_total" } else { "" };
        self.entries.push(MetricInfo {
            name: format!("oasis_{name}{suffix}"),
            kind,
            help: help.to_string(),
        });
        self.registry.register(name, help, metric);
    }
}

/// Every metric of the server, by subsystem.
pub struct Metrics {
    registry: Registry,
    catalogue: Vec<MetricInfo>,
    /// Requests answered and refused.
    pub requests: RequestMetrics,
    /// Per policy version.
    pub policies: PolicyFamilies,
    /// Per route and arm.
    pub arms: ArmFamilies,
    /// Shadows.
    pub shadows: ShadowMetrics,
    /// The control plane.
    pub control: ControlMetrics,
    /// Delivery state, events, decision log, outcomes.
    pub state: StateMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `oasis_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oasis");
        let mut catalogue = Vec::new();
        let mut c = Catalog {
            registry: &mut registry,
            entries: &mut catalogue,
        };
        let (requests, policies, arms, shadows, control, state) = (
            RequestMetrics::register(&mut c),
            PolicyFamilies::register(&mut c),
            ArmFamilies::register(&mut c),
            ShadowMetrics::register(&mut c),
            ControlMetrics::register(&mut c),
            StateMetrics::register(&mut c),
        );
        Metrics {
            requests,
            policies,
            arms,
            shadows,
            control,
            state,
            registry,
            catalogue,
        }
    }

    /// Sets when a policy version counts as stalled (before any version is
    /// activated).
    pub fn with_promotion_stall(mut self, rule: PromotionStall) -> Self {
        self.policies.promotion_stall = rule;
        self
    }

    /// Every registered metric, in registration order (also those with no
    /// series yet, which the exposition leaves out).
    pub fn catalogue(&self) -> &[MetricInfo] {
        &self.catalogue
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
