//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! Label values are policy keys, versions, routes and error kinds: bounded
//! sets chosen by operators, never request data. Handles for a policy
//! version are resolved once at activation ([`PolicyMetrics`]), so the
//! request path does not build label sets for them.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::CallErrorKind;

/// Labels of a policy version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Policy key.
    pub policy: String,
    /// Policy semver.
    pub version: String,
}

/// Labels of a policy call error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Policy key.
    pub policy: String,
    /// Policy semver.
    pub version: String,
    /// Error kind.
    pub kind: KindLabel,
}

/// [`CallErrorKind`] as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(
    non_camel_case_types,
    missing_docs,
    reason = "label values are snake_case names"
)]
pub enum KindLabel {
    timeout,
    memory_limit,
    trap,
    invalid_output,
    policy_error,
    instantiate,
}

impl From<CallErrorKind> for KindLabel {
    fn from(k: CallErrorKind) -> Self {
        match k {
            CallErrorKind::Timeout => KindLabel::timeout,
            CallErrorKind::MemoryLimit => KindLabel::memory_limit,
            CallErrorKind::Trap => KindLabel::trap,
            CallErrorKind::InvalidOutput => KindLabel::invalid_output,
            CallErrorKind::PolicyError => KindLabel::policy_error,
            CallErrorKind::Instantiate => KindLabel::instantiate,
        }
    }
}

const KINDS: [CallErrorKind; 6] = [
    CallErrorKind::Timeout,
    CallErrorKind::MemoryLimit,
    CallErrorKind::Trap,
    CallErrorKind::InvalidOutput,
    CallErrorKind::PolicyError,
    CallErrorKind::Instantiate,
];

/// Labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route name.
    pub route: String,
    /// `stable` or `fallback`.
    pub variant: &'static str,
}

/// Labels of a rejected request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// HTTP status.
    pub status: u16,
    /// Short reason: malformed, invalid, unknown_route, overloaded, too_large.
    pub reason: &'static str,
}

/// Labels of a reload attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Policy key (or `routes`).
    pub policy: String,
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// Labels of a policy's queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Policy key.
    pub policy: String,
}

/// Every metric of the server.
pub struct Metrics {
    registry: Registry,
    /// Requests answered with scores, by route and variant.
    pub requests: Family<RequestLabels, Counter>,
    /// Requests refused (4xx/5xx), by status and reason.
    pub rejected: Family<RejectLabels, Counter>,
    /// Fallbacks served, by failed policy version and error kind.
    pub fallbacks: Family<ErrorLabels, Counter>,
    /// Policy call errors, by policy version and kind.
    pub policy_errors: Family<ErrorLabels, Counter>,
    /// Policy call latency (instantiate + run), seconds.
    pub policy_latency: Family<PolicyLabels, Histogram>,
    /// End-to-end server latency of scored requests, seconds.
    pub request_latency: Histogram,
    /// Reload attempts.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Policy instances running now.
    pub instances_in_use: Gauge,
    /// Requests waiting for a free instance, by policy.
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// Policies with an active version.
    pub policies_active: Gauge,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~0.8 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
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
        let m = Metrics {
            requests: Family::default(),
            rejected: Family::default(),
            fallbacks: Family::default(),
            policy_errors: Family::default(),
            policy_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            request_latency: latency_histogram(),
            reloads: Family::default(),
            instances_in_use: Gauge::default(),
            queue_depth: Family::default(),
            policies_active: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Scoring requests answered, by route and variant",
            m.requests.clone(),
        );
        registry.register(
            "rejected",
            "Requests refused, by HTTP status and reason",
            m.rejected.clone(),
        );
        registry.register(
            "fallbacks",
            "Fallback answers, by failed policy version and error kind",
            m.fallbacks.clone(),
        );
        registry.register(
            "policy_errors",
            "Policy call errors, by policy version and kind",
            m.policy_errors.clone(),
        );
        registry.register(
            "policy_latency_seconds",
            "Policy call latency (fresh instance + run)",
            m.policy_latency.clone(),
        );
        registry.register(
            "request_latency_seconds",
            "Server latency of scored requests",
            m.request_latency.clone(),
        );
        registry.register(
            "reloads",
            "Policy (re)load attempts, by policy and result",
            m.reloads.clone(),
        );
        registry.register(
            "instances_in_use",
            "Policy instances running now",
            m.instances_in_use.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a free policy instance",
            m.queue_depth.clone(),
        );
        registry.register(
            "policies_active",
            "Policies with an active version",
            m.policies_active.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a refused request.
    pub fn reject(&self, status: u16, reason: &'static str) {
        self.rejected
            .get_or_create(&RejectLabels { status, reason })
            .inc();
    }

    /// Resolves the handles of one policy version.
    pub fn for_policy(&self, key: &str, version: &str) -> PolicyMetrics {
        let labels = PolicyLabels {
            policy: key.to_string(),
            version: version.to_string(),
        };
        let error = |kind: CallErrorKind| ErrorLabels {
            policy: key.to_string(),
            version: version.to_string(),
            kind: kind.into(),
        };
        PolicyMetrics {
            latency: self.policy_latency.get_or_create_owned(&labels),
            errors: KINDS.map(|k| self.policy_errors.get_or_create_owned(&error(k))),
            fallbacks: KINDS.map(|k| self.fallbacks.get_or_create_owned(&error(k))),
            queue_depth: self.queue_depth.get_or_create_owned(&QueueLabels {
                policy: key.to_string(),
            }),
        }
    }
}

/// Metric handles of one policy version, resolved at activation.
#[derive(Clone, Debug)]
pub struct PolicyMetrics {
    /// Call latency.
    pub latency: Histogram,
    errors: [Counter; 6],
    fallbacks: [Counter; 6],
    /// Requests waiting for an instance of this policy.
    pub queue_depth: Gauge,
}

impl PolicyMetrics {
    fn index(kind: CallErrorKind) -> usize {
        KINDS.iter().position(|k| *k == kind).unwrap_or(0)
    }

    /// Counts a call error and the fallback it caused.
    pub fn failed(&self, kind: CallErrorKind) {
        self.errors[Self::index(kind)].inc();
        self.fallbacks[Self::index(kind)].inc();
    }
}
