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

/// Labels of the generation info metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GenerationLabels {
    /// `g<revision>-<12 hex>`.
    pub generation: String,
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
    /// The rollout revision this replica serves.
    pub rollout_revision: Gauge,
    /// Things this replica refuses to serve (modules that do not load).
    pub generation_refusals: Gauge,
    /// 1 for the generation this replica serves.
    pub generation: Family<GenerationLabels, Gauge>,
    /// The generation last set, to clear when it changes.
    current: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl ControlMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Catalog<'_>) -> Self {
        let m = ControlMetrics {
            reloads: Family::default(),
            rollbacks: Family::default(),
            policies_active: Gauge::default(),
            fleet_windows_degraded: Gauge::default(),
            rollout_revision: Gauge::default(),
            generation_refusals: Gauge::default(),
            generation: Family::default(),
            current: Default::default(),
        };
        registry.register(
            "rollout_revision",
            "The rollout revision this replica serves",
            m.rollout_revision.clone(),
        );
        registry.register(
            "generation_refusals",
            "Policies and versions this replica refuses to serve (they do not load here)",
            m.generation_refusals.clone(),
        );
        registry.register(
            "generation_info",
            "1 for the generation this replica serves (label generation)",
            m.generation.clone(),
        );
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

    /// Sets what this replica serves: its revision, generation and number
    /// of refusals.
    pub fn serving(&self, revision: u64, generation: &str, refusals: usize) {
        self.rollout_revision.set(revision as i64);
        self.generation_refusals.set(refusals as i64);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_deref() == Some(generation) {
            return;
        }
        if let Some(old) = current.take() {
            self.generation
                .remove(&GenerationLabels { generation: old });
        }
        self.generation
            .get_or_create(&GenerationLabels {
                generation: generation.to_string(),
            })
            .set(1);
        *current = Some(generation.to_string());
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
