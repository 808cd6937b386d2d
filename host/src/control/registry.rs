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
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::control::manifest::{Guardrails, Manifest, RouteConfig};
use crate::control::rollout::{RolloutFile, VersionRef};
use crate::policy::Policy;
use crate::telemetry::metrics::PolicyMetrics;

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
    /// How many of this version's latest served calls in a row were quick
    /// (the serving layer runs the next call inline once enough were:
    /// `serving::arm::runs_inline`).
    pub quick_calls: AtomicU32,
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
    /// Stored versions loaded because the rollout state refers to them
    /// (pinned stable, canary, shadow), by digest.
    pub versions: BTreeMap<String, Arc<ActivePolicy>>,
    /// Stored versions that did not load, with the settings they were tried
    /// with (tried again when the settings change).
    pub version_failures: BTreeMap<String, String>,
    /// The files whose load failed transiently, and how many times.
    pub transient: Option<([u8; 32], u32)>,
    /// The manifest names a module that is not there (yet): since when,
    /// for these files, and whether the grace period ran out (then it
    /// counts as a failed load).
    pub waiting: Option<Waiting>,
}

/// A manifest waiting for its module: deploying the manifest before the
/// module is a normal order, not a failure, until a grace period passes.
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    /// The files (manifest, absent module) this is about.
    pub fingerprint: [u8; 32],
    /// When the wait began.
    pub since: std::time::Instant,
    /// The grace period ran out: logged as an error and counted once.
    pub overdue: bool,
}

impl PolicyEntry {
    /// An entry with nothing loaded yet.
    pub fn empty() -> Self {
        PolicyEntry {
            active: None,
            failure: None,
            attempted: [0; 32],
            missing: false,
            waiting: None,
            versions: BTreeMap::new(),
            version_failures: BTreeMap::new(),
            transient: None,
        }
    }

    /// The loaded version `digest` (the directory's or a stored one).
    pub fn version(&self, digest: &str) -> Option<Arc<ActivePolicy>> {
        match &self.active {
            Some(a) if a.policy.identity().digest == digest => Some(a.clone()),
            _ => self.versions.get(digest).cloned(),
        }
    }
}

/// A failed load.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Failure {
    /// Why.
    pub error: String,
    /// When, RFC 3339 (UTC, milliseconds).
    #[serde(serialize_with = "unix_ms::serialize_rfc3339")]
    #[schema(value_type = String)]
    pub at: SystemTime,
}

/// Everything a request needs to find its policy.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Policies by key.
    pub policies: BTreeMap<String, PolicyEntry>,
    /// Named routes from `routes.toml`.
    pub routes: BTreeMap<String, RouteConfig>,
    /// Route used when a request names none.
    pub default_route: Option<String>,
    /// Error of the last routes.toml load, if it failed (previous routes kept).
    pub routes_failure: Option<Failure>,
    /// Rollout state from `rollout.json`.
    pub rollout: RolloutFile,
    /// Error of the last rollout.json load, if it failed (previous state kept).
    pub rollout_failure: Option<Failure>,
    /// The registry references the manifests name, with their pulls and
    /// failures (empty without `oci://` modules).
    pub oci: Vec<crate::control::source::oci::OciStatus>,
    /// Every route's arms, resolved at publication (configured routes and
    /// each policy's own-name route).
    pub plans: BTreeMap<String, Arc<RoutePlan>>,
}

/// What serves a route: its arms, resolved to loaded versions.
#[derive(Debug)]
pub struct RoutePlan {
    /// The route.
    pub route: String,
    /// Its policy key.
    pub policy: String,
    /// The stable version; `None` when the policy never loaded.
    pub stable: Option<Arc<ActivePolicy>>,
    /// The canary version and its share of listeners (percent).
    pub canary: Option<(Arc<ActivePolicy>, f64)>,
    /// The baseline: kill-switch answer and the arm after stable.
    pub baseline: Option<Arc<ActivePolicy>>,
    /// Shadow versions with the reference they were configured by.
    pub shadows: Vec<(String, Arc<ActivePolicy>)>,
    /// Kill switch.
    pub killed: bool,
    /// Canary bucketing salt.
    pub salt: String,
    /// Automatic rollback limits of the canary.
    pub guardrails: Option<Guardrails>,
    /// Share of requests whose decisions are logged, when the route sets it
    /// (else the server's default).
    pub log_sample: Option<f64>,
    /// Why part of the rollout state does not apply (stale state, a version
    /// that is not stored or did not load).
    pub problems: Vec<String>,
    /// A hash of what serves the route (each arm's version and settings,
    /// the canary's share, the shadows, the kill switch): it changes with
    /// every rollout change of the route and with nothing else, so the
    /// serving layer's per-arm windows restart when it does.
    pub arms_key: u64,
}

/// Which arm of a route answered, or was meant to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArmKind {
    /// The canary version.
    Canary,
    /// The stable version.
    Stable,
    /// The route's baseline policy.
    Baseline,
    /// The host's relevance passthrough.
    Passthrough,
}

impl ArmKind {
    /// Every arm, in chain order; [`ArmKind::index`] is the position.
    pub const ALL: [ArmKind; 4] = [
        ArmKind::Canary,
        ArmKind::Stable,
        ArmKind::Baseline,
        ArmKind::Passthrough,
    ];

    /// Position in [`ArmKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name, as in responses and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ArmKind::Canary => "canary",
            ArmKind::Stable => "stable",
            ArmKind::Baseline => "baseline",
            ArmKind::Passthrough => "passthrough",
        }
    }
}

impl RoutePlan {
    /// The chain of arms for a listener: the baseline alone when the route
    /// is killed; else the canary (for listeners in its share), the stable
    /// version and the baseline. The host's passthrough follows any chain.
    pub fn arms(
        &self,
        listener_id: &str,
    ) -> impl Iterator<Item = (ArmKind, Arc<ActivePolicy>)> + use<> {
        let live = !self.killed;
        let canary = self
            .canary
            .as_ref()
            .filter(|(_, percent)| {
                live && crate::bucket::in_canary(listener_id, &self.salt, *percent)
            })
            .map(|(c, _)| (ArmKind::Canary, c.clone()));
        let stable = self
            .stable
            .clone()
            .filter(|_| live)
            .map(|s| (ArmKind::Stable, s));
        let baseline = self.baseline.clone().map(|b| (ArmKind::Baseline, b));
        canary.into_iter().chain(stable).chain(baseline)
    }

    /// The arm whose overload is the request's answer (503): the stable
    /// version, or the baseline when the route is killed. Other arms are
    /// skipped when busy.
    pub fn primary(&self) -> ArmKind {
        if self.killed {
            ArmKind::Baseline
        } else {
            ArmKind::Stable
        }
    }
}

/// Why a route could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No such route or policy.
    #[error("no route or policy named `{name}`")]
    Unknown {
        /// What was asked for.
        name: String,
        /// Known route names.
        known: Vec<String>,
    },
    /// No route named and no default configured.
    #[error("the request names no route and no default route is configured")]
    NoDefault {
        /// Known route names.
        known: Vec<String>,
    },
    /// The route's policy has never loaded successfully.
    #[error("route `{route}`: policy `{policy}` has no version loaded ({})", error.as_deref().unwrap_or("not loaded yet"))]
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

    /// Finds the plan of `route` (or of the default route).
    ///
    /// # Errors
    /// [`ResolveError`] with the known names, for a 404 that helps the caller.
    pub fn resolve(&self, route: Option<&str>) -> Result<(String, Arc<RoutePlan>), ResolveError> {
        let route = match route.or(self.default_route.as_deref()) {
            Some(r) => r,
            None => {
                return Err(ResolveError::NoDefault {
                    known: self.route_names(),
                });
            }
        };
        let plan = self.plans.get(route).ok_or_else(|| ResolveError::Unknown {
            name: route.to_string(),
            known: self.route_names(),
        })?;
        if plan.stable.is_none() && !(plan.killed && plan.baseline.is_some()) {
            let entry = self.policies.get(&plan.policy);
            return Err(ResolveError::Unavailable {
                route: route.to_string(),
                policy: plan.policy.clone(),
                error: match entry {
                    Some(e) => e.failure.as_ref().map(|f| f.error.clone()),
                    None => Some(format!(
                        "the policy directory has no manifest `{}.toml`",
                        plan.policy
                    )),
                },
            });
        }
        Ok((route.to_string(), plan.clone()))
    }

    /// Resolves every route's arms from the loaded policies, `routes.toml`
    /// and the rollout state. Called before each publication.
    pub fn plan_routes(&mut self) {
        let mut plans = BTreeMap::new();
        let implicit = self
            .policies
            .keys()
            .filter(|k| !self.routes.contains_key(*k))
            .map(|k| (k.clone(), RouteConfig::new(k)));
        let configured = self.routes.iter().map(|(k, c)| (k.clone(), c.clone()));
        for (route, config) in configured.chain(implicit).collect::<Vec<_>>() {
            let plan = self.plan(&route, &config);
            plans.insert(route, Arc::new(plan));
        }
        self.plans = plans;
    }

    fn plan(&self, route: &str, config: &RouteConfig) -> RoutePlan {
        let mut problems = Vec::new();
        let entry = self.policies.get(&config.policy);
        let directory = entry.and_then(|e| e.active.clone());
        let state = self
            .rollout
            .routes
            .get(route)
            .filter(|r| {
                let fresh = r.policy == config.policy;
                if !fresh {
                    problems.push(format!(
                        "rollout state is for policy `{}` but routes.toml now routes `{route}` to `{}`; it is ignored until the next rollout change of this route",
                        r.policy, config.policy
                    ));
                }
                fresh
            });
        let mut version = |digest: &str, what: &str| {
            let v = entry.and_then(|e| e.version(digest));
            if v.is_none() {
                problems.push(format!(
                    "{what} version {digest} of `{}` is not loaded",
                    config.policy
                ));
            }
            v
        };
        let stable = match state.and_then(|s| s.stable.as_deref()) {
            Some(d) => version(d, "pinned stable").or(directory.clone()),
            None => directory.clone(),
        };
        let canary = state
            .and_then(|s| s.canary.as_ref())
            .and_then(|c| version(&c.digest, "canary").map(|v| (v, c.percent)));
        let baseline_key = config
            .baseline
            .clone()
            .or_else(|| stable.as_ref().and_then(|s| s.manifest.fallback.clone()));
        let baseline = baseline_key.as_deref().and_then(|k| self.active(k));
        if let (Some(k), None) = (&baseline_key, &baseline) {
            problems.push(format!("baseline `{k}` is not loaded"));
        }
        let mut shadows = Vec::new();
        for reference in state.map(|s| s.shadows.as_slice()).unwrap_or_default() {
            let resolved = VersionRef::parse(reference).ok().and_then(|r| {
                let e = self.policies.get(&r.key)?;
                match &r.digest {
                    Some(d) => e.version(d),
                    None => e.active.clone(),
                }
            });
            match resolved {
                Some(v) => shadows.push((reference.clone(), v)),
                None => problems.push(format!("shadow `{reference}` is not loaded")),
            }
        }
        let killed = state.is_some_and(|s| s.killed);
        let arms_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            let id = |a: &Arc<ActivePolicy>| {
                let i = a.policy.identity();
                (i.digest.clone(), i.settings_sha256.clone())
            };
            stable.as_ref().map(id).hash(&mut h);
            canary
                .as_ref()
                .map(|(c, p)| (id(c), p.to_bits()))
                .hash(&mut h);
            baseline.as_ref().map(id).hash(&mut h);
            for (r, v) in &shadows {
                (r, id(v)).hash(&mut h);
            }
            killed.hash(&mut h);
            h.finish()
        };
        RoutePlan {
            route: route.to_string(),
            policy: config.policy.clone(),
            stable,
            canary,
            baseline,
            shadows,
            killed,
            salt: config.salt.clone().unwrap_or_else(|| route.to_string()),
            guardrails: config.guardrails.clone(),
            log_sample: config.log.as_ref().map(|l| l.sample),
            problems,
            arms_key,
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
    writer: std::sync::Mutex<()>,
}

impl Registry {
    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Exclusive right to build the next snapshot: writers (a watcher pass,
    /// an admin change's pass) take it for a whole read-modify-publish, so
    /// one never publishes over another's changes. Readers never take it.
    pub fn writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
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

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-26T03:30:00.123Z`.
    pub fn rfc3339(t: &SystemTime) -> String {
        humantime::format_rfc3339_millis(*t).to_string()
    }

    /// Serde `serialize_with`: unix milliseconds.
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(millis(t))
    }

    /// Serde `serialize_with`: [`rfc3339`].
    pub fn serialize_rfc3339<S: serde::Serializer>(
        t: &SystemTime,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(t))
    }
}
