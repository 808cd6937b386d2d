//! What the server learns about each route while serving it: the canary's
//! guardrail window and the shadows' divergence from the served arm.
//!
//! This state outlives registry snapshots (a reload must not forget a
//! canary's recent errors), so it lives beside the registry, one entry per
//! route name. Each lock is held for a few arithmetic operations, never
//! across a policy call.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use crate::divergence::DivergenceStats;
use crate::serving::guardrail::CanaryWindow;

/// One route's runtime state.
#[derive(Debug, Default)]
pub struct RouteRuntime {
    /// The canary's guardrail window.
    pub canary: Mutex<CanaryWindow>,
    /// Divergence of each shadow (by its reference) from the served arm.
    pub shadows: Mutex<BTreeMap<String, DivergenceStats>>,
    /// The served arm's recent policy latency, against which shadows are
    /// shed.
    pub served: Mutex<LatencyTrend>,
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
#[derive(Debug, Default)]
pub struct RouteStats {
    routes: RwLock<HashMap<String, Arc<RouteRuntime>>>,
}

impl RouteStats {
    /// The state of `route`, created on first use.
    pub fn get(&self, route: &str) -> Arc<RouteRuntime> {
        if let Some(r) = read(&self.routes).get(route) {
            return r.clone();
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.entry(route.to_string()).or_default().clone()
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
