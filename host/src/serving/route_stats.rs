//! What the server learns about each route while serving it: the canary's
//! guardrail window, each arm's counts and the shadows' divergence from the
//! served arms, since the route's last rollout change.
//!
//! This state outlives registry snapshots (a reload must not forget a
//! canary's recent errors), so it lives beside the registry, one entry per
//! route name. Each lock is held for a few arithmetic operations, never
//! across a policy call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use crate::control::registry::ArmKind;
use crate::divergence::{
    DivergenceStats, DivergenceSummary, LatencyHistogram, LatencySummary, WindowedDivergence,
};
use crate::serving::guardrail::{CanaryWindow, WindowSummary};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::metrics::arm::ArmLabels;

/// Requests per block of a shadow's divergence window: a summary covers
/// the last 1,000 to 2,000 comparisons with each served arm.
pub const SHADOW_WINDOW: u64 = 1_000;

/// Each shadow's divergence from each arm that served beside it.
pub type ShadowWindows = BTreeMap<String, BTreeMap<ArmKind, WindowedDivergence>>;

/// One route's runtime state.
#[derive(Default)]
pub struct RouteRuntime {
    /// The canary's guardrail window.
    pub canary: Mutex<CanaryWindow>,
    /// The canary's fleet-wide window as last judged (with
    /// `--fleet-windows`).
    pub fleet: Mutex<Option<WindowSummary>>,
    /// Divergence of each shadow (by its reference) from each served arm,
    /// since the route's last rollout change.
    pub shadows: Mutex<ShadowWindows>,
    /// The served arm's recent policy latency, against which shadows are
    /// shed.
    pub served: Mutex<LatencyTrend>,
    route: String,
    metrics: Option<Arc<Metrics>>,
    arms: [ArmStats; 4],
    /// The [`RoutePlan::arms_key`](crate::control::registry::RoutePlan::arms_key)
    /// the windows are about (0 before the first request).
    key: AtomicU64,
    /// When the windows restarted, Unix milliseconds.
    since_ms: AtomicU64,
    reset: Mutex<()>,
}

impl std::fmt::Debug for RouteRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteRuntime")
            .field("route", &self.route)
            .field("canary", &self.canary)
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

/// One arm of a route: its metric handles, created on first use, and its
/// counts since the route's last rollout change.
#[derive(Default)]
struct ArmStats {
    /// Handles of requests assigned to the arm.
    assigned: OnceLock<(Counter, Histogram)>,
    /// Handles of the answers the arm served.
    served: OnceLock<[Counter; 3]>,
    /// Handle of its fallbacks.
    fallbacks: OnceLock<Counter>,
    window: Mutex<ArmWindow>,
}

#[derive(Debug, Default)]
struct ArmWindow {
    requests: u64,
    fallbacks: u64,
    candidates: u64,
    eligible: u64,
    promoted: u64,
    latency: LatencyHistogram,
}

/// What one request did, as [`RouteRuntime::observe`] counts it.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// The arm the request was assigned to (the first arm tried).
    pub assigned: ArmKind,
    /// The arm that answered.
    pub served: ArmKind,
    /// Server latency.
    pub latency: Duration,
    /// Candidates answered.
    pub candidates: u64,
    /// Of them, eligible.
    pub eligible: u64,
    /// Of them, promoted.
    pub promoted: u64,
}

/// One arm's counts since the route's last rollout change, as
/// `/v1/routes/{route}` reports them.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ArmSummary {
    /// `canary`, `stable`, `baseline` or `passthrough`.
    pub arm: &'static str,
    /// Requests assigned to the arm.
    pub requests: u64,
    /// Of them, answered by another arm because this one failed.
    pub fallbacks: u64,
    /// fallbacks / requests.
    pub fallback_rate: f64,
    /// Candidates in the answers the arm served.
    pub candidates: u64,
    /// Of them, eligible.
    pub eligible: u64,
    /// Of them, promoted.
    pub promoted: u64,
    /// eligible / candidates.
    pub eligible_rate: f64,
    /// promoted / candidates.
    pub promoted_rate: f64,
    /// Server latency of the arm's requests.
    pub latency: Option<LatencySummary>,
}

/// A shadow's divergence from one served arm.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ArmDivergence {
    /// The arm that served beside the shadow.
    pub arm: &'static str,
    /// The divergence over the window.
    pub divergence: DivergenceSummary,
}

fn rate(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

impl RouteRuntime {
    fn new(route: &str, metrics: Option<Arc<Metrics>>) -> Self {
        RouteRuntime {
            route: route.to_string(),
            metrics,
            ..Default::default()
        }
    }

    /// Restarts the per-arm windows and the shadows' divergence when the
    /// route's arms changed (`arms_key`): a canary's counts are then about
    /// this canary, a shadow's agreement about the arms serving now.
    pub fn sync(&self, arms_key: u64) {
        if self.key.load(Ordering::Acquire) == arms_key {
            return;
        }
        let _one = lock(&self.reset);
        if self.key.load(Ordering::Acquire) == arms_key {
            return;
        }
        for a in &self.arms {
            *lock(&a.window) = ArmWindow::default();
        }
        lock(&self.shadows).clear();
        let now = oasis_state::unix_now_ms().max(0) as u64;
        self.since_ms.store(now, Ordering::Release);
        self.key.store(arms_key, Ordering::Release);
    }

    /// Whether the windows are about `arms_key` (a shadow that started
    /// before a rollout change does not count after it).
    pub fn is_current(&self, arms_key: u64) -> bool {
        self.key.load(Ordering::Acquire) == arms_key
    }

    fn labels(&self, arm: ArmKind) -> ArmLabels {
        ArmLabels {
            route: self.route.clone(),
            arm: arm.as_str(),
        }
    }

    /// Counts one answered request of the arms keyed `arms_key`.
    pub fn observe(&self, arms_key: u64, o: Observed) {
        self.sync(arms_key);
        let fell_back = o.assigned != o.served;
        {
            let mut w = lock(&self.arms[o.assigned.index()].window);
            w.requests += 1;
            w.fallbacks += u64::from(fell_back);
            w.latency.record(o.latency);
        }
        {
            let mut w = lock(&self.arms[o.served.index()].window);
            w.candidates += o.candidates;
            w.eligible += o.eligible;
            w.promoted += o.promoted;
        }
        // Series are created on first use: an arm that never serves, or
        // never falls back, has none.
        let Some(m) = &self.metrics else { return };
        let f = &m.arms;
        let a = &self.arms[o.assigned.index()];
        let (requests, latency) = a.assigned.get_or_init(|| {
            let l = self.labels(o.assigned);
            (
                f.requests.get_or_create_owned(&l),
                f.latency.get_or_create_owned(&l),
            )
        });
        requests.inc();
        latency.observe(o.latency.as_secs_f64());
        if fell_back {
            a.fallbacks
                .get_or_init(|| f.fallbacks.get_or_create_owned(&self.labels(o.assigned)))
                .inc();
        }
        let [c, e, p] = self.arms[o.served.index()].served.get_or_init(|| {
            let l = self.labels(o.served);
            [&f.candidates, &f.eligible, &f.promoted].map(|x| x.get_or_create_owned(&l))
        });
        c.inc_by(o.candidates);
        e.inc_by(o.eligible);
        p.inc_by(o.promoted);
    }

    /// When the windows restarted (the route's last rollout change seen by
    /// serving), Unix milliseconds; 0 before the first request.
    pub fn since_ms(&self) -> u64 {
        self.since_ms.load(Ordering::Acquire)
    }

    /// Each arm that saw a request since the last rollout change.
    pub fn arms(&self) -> Vec<ArmSummary> {
        ArmKind::ALL
            .iter()
            .filter_map(|&arm| {
                let w = lock(&self.arms[arm.index()].window);
                (w.requests > 0 || w.candidates > 0).then(|| ArmSummary {
                    arm: arm.as_str(),
                    requests: w.requests,
                    fallbacks: w.fallbacks,
                    fallback_rate: rate(w.fallbacks, w.requests),
                    candidates: w.candidates,
                    eligible: w.eligible,
                    promoted: w.promoted,
                    eligible_rate: rate(w.eligible, w.candidates),
                    promoted_rate: rate(w.promoted, w.candidates),
                    latency: w.latency.summary(),
                })
            })
            .collect()
    }

    /// A shadow's divergence from all served arms together, and from each.
    pub fn shadow(&self, reference: &str) -> Option<(DivergenceSummary, Vec<ArmDivergence>)> {
        let shadows = lock(&self.shadows);
        let by_arm = shadows.get(reference)?;
        let mut all = DivergenceStats::new();
        let arms = by_arm
            .iter()
            .map(|(arm, w)| {
                w.merge_into(&mut all);
                ArmDivergence {
                    arm: arm.as_str(),
                    divergence: w.summary(),
                }
            })
            .collect();
        Some((all.summary(), arms))
    }
}

/// A served arm's policy latency: a fast moving average (the last few
/// calls) against a slow one (its usual). When the fast one rises well
/// above the usual, the arm is short of CPU and shadows are shed.
#[derive(Debug, Default, Clone, Copy)]
pub struct LatencyTrend {
    fast_us: f64,
    slow_us: f64,
    calls: u64,
}

impl LatencyTrend {
    /// Calls seen before [`LatencyTrend::pressed`] may say yes.
    pub const WARMUP: u64 = 16;
    /// Latency above the usual that counts as pressure: 1.5 × plus this.
    pub const MARGIN_US: f64 = 500.0;

    /// Records one served call of `us` microseconds.
    pub fn record(&mut self, us: u64) {
        let x = us as f64;
        if self.calls == 0 {
            (self.fast_us, self.slow_us) = (x, x);
        } else {
            self.fast_us += (x - self.fast_us) / 8.0;
            self.slow_us += (x - self.slow_us) / 256.0;
        }
        self.calls += 1;
    }

    /// Whether the served arm's recent latency has risen well above its
    /// usual (so shadow calls should make way).
    pub fn pressed(&self) -> bool {
        self.calls >= Self::WARMUP && self.fast_us > 1.5 * self.slow_us + Self::MARGIN_US
    }
}

/// Runtime state of every route.
#[derive(Default)]
pub struct RouteStats {
    routes: RwLock<HashMap<String, Arc<RouteRuntime>>>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteStats")
            .field("routes", &read(&self.routes).len())
            .finish_non_exhaustive()
    }
}

impl RouteStats {
    /// Route state whose arms also count into `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Self {
        RouteStats {
            routes: RwLock::default(),
            metrics: Some(metrics),
        }
    }

    /// The state of `route`, created on first use.
    pub fn get(&self, route: &str) -> Arc<RouteRuntime> {
        if let Some(r) = read(&self.routes).get(route) {
            return r.clone();
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(route.to_string())
            .or_insert_with(|| Arc::new(RouteRuntime::new(route, self.metrics.clone())))
            .clone()
    }

    /// The state of `route`, if it was ever served.
    pub fn peek(&self, route: &str) -> Option<Arc<RouteRuntime>> {
        read(&self.routes).get(route).cloned()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent
    // (inserts only), so a poisoned lock is still usable.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Locks a mutex, recovering from poisoning (the guarded values are
/// counters, always consistent between statements).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(assigned: ArmKind, served: ArmKind, promoted: u64) -> Observed {
        Observed {
            assigned,
            served,
            latency: Duration::from_micros(700),
            candidates: 10,
            eligible: 4,
            promoted,
        }
    }

    #[test]
    fn arms_and_shadows_restart_when_the_route_changes() {
        let metrics = Arc::new(Metrics::new());
        let stats = RouteStats::with_metrics(metrics.clone());
        let rt = stats.get("radio");
        rt.observe(7, observed(ArmKind::Stable, ArmKind::Stable, 2));
        rt.observe(7, observed(ArmKind::Canary, ArmKind::Stable, 0));
        lock(&rt.shadows)
            .entry("fair".into())
            .or_default()
            .entry(ArmKind::Stable)
            .or_insert_with(|| WindowedDivergence::new(SHADOW_WINDOW))
            .record_error();
        let arms = rt.arms();
        let by = |name: &str| arms.iter().find(|a| a.arm == name).cloned().unwrap();
        // The canary's request fell back: it counts as the canary's request
        // and fallback, and its decisions as the stable arm's.
        assert_eq!((by("canary").requests, by("canary").fallbacks), (1, 1));
        assert_eq!(by("canary").candidates, 0);
        assert_eq!((by("stable").requests, by("stable").candidates), (1, 20));
        assert_eq!(by("stable").promoted_rate, 0.1);
        assert_eq!(by("stable").eligible_rate, 0.4);
        assert!(rt.shadow("fair").is_some());
        let text = metrics.encode();
        assert!(
            text.contains(r#"oasis_arm_fallbacks_total{route="radio",arm="canary"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"oasis_arm_fallbacks_total{route="radio",arm="stable"}"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"oasis_arm_promoted_total{route="radio",arm="canary"}"#),
            "{text}"
        );

        // Another arms key (a rollout change): everything restarts.
        assert!(rt.is_current(7));
        rt.observe(8, observed(ArmKind::Stable, ArmKind::Stable, 1));
        assert!(!rt.is_current(7));
        let arms = rt.arms();
        assert_eq!(arms.len(), 1);
        assert_eq!((arms[0].arm, arms[0].requests), ("stable", 1));
        assert!(rt.shadow("fair").is_none());
        // Prometheus counters are cumulative.
        assert!(
            metrics
                .encode()
                .contains(r#"oasis_arm_requests_total{route="radio",arm="stable"} 2"#)
        );
    }

    #[test]
    fn shadows_make_way_when_the_served_latency_rises() {
        let mut t = LatencyTrend::default();
        for _ in 0..100 {
            t.record(1_000);
        }
        assert!(!t.pressed(), "steady latency");
        for _ in 0..8 {
            t.record(6_000);
        }
        assert!(t.pressed(), "latency up sixfold: {t:?}");
        for _ in 0..40 {
            t.record(1_000);
        }
        assert!(!t.pressed(), "back to usual: {t:?}");
        let mut fresh = LatencyTrend::default();
        fresh.record(50_000);
        assert!(!fresh.pressed(), "no judgement before the warm-up");
    }
}
