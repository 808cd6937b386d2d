//! Metrics of requests: answered, refused, latency, instances in use.

use super::Catalog;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::latency_histogram;

/// Labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route name.
    pub route: String,
    /// `stable` or `fallback`.
    pub variant: &'static str,
    /// `http` or `grpc`.
    pub transport: &'static str,
}

/// Labels of a rejected request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// HTTP status.
    pub status: u16,
    /// Short reason: malformed, invalid, unknown_route, overloaded, too_large.
    pub reason: &'static str,
    /// `http` or `grpc`.
    pub transport: &'static str,
}

/// Request metrics.
pub struct RequestMetrics {
    /// Requests answered with scores, by route, variant and transport.
    pub answered: Family<RequestLabels, Counter>,
    /// Requests refused (4xx/5xx), by status, reason and transport.
    pub rejected: Family<RejectLabels, Counter>,
    /// End-to-end server latency of scored requests, seconds.
    pub latency: Histogram,
    /// Policy instances running now.
    pub instances_in_use: Gauge,
    /// Time a call waited for a CPU slot (`serving::cpu`), seconds.
    pub cpu_slot_wait: Histogram,
}

impl RequestMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Catalog<'_>) -> Self {
        let m = RequestMetrics {
            answered: Family::default(),
            rejected: Family::default(),
            latency: latency_histogram(),
            instances_in_use: Gauge::default(),
            cpu_slot_wait: latency_histogram(),
        };
        registry.register(
            "requests",
            "Scoring requests answered, by route and variant",
            m.answered.clone(),
        );
        registry.register(
            "rejected",
            "Requests refused, by HTTP status and reason",
            m.rejected.clone(),
        );
        registry.register(
            "request_latency_seconds",
            "Server latency of scored requests",
            m.latency.clone(),
        );
        registry.register(
            "instances_in_use",
            "Policy instances running now",
            m.instances_in_use.clone(),
        );
        registry.register(
            "cpu_slot_wait_seconds",
            "Time a policy call waited for a CPU slot (one per core) before it ran",
            m.cpu_slot_wait.clone(),
        );
        m
    }

    /// Counts an answered request and its latency, seconds.
    pub fn answered(&self, labels: &RequestLabels, seconds: f64) {
        self.answered.get_or_create(labels).inc();
        self.latency.observe(seconds);
    }

    /// Counts a refused request.
    pub fn reject(&self, status: u16, reason: &'static str, transport: &'static str) {
        self.rejected
            .get_or_create(&RejectLabels {
                status,
                reason,
                transport,
            })
            .inc();
    }
}
