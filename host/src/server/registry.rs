//! The set of loaded policies and routes, swapped atomically on reload.
//!
//! Readers (every scoring request) take a lock-free snapshot with
//! [`Registry::snapshot`] and clone the `Arc` of the policy version they
//! use, so a request finishes on the version it started with even if a
//! reload swaps in a new one meanwhile. Writers (the reloader, one task)
//! build a complete new [`Snapshot`] off to the side and publish it with one
//! atomic store; a failed load never replaces the last good version.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::policy::Policy;
use crate::server::manifest::Manifest;
use crate::server::metrics::PolicyMetrics;

/// A policy version that passed validation and serves traffic.
pub struct ActivePolicy {
    /// The loaded component (its identity: [`Policy::identity`]).
    pub policy: Policy,
    /// The manifest it was loaded with (its key: [`ActivePolicy::key`]).
    pub manifest: Manifest,
    /// Bounds the instances of this version running at once.
    pub permits: Arc<Semaphore>,
    /// Bounds running plus waiting requests: a request that finds no slot
    /// here is refused at once (503) instead of queueing without limit.
    pub queue: Arc<Semaphore>,
    /// When it was activated.
    pub loaded_at: SystemTime,
    /// Metric handles.
    pub metrics: PolicyMetrics,
}

impl ActivePolicy {
    /// Policy key (the manifest's file stem).
    pub fn key(&self) -> &str {
        &self.manifest.key
    }
}

impl std::fmt::Debug for ActivePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivePolicy")
            .field("key", &self.key())
            .field("policy", &self.policy)
            .finish()
    }
}

/// A policy key's state: its last good version and its last failure.
#[derive(Debug, Clone)]
pub struct PolicyEntry {
    /// The version serving now (last good), if any load ever succeeded.
    pub active: Option<Arc<ActivePolicy>>,
    /// The most recent load failure that is still current (the files on
    /// disk did not load); cleared by the next successful load.
    pub failure: Option<Failure>,
    /// Fingerprint of the files last attempted, to skip unchanged ones.
    pub attempted: [u8; 32],
    /// The manifest was missing on the last pass; unloaded if still missing
    /// on the next one.
    pub missing: bool,
}

/// A failed load.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Why.
    pub error: String,
    /// When.
    #[serde(with = "unix_ms")]
    pub at: SystemTime,
}

/// Everything a request needs to find its policy.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Policies by key.
    pub policies: BTreeMap<String, PolicyEntry>,
    /// Named routes: route -> policy key.
    pub routes: BTreeMap<String, String>,
    /// Route used when a request names none.
    pub default_route: Option<String>,
    /// Error of the last routes.toml load, if it failed (previous routes kept).
    pub routes_failure: Option<Failure>,
}

/// Why a route could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// No such route or policy.
    Unknown {
        /// What was asked for.
        name: String,
        /// Known route names.
        known: Vec<String>,
    },
    /// No route named and no default configured.
    NoDefault {
        /// Known route names.
        known: Vec<String>,
    },
    /// The route's policy has never loaded successfully.
    Unavailable {
        /// The route.
        route: String,
        /// Its policy key.
        policy: String,
        /// Why it is not loaded.
        error: Option<String>,
    },
}

impl Snapshot {
    /// Names a request may use: configured routes plus every policy key.
    pub fn route_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.routes.keys().cloned().collect();
        for k in self.policies.keys() {
            if !self.routes.contains_key(k) {
                names.push(k.clone());
            }
        }
        names.sort();
        names
    }

    /// The policy key a route maps to (a configured route, else a policy of that name).
    pub fn route_policy<'a>(&'a self, route: &'a str) -> Option<&'a str> {
        match self.routes.get(route) {
            Some(p) => Some(p),
            None => self.policies.contains_key(route).then_some(route),
        }
    }

    /// Finds the active policy of `route` (or of the default route).
    ///
    /// # Errors
    /// [`ResolveError`] with the known names, for a 404 that helps the caller.
    pub fn resolve(
        &self,
        route: Option<&str>,
    ) -> Result<(String, Arc<ActivePolicy>), ResolveError> {
        let route = match route.or(self.default_route.as_deref()) {
            Some(r) => r,
            None => {
                return Err(ResolveError::NoDefault {
                    known: self.route_names(),
                });
            }
        };
        let key = self
            .route_policy(route)
            .ok_or_else(|| ResolveError::Unknown {
                name: route.to_string(),
                known: self.route_names(),
            })?;
        let entry = self.policies.get(key);
        match entry.and_then(|e| e.active.clone()) {
            Some(active) => Ok((route.to_string(), active)),
            None => Err(ResolveError::Unavailable {
                route: route.to_string(),
                policy: key.to_string(),
                error: match entry {
                    Some(e) => e.failure.as_ref().map(|f| f.error.clone()),
                    None => Some(format!("the policy directory has no manifest `{key}.toml`")),
                },
            }),
        }
    }

    /// The active version of policy `key`, if loaded.
    pub fn active(&self, key: &str) -> Option<Arc<ActivePolicy>> {
        self.policies.get(key).and_then(|e| e.active.clone())
    }
}

/// The published snapshot and the readiness flag.
#[derive(Default)]
pub struct Registry {
    current: ArcSwap<Snapshot>,
    ready: AtomicBool,
}

impl Registry {
    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot atomically.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Marks the initial policy set as loaded.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the initial policy set has been loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Serializes `SystemTime` as unix milliseconds.
pub mod unix_ms {
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Milliseconds since the epoch.
    pub fn millis(t: &SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// Serde `serialize_with`.
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(millis(t))
    }
}
