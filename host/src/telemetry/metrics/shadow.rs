//! Metrics of shadows: calls and divergence from the served arm.

use super::Catalog;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::FloatGauge;

/// Labels of a shadow of a route, compared with one served arm.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    /// Route.
    pub route: String,
    /// The shadow, as configured (`key` or `key@sha256:…`).
    pub shadow: String,
    /// The arm that served beside it.
    pub arm: &'static str,
}

/// Labels of a shadow's reason difference.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowReasonLabels {
    /// Route.
    pub route: String,
    /// The shadow.
    pub shadow: String,
    /// The arm that served beside it.
    pub arm: &'static str,
    /// Reason code.
    pub reason: &'static str,
}

/// Labels of a shadow call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowCallLabels {
    /// Route.
    pub route: String,
    /// The shadow.
    pub shadow: String,
    /// `ok`, `failed`, `shed` or `skipped`.
    pub result: &'static str,
}

/// The shadow divergence gauges: name and help.
const SHADOW_GAUGES: [(&str, &str); 7] = [
    (
        "shadow_topk_overlap",
        "Mean top-10 overlap of a shadow with the served arm (window of recent requests)",
    ),
    (
        "shadow_rank_correlation",
        "Mean Spearman correlation over the top-10 union",
    ),
    (
        "shadow_score_mae",
        "Mean absolute score difference from the served arm",
    ),
    (
        "shadow_promoted_share_diff",
        "Mean promoted share of the shadow minus the served arm's",
    ),
    (
        "shadow_eligibility_rate_diff",
        "Mean eligibility rate of the shadow minus the served arm's",
    ),
    ("shadow_error_rate", "Share of failed shadow calls"),
    (
        "shadow_latency_p99_seconds",
        "p99 of the shadow's call latency",
    ),
];

/// Shadow metrics.
pub struct ShadowMetrics {
    /// Shadow calls, by route, shadow and result.
    pub calls: Family<ShadowCallLabels, Counter>,
    /// Shadow divergence from each served arm, mean over the window of
    /// recent comparisons, by metric.
    pub divergence: [Family<ShadowLabels, FloatGauge>; 7],
    /// Per reason: share of candidates with it under the shadow minus
    /// under the served arm.
    pub reason_diff: Family<ShadowReasonLabels, FloatGauge>,
}

impl ShadowMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Catalog<'_>) -> Self {
        let m = ShadowMetrics {
            calls: Family::default(),
            divergence: Default::default(),
            reason_diff: Family::default(),
        };
        registry.register(
            "shadow_reason_share_diff",
            "Per reason, share of candidates with it under the shadow minus under the served arm",
            m.reason_diff.clone(),
        );
        registry.register(
            "shadow_calls",
            "Shadow calls, by route, shadow and result (ok, failed, shed, skipped)",
            m.calls.clone(),
        );
        for ((name, help), family) in SHADOW_GAUGES.iter().zip(&m.divergence) {
            registry.register(name, help, family.clone());
        }
        m
    }

    /// Counts a shadow call of `shadow` on `route` with `result`.
    pub fn call(&self, route: &str, shadow: &str, result: &'static str) {
        self.calls
            .get_or_create(&ShadowCallLabels {
                route: route.to_string(),
                shadow: shadow.to_string(),
                result,
            })
            .inc();
    }

    /// Publishes a shadow's divergence from the served `arm` as gauges.
    pub fn divergence(
        &self,
        route: &str,
        shadow: &str,
        arm: &'static str,
        s: &crate::divergence::DivergenceSummary,
    ) {
        let labels = ShadowLabels {
            route: route.to_string(),
            shadow: shadow.to_string(),
            arm,
        };
        let mut values = [None; 7];
        if let Some(m) = &s.mean {
            values[..5].copy_from_slice(&[
                Some(m.topk_overlap),
                Some(m.rank_correlation),
                Some(m.score_mae),
                Some(m.promoted_share_diff),
                Some(m.eligibility_rate_diff),
            ]);
        }
        values[5] = Some(s.error_rate);
        values[6] = s.latency.map(|l| l.p99_ms / 1000.0);
        for (family, value) in self.divergence.iter().zip(values) {
            if let Some(v) = value {
                family.get_or_create(&labels).set(v);
            }
        }
        if s.candidates > 0 {
            // Reasons neither side ever gave have no series (always 0).
            for r in s.reasons.iter().filter(|r| r.served > 0 || r.other > 0) {
                self.reason_diff
                    .get_or_create(&ShadowReasonLabels {
                        route: route.to_string(),
                        shadow: shadow.to_string(),
                        arm,
                        reason: r.name,
                    })
                    .set(r.difference as f64 / s.candidates as f64);
            }
        }
    }
}
