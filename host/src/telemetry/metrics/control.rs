//! Metrics of the control plane: reloads, rollbacks, active policies.

use super::Catalog;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Labels of a reload attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Policy key (or `routes`).
    pub policy: String,
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// Labels of a rollback.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RollbackLabels {
    /// Route.
    pub route: String,
    /// `guardrail` (automatic) or `operator`.
    pub by: &'static str,
}

/// Control plane metrics.
pub struct ControlMetrics {
    /// Reload attempts.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Rollbacks, by route and who did it.
    pub rollbacks: Family<RollbackLabels, Counter>,
    /// Policies with an active version.
    pub policies_active: Gauge,
    /// 1 while the fleet's shared guardrail windows cannot be reached
    /// (canaries are judged on this replica's requests alone).
    pub fleet_windows_degraded: Gauge,
}

impl ControlMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Catalog<'_>) -> Self {
        let m = ControlMetrics {
            reloads: Family::default(),
            rollbacks: Family::default(),
            policies_active: Gauge::default(),
            fleet_windows_degraded: Gauge::default(),
        };
        registry.register(
            "rollbacks",
            "Canary rollbacks, by route and who rolled back (guardrail or operator)",
            m.rollbacks.clone(),
        );
        registry.register(
            "reloads",
            "Policy (re)load attempts, by policy and result",
            m.reloads.clone(),
        );
        registry.register(
            "policies_active",
            "Policies with an active version",
            m.policies_active.clone(),
        );
        registry.register(
            "fleet_windows_degraded",
            "1 while the fleet's shared guardrail windows (--fleet-windows) cannot be reached: canaries judged on this replica's requests alone",
            m.fleet_windows_degraded.clone(),
        );
        m
    }

    /// Counts a rollback of `route`'s canary.
    pub fn rollback(&self, route: &str, automatic: bool) {
        self.rollbacks
            .get_or_create(&RollbackLabels {
                route: route.to_string(),
                by: if automatic { "guardrail" } else { "operator" },
            })
            .inc();
    }

    /// Counts a (re)load attempt of `policy` (a key, or `routes` /
    /// `directory`).
    pub fn reload(&self, policy: &str, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                policy: policy.to_string(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }
}
