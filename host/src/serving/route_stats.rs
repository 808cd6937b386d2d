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
