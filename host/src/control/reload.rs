//! Hot reload: watch the policy directory and reconcile it with the registry.
//!
//! Events are only a hint. Editors write temp files and rename them, `mv`
//! replaces files, a delete may be followed by a restore: rather than
//! interpreting each event, the reloader waits for the directory to be quiet
//! for a moment (debounce), then *reconciles*: it reads every manifest and
//! module, skips those whose content fingerprint it has already tried, loads
//! the others off the request path, and publishes one new snapshot. A
//! periodic rescan catches anything a watcher missed.
//!
//! A load that fails (a truncated `.wasm`, refused settings, a trap in the
//! smoke call) is recorded and reported; the last good version keeps serving.
//! A removed manifest unloads its policy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::control::manifest::{Manifest, ManifestError, ROUTES_FILE, RoutesFile};
use crate::control::module_digests::{ModuleDigests, Stat};
use crate::control::registry::{ActivePolicy, Failure, PolicyEntry, Registry, Snapshot, Waiting};
use crate::control::rollout::{ReadRollout, RolloutFile, read_rollout};
use crate::control::source::oci::{OciSource, RegistryClient, RegistryConfig};
use crate::control::source::{DirSource, Fetched, ModuleRef, SourceError, Sources};
use crate::control::versions::{VersionRecord, VersionStore};
use crate::error::{CallErrorKind, LoadError};
use crate::policy::Policy;
use crate::runtime::Runtime;
use crate::telemetry::metrics::Metrics;

/// How a [`Reloader`] watches its directory.
#[derive(Debug, Clone)]
pub struct ReloadSettings {
    /// Default route when `routes.toml` names none.
    pub default_route: Option<String>,
    /// Quiet period after the last event before reconciling.
    pub debounce: Duration,
    /// Safety-net rescan interval.
    pub rescan: Duration,
    /// How long a manifest may wait for its module before the wait counts
    /// as a failed load (see [`Waiting`]).
    pub module_grace: Duration,
}

/// Reconciles a policy directory into a [`Registry`].
#[derive(Clone)]
pub struct Reloader {
    /// The watched directory.
    dir: PathBuf,
    /// Runtime used to compile and validate.
    runtime: Runtime,
    /// Where snapshots are published.
    registry: Arc<Registry>,
    /// Reload metrics.
    metrics: Arc<Metrics>,
    /// Where every loaded version is kept.
    store: VersionStore,
    /// Default route, debounce, rescan, module grace.
    settings: ReloadSettings,
    /// Where modules come from: files, or registries.
    sources: Sources,
    /// Module files unchanged since a pass read them, not read again.
    digests: Arc<ModuleDigests>,
}

impl Reloader {
    /// The reloader of policy directory `dir`, compiling with `runtime`,
    /// publishing to `registry` and keeping every loaded version in `store`.
    pub fn new(
        dir: PathBuf,
        runtime: Runtime,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        store: VersionStore,
        settings: ReloadSettings,
    ) -> Self {
        let oci = OciSource::new(
            RegistryClient::new(RegistryConfig::default()),
            store.clone(),
            &dir,
        );
        Reloader {
            sources: Sources {
                dir: Arc::new(DirSource),
                oci: Arc::new(oci),
            },
            dir,
            runtime,
            registry,
            metrics,
            store,
            settings,
            digests: Arc::new(ModuleDigests::default()),
        }
    }

    /// Pulls `oci://` modules with `config` (plain-HTTP registries,
    /// credentials, poll interval, backoff) instead of the defaults.
    pub fn with_registry(mut self, config: RegistryConfig) -> Self {
        self.sources.oci = Arc::new(OciSource::new(
            RegistryClient::new(config),
            self.store.clone(),
            &self.dir,
        ));
        self
    }

    /// Where modules come from.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The policy directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Where snapshots are published.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The version store.
    pub fn store(&self) -> &VersionStore {
        &self.store
    }

    /// Loads the initial policy set: one reconciliation, plus the follow-up
    /// pass it asks for, so that the set is settled when this returns.
    pub async fn load_initial(&self) {
        // "Ready" means the initial set is loaded: its compiles are waited
        // for to the end (the ceiling); later passes wait only briefly
        // (`CompileWorker::load_wait`) and let a long compile outlive them.
        if self.reconcile().await {
            self.reconcile().await;
        }
        // Registry modules: ask the registry once before "ready" (a
        // registry that does not answer leaves what earlier runs kept).
        if self.sources.oci.has_pending() {
            self.sources.oci.poll_pending().await;
            self.reconcile().await;
        }
        self.runtime.initial_load_done();
    }

    /// Runs one reconciliation off the async threads. Returns whether a
    /// follow-up pass is wanted (a manifest went missing and is unloaded only
    /// if it is still missing then).
    pub async fn reconcile(&self) -> bool {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.reconcile_blocking()).await {
            Ok(followup) => followup,
            Err(e) => {
                tracing::error!(error = %e, "reconciliation task failed");
                false
            }
        }
    }

    /// Reconciles after changes (debounced) and every `rescan`, until
    /// `shutdown`. If the directory cannot be watched, the periodic rescan
    /// still runs, so hot reload degrades to polling instead of stopping.
    pub async fn watch(self, shutdown: CancellationToken) {
        use notify::Watcher;
        let (tx, mut rx) = mpsc::channel::<()>(1);
        // A compile that outlived its pass asks for another when it is done.
        let compiled = tx.clone();
        self.runtime.on_compiled(move || {
            let _ = compiled.try_send(());
        });
        // So does a pull, a registry failure or a recovery.
        let pulled = tx.clone();
        let poller = tokio::spawn(self.sources.oci.clone().run(shutdown.clone(), move || {
            let _ = pulled.try_send(());
        }));
        let watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                // Any event that may change a file means "look again"; a
                // full channel already says so.
                Ok(e) if may_change_files(&e) => {
                    let _ = tx.try_send(());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "file watcher error"),
            })
            .and_then(|mut w| {
                w.watch(&self.dir, notify::RecursiveMode::NonRecursive)
                    .map(|()| w)
            });
        match &watcher {
            Ok(_) => tracing::info!(dir = %self.dir.display(), "watching the policy directory"),
            Err(e) => tracing::error!(
                dir = %self.dir.display(), error = %e, rescan = ?self.settings.rescan,
                "cannot watch the policy directory; falling back to periodic rescans"
            ),
        }
        let mut rescan = tokio::time::interval(self.settings.rescan);
        rescan.tick().await;
        loop {
            let followup = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = rescan.tick() => self.reconcile().await,
                Some(()) = rx.recv() => {
                    if !self.quiet(&mut rx, &shutdown).await {
                        break;
                    }
                    self.reconcile().await
                }
            };
            if followup {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.settings.debounce) => { self.reconcile().await; }
                }
            }
        }
        drop(watcher);
        let _ = poller.await;
    }

    /// Debounce: waits until no event arrived for `debounce`, or at most
    /// [`MAX_DEBOUNCE`] so that a steady trickle of events cannot starve
    /// reloads. Returns false on shutdown.
    async fn quiet(&self, rx: &mut mpsc::Receiver<()>, shutdown: &CancellationToken) -> bool {
        let give_up = tokio::time::Instant::now() + MAX_DEBOUNCE;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep_until(give_up) => return true,
                _ = tokio::time::sleep(self.settings.debounce) => return true,
                Some(()) = rx.recv() => continue,
            }
        }
    }

    /// One reconciliation pass. Blocking: reads files and compiles. Returns
    /// whether a follow-up pass is wanted.
    ///
    /// The pass works on a copy of the current snapshot and publishes it
    /// once, if anything changed: routes, then each manifest, then the sweep
    /// of manifests that disappeared.
    pub fn reconcile_blocking(&self) -> bool {
        let _writer = self.registry.writer();
        let mut next: Snapshot = (*self.registry.snapshot()).clone();
        let mut changed = self.reconcile_routes(&mut next);
        changed |= self.reconcile_rollout(&mut next);
        let manifests = match manifest_files(&self.dir) {
            Ok(m) => m,
            Err(e) => {
                // A directory we cannot read says nothing about the policies:
                // keep serving all of them.
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the policy directory; keeping every loaded policy");
                self.metrics.control.reload("directory", false);
                if changed {
                    next.plan_routes();
                    self.registry.publish(next);
                }
                return false;
            }
        };
        let mut seen = BTreeSet::new();
        let files: Vec<(String, Files)> = manifests
            .iter()
            .filter_map(|path| {
                let key = path.file_stem().and_then(|s| s.to_str())?.to_string();
                Some((key.clone(), Files::read(path, &self.sources, &self.digests)))
            })
            .collect();
        let loads = self.load_changed(&next, &files);
        for ((key, files), load) in files.iter().zip(loads) {
            let pins: Vec<(String, String)> = next
                .rollout
                .routes
                .iter()
                .filter(|(_, r)| r.policy == *key)
                .filter_map(|(route, r)| Some((route.clone(), r.stable.clone()?)))
                .collect();
            let entry = next
                .policies
                .entry(key.clone())
                .or_insert_with(PolicyEntry::empty);
            changed |= self.reconcile_policy(key, entry, files, load, &pins);
            seen.insert(key.clone());
        }
        let sweep = sweep_missing(&mut next, &seen);
        changed |= self.reconcile_versions(&mut next);
        changed |= self.reconcile_oci(&mut next, &files);
        if changed || sweep.changed {
            next.plan_routes();
            let active = next
                .policies
                .values()
                .filter(|e| e.active.is_some())
                .count();
            self.metrics.control.policies_active.set(active as i64);
            self.registry.publish(next);
        }
        sweep.followup
    }

    /// Keeps polling only the registry references the manifests name, and
    /// puts the registry source's status into `next`. Returns whether it
    /// changed.
    fn reconcile_oci(&self, next: &mut Snapshot, files: &[(String, Files)]) -> bool {
        let wanted: BTreeSet<String> = files
            .iter()
            .filter_map(|(_, f)| match &f.parsed {
                Ok((m, _)) => match &m.module {
                    ModuleRef::Oci(r) => Some(r.without_scheme().to_string()),
                    ModuleRef::File(_) => None,
                },
                Err(_) => None,
            })
            .collect();
        self.sources.oci.retain(&wanted);
        let status = self.sources.oci.status();
        if status == next.oci {
            return false;
        }
        next.oci = status;
        true
    }

    /// Reads `routes.toml` into `next`. Returns whether anything changed.
    fn reconcile_routes(&self, next: &mut Snapshot) -> bool {
        match RoutesFile::load(&self.dir) {
            Ok(r) => {
                let routes = r.routes;
                let default = r.default.or_else(|| self.settings.default_route.clone());
                if routes == next.routes
                    && default == next.default_route
                    && next.routes_failure.is_none()
                {
                    return false;
                }
                tracing::info!(
                    routes = ?routes.keys().collect::<Vec<_>>(),
                    default = default.as_deref().unwrap_or("-"),
                    "routes loaded from {ROUTES_FILE}"
                );
                self.metrics.control.reload("routes", true);
                next.routes = routes;
                next.default_route = default;
                next.routes_failure = None;
                true
            }
            Err(e) => {
                if next.routes_failure.as_ref().map(|f| &f.error) == Some(&e.to_string()) {
                    return false;
                }
                tracing::error!(error = %e, "routes file refused; keeping the previous routes");
                self.metrics.control.reload("routes", false);
                next.routes_failure = Some(Failure {
                    error: e.to_string(),
                    at: SystemTime::now(),
                });
                true
            }
        }
    }

    /// Reads `rollout.json` into `next` (a missing file is an empty state).
    /// Returns whether anything changed.
    fn reconcile_rollout(&self, next: &mut Snapshot) -> bool {
        match read_rollout(&self.dir) {
            Ok(ReadRollout { state, fault: None }) => {
                if state == next.rollout && next.rollout_failure.is_none() {
                    return false;
                }
                next.rollout = state;
                next.rollout_failure = None;
                true
            }
            Ok(ReadRollout {
                state,
                fault: Some(error),
            }) => {
                // The file is corrupt: serve the last good state (fail safe:
                // a killed route stays killed across a restart) and say so.
                if state == next.rollout
                    && next.rollout_failure.as_ref().map(|f| &f.error) == Some(&error)
                {
                    return false;
                }
                tracing::error!(%error, "rollout state refused; serving the last good copy");
                self.metrics.control.reload("rollout", false);
                next.rollout = state;
                next.rollout_failure = Some(Failure {
                    error,
                    at: SystemTime::now(),
                });
                true
            }
            Err(error) => {
                if next.rollout_failure.as_ref().map(|f| &f.error) == Some(&error) {
                    return false;
                }
                tracing::error!(%error, "rollout state refused; keeping the previous state");
                self.metrics.control.reload("rollout", false);
                next.rollout_failure = Some(Failure {
                    error,
                    at: SystemTime::now(),
                });
                true
            }
        }
    }

    /// Loads the stored versions the rollout state refers to (pinned stable,
    /// canary, shadows) that are not loaded yet, or were loaded with other
    /// settings, and drops those it no longer refers to. Returns whether
    /// anything changed.
    fn reconcile_versions(&self, next: &mut Snapshot) -> bool {
        let wanted = wanted_versions(next);
        let mut changed = false;
        for (key, entry) in next.policies.iter_mut() {
            let want = wanted.get(key.as_str());
            let before = entry.versions.len();
            entry
                .versions
                .retain(|d, _| want.is_some_and(|w| w.contains(d)));
            changed |= entry.versions.len() != before;
            let Some(directory) = entry.active.clone() else {
                continue;
            };
            for digest in want.into_iter().flatten() {
                let current = entry.version(digest);
                let fresh = current.as_ref().is_some_and(|v| {
                    v.manifest.settings_json == directory.manifest.settings_json
                        && v.manifest.limits == directory.manifest.limits
                });
                if fresh
                    || entry.version_failures.get(digest) == Some(&directory.manifest.settings_json)
                {
                    continue;
                }
                let loaded = self
                    .store
                    .read_module(key, digest)
                    .map_err(|e| format!("version {digest} of `{key}` is not stored: {e}"))
                    .and_then(|wasm| {
                        self.activate(&directory.manifest, &wasm)
                            .map_err(|f| format!("stored version {digest}: {}", f.error))
                    })
                    .and_then(|v| {
                        if v.policy.identity().digest == *digest {
                            Ok(v)
                        } else {
                            Err(format!("stored module of {digest} has another digest"))
                        }
                    });
                changed = true;
                match loaded {
                    Ok(v) => {
                        tracing::info!(policy = %key, %digest, "stored version loaded for the rollout");
                        entry.versions.insert(digest.clone(), Arc::new(v));
                        entry.version_failures.remove(digest);
                    }
                    Err(error) => {
                        tracing::error!(policy = %key, %digest, error = %crate::sandbox::visible(&error), "stored version did not load");
                        entry
                            .version_failures
                            .insert(digest.clone(), directory.manifest.settings_json.clone());
                    }
                }
            }
        }
        changed
    }

    /// Loads, in parallel, the policies whose files changed since their last
    /// attempt (`None` for the others), so that one slow compile does not
    /// hold up the others' loads: a pass then takes about as long as its
    /// slowest load, which the compile ceilings bound
    /// ([`crate::CompileLimits`]). At most as many loads run at once as
    /// there are cores (two at least); each compile uses the engine's
    /// parallel compilation too.
    fn load_changed(
        &self,
        next: &Snapshot,
        files: &[(String, Files)],
    ) -> Vec<Option<Result<ActivePolicy, LoadFailure>>> {
        let todo: Vec<usize> = (0..files.len())
            .filter(|&i| {
                let (key, f) = &files[i];
                next.policies.get(key).map(|e| e.attempted) != Some(f.fingerprint())
            })
            .collect();
        let mut results: Vec<Option<Result<ActivePolicy, LoadFailure>>> =
            (0..files.len()).map(|_| None).collect();
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2)
            .min(todo.len());
        let next_job = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let j = next_job.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = todo.get(j) else { break };
                        let loaded = self.load(&files[i].1);
                        done.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((i, loaded));
                    }
                });
            }
        });
        for (i, loaded) in done.into_inner().unwrap_or_else(|e| e.into_inner()) {
            results[i] = Some(loaded);
        }
        results
    }

    /// Brings one policy's entry up to date with its files, given the load
    /// [`load_changed`](Self::load_changed) made of them (`None`: their
    /// content is what was last attempted). Returns whether the entry changed.
    fn reconcile_policy(
        &self,
        key: &str,
        entry: &mut PolicyEntry,
        files: &Files,
        load: Option<Result<ActivePolicy, LoadFailure>>,
        pins: &[(String, String)],
    ) -> bool {
        let reappeared = std::mem::take(&mut entry.missing);
        let fingerprint = files.fingerprint();
        let Some(load) = load else {
            return self.check_wait(key, entry) || reappeared;
        };
        match load {
            Err(LoadFailure {
                error,
                compiling: true,
                ..
            }) => {
                // Not a failure, and not attempted: the next pass (started
                // when the compile finishes) loads it, from the cache.
                tracing::info!(
                    policy = %key, status = %crate::sandbox::visible(&error),
                    serving = entry.active.as_ref().map(|a| a.policy.identity().version.as_str()).unwrap_or("nothing (never loaded)"),
                    "policy compiling in the background; it loads when the compile finishes"
                );
                entry.attempted = [0; 32];
                entry.transient = None;
            }
            Err(LoadFailure {
                error,
                waiting: true,
                ..
            }) => {
                // Logged once per change of the files, not counted as a
                // failed reload until the grace period runs out.
                tracing::info!(
                    policy = %key, waiting = %crate::sandbox::visible(&error),
                    grace_s = self.settings.module_grace.as_secs(),
                    "policy waiting for its module; not a failure until the grace period runs out"
                );
                entry.waiting = Some(Waiting {
                    fingerprint,
                    since: std::time::Instant::now(),
                    overdue: false,
                });
                entry.transient = None;
                entry.attempted = fingerprint;
                entry.failure = Some(Failure {
                    error,
                    at: SystemTime::now(),
                });
            }
            Ok(active) => {
                entry.waiting = None;
                log_activation(key, entry.active.as_deref(), &active, pins);
                self.metrics.control.reload(key, true);
                entry.active = Some(Arc::new(active));
                entry.failure = None;
                entry.transient = None;
                entry.attempted = fingerprint;
            }
            Err(LoadFailure { error, retry, .. }) => {
                entry.waiting = None;
                // A transient failure (I/O, a deadline on a busy machine) is
                // tried again on the next passes, at most MAX_LOAD_ATTEMPTS
                // times for the same files: a failure that repeats (a
                // `describe` that always times out, a component that never
                // instantiates) cannot change until the files do, so it is
                // then neither retried, nor logged, nor counted again.
                let attempts = match entry.transient {
                    Some((fp, n)) if fp == fingerprint => n + 1,
                    _ => 1,
                };
                let again = retry && attempts < MAX_LOAD_ATTEMPTS;
                entry.transient = retry.then_some((fingerprint, attempts));
                entry.attempted = if again { [0; 32] } else { fingerprint };
                let error = if retry && !again {
                    format!("{error} (failed {attempts} times; not retried until its files change)")
                } else {
                    error
                };
                tracing::error!(
                    policy = %key, error = %crate::sandbox::visible(&error), retry = again,
                    serving = entry.active.as_ref().map(|a| a.policy.identity().version.as_str()).unwrap_or("nothing (never loaded)"),
                    "policy load failed; the last good version keeps serving"
                );
                self.metrics.control.reload(key, false);
                entry.failure = Some(Failure {
                    error,
                    at: SystemTime::now(),
                });
            }
        }
        true
    }

    /// A manifest still waiting for its module after the grace period: the
    /// wait becomes a failed load, logged and counted once. Returns whether
    /// the entry changed.
    fn check_wait(&self, key: &str, entry: &mut PolicyEntry) -> bool {
        let Some(w) = entry.waiting.as_mut() else {
            return false;
        };
        if w.overdue || w.since.elapsed() < self.settings.module_grace {
            return false;
        }
        w.overdue = true;
        let waited = w.since.elapsed().as_secs();
        let error = entry
            .failure
            .as_ref()
            .map(|f| f.error.clone())
            .unwrap_or_default();
        tracing::error!(
            policy = %key, error = %crate::sandbox::visible(&error), waited_s = waited,
            serving = entry.active.as_ref().map(|a| a.policy.identity().version.as_str()).unwrap_or("nothing (never loaded)"),
            "policy module still missing after the grace period"
        );
        self.metrics.control.reload(key, false);
        entry.failure = Some(Failure {
            error: format!("{error}: still missing after {waited} s"),
            at: SystemTime::now(),
        });
        true
    }

    /// Loads a manifest and its module, read once, into an [`ActivePolicy`],
    /// and records the version in the store.
    fn load(&self, files: &Files) -> Result<ActivePolicy, LoadFailure> {
        let (manifest, module) = match &files.parsed {
            Ok(parsed) => parsed,
            Err(e @ ManifestError::Io { .. }) => return Err(LoadFailure::retry(e.to_string())),
            Err(e) => return Err(LoadFailure::fatal(e.to_string())),
        };
        // Not read this pass (unchanged since the digests read it), but
        // loaded again (a retry): read it now.
        let read_now;
        let module = match module {
            Module::Read(m) => m,
            Module::Unchanged => {
                read_now = self.sources.fetch_for(
                    &manifest.key,
                    &manifest.module,
                    manifest.verify_key.as_deref(),
                );
                &read_now
            }
        };
        let fetched = module.as_ref().map_err(|e| match e {
            // Deploying the manifest before its module is a normal order:
            // the module's arrival changes the files and loads it. So is a
            // registry module before its first pull.
            SourceError::Missing { .. } | SourceError::NotPulled { pending: true, .. } => {
                LoadFailure {
                    error: format!("{e} (named by {})", manifest.path.display()),
                    retry: false,
                    waiting: true,
                    compiling: false,
                }
            }
            SourceError::Io { .. } => LoadFailure::retry(e.to_string()),
            // Tried again when the registry source has something new.
            SourceError::NotPulled { .. } | SourceError::Unverified { .. } => {
                LoadFailure::fatal(e.to_string())
            }
        })?;
        let active = self
            .activate(manifest, &fetched.bytes)
            .map_err(|f| LoadFailure {
                error: format!("{}: {}", fetched.origin, f.error),
                ..f
            })?;
        let record = version_record(&active, fetched.origin.clone(), fetched.by);
        let pinned = pinned_versions(&self.registry.snapshot().rollout, &manifest.key);
        if let Err(e) = self.store.put(&record, &fetched.bytes, &pinned) {
            // The store serves rollbacks and canaries; serving goes on without it.
            tracing::warn!(policy = %manifest.key, error = %e, "cannot record the version in the store");
        }
        self.sources
            .accepted(&manifest.key, &manifest.module, &record.digest);
        Ok(active)
    }

    /// [`activate`](Self::activate), waiting for a long compile to the end:
    /// a load returns [`LoadError::Compiling`] after the worker's brief
    /// `load_wait` (so a reload pass never waits on one slow policy), but an
    /// upload has nothing else to do and its caller is waiting for the
    /// answer, so it loads again (joining the compile in progress) until
    /// the compile finishes or its ceiling passes (plus the worker's 5 s
    /// margin). A Python component compiles for tens of seconds: without
    /// this its first upload is always refused as "still compiling".
    pub(crate) fn activate_waiting(
        &self,
        manifest: &Manifest,
        module: &[u8],
    ) -> Result<ActivePolicy, LoadFailure> {
        let until = Instant::now() + self.runtime.config().compile.timeout + Duration::from_secs(5);
        loop {
            let started = Instant::now();
            match self.activate(manifest, module) {
                Err(f) if f.compiling && Instant::now() < until => {
                    tracing::info!(policy = %manifest.key, "upload still compiling; waiting for it (at most --max-compile-ms)");
                    // A very short `load_wait` must not make this a busy loop.
                    let floor = Duration::from_millis(100);
                    if let Some(rest) = floor.checked_sub(started.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                other => return other,
            }
        }
    }

    /// Loads `module` under `manifest` (settings, limits, concurrency). The
    /// error does not name a file: the caller knows where the bytes came from.
    pub(crate) fn activate(
        &self,
        manifest: &Manifest,
        module: &[u8],
    ) -> Result<ActivePolicy, LoadFailure> {
        // A long compile's progress lines name the policy and its module.
        let _load = tracing::info_span!(
            "load",
            policy = %manifest.key,
            module = %manifest.module
        )
        .entered();
        let policy = Policy::load(
            &self.runtime,
            module,
            &manifest.settings_json,
            manifest.limits,
        )
        .map_err(|e| {
            let retry = matches!(
                &e,
                LoadError::Validation { error, .. }
                    if matches!(error.kind(), CallErrorKind::Timeout | CallErrorKind::Instantiate)
            );
            LoadFailure {
                error: e.to_string(),
                retry,
                waiting: false,
                compiling: matches!(e, LoadError::Compiling { .. }),
            }
        })?;
        Ok(ActivePolicy {
            permits: Arc::new(Semaphore::new(manifest.concurrency.max)),
            queue: Arc::new(Semaphore::new(
                manifest.concurrency.max + manifest.concurrency.queue,
            )),
            loaded_at: SystemTime::now(),
            metrics: self
                .metrics
                .policies
                .for_policy(&manifest.key, policy.identity()),
            policy,
            manifest: manifest.clone(),
            quick_calls: AtomicU32::new(0),
        })
    }
}

/// The record of a loaded version, for the store.
pub(crate) fn version_record(active: &ActivePolicy, source: String, by: &str) -> VersionRecord {
    let info = active.policy.info();
    VersionRecord {
        digest: info.digest.clone(),
        policy: active.key().to_string(),
        name: info.name.clone(),
        version: info.version.clone(),
        sdk_version: info.sdk_version.clone(),
        size_bytes: info.size_bytes,
        source,
        by: by.to_string(),
        loaded_at_ms: crate::control::registry::unix_ms::millis(&active.loaded_at),
        settings_sha256: active.policy.settings_sha256().to_string(),
    }
}

/// Versions of `key` the rollout state refers to (never pruned from the store).
pub(crate) fn pinned_versions(rollout: &RolloutFile, key: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rollout.routes.values() {
        if r.policy == key {
            out.extend(r.own_versions(true).map(String::from));
        }
        out.extend(
            r.shadow_versions()
                .filter(|(k, _)| k == key)
                .map(|(_, d)| d),
        );
    }
    out
}

/// Stored versions that must be loaded, by policy key: the pinned stable
/// versions and canaries of the routes whose state is fresh, and shadows
/// named with a digest.
fn wanted_versions(next: &Snapshot) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut out: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for (route, r) in &next.rollout.routes {
        let policy = next
            .routes
            .get(route)
            .map_or(route.as_str(), |c| c.policy.as_str());
        if r.policy == policy && next.policies.contains_key(policy) {
            let set = out.entry(policy.to_string()).or_default();
            set.extend(r.own_versions(false).map(String::from));
        }
        for (key, digest) in r.shadow_versions() {
            if next.policies.contains_key(&key) {
                out.entry(key).or_default().insert(digest);
            }
        }
    }
    out
}

/// What [`sweep_missing`] did.
struct Sweep {
    /// The snapshot changed.
    changed: bool,
    /// A manifest went missing: look again shortly before unloading it.
    followup: bool,
}

/// Handles the policies whose manifest was not `seen` in this pass. A
/// manifest that disappeared is unloaded only if it is still gone on a
/// follow-up pass: editors that delete and rewrite must not cause 404s.
fn sweep_missing(next: &mut Snapshot, seen: &BTreeSet<String>) -> Sweep {
    let mut sweep = Sweep {
        changed: false,
        followup: false,
    };
    next.policies.retain(|key, entry| {
        if seen.contains(key) {
            return true;
        }
        sweep.changed = true;
        if entry.missing {
            tracing::info!(policy = %key, "manifest removed; policy unloaded");
            false
        } else {
            // Recorded in the published snapshot so the next pass sees it.
            entry.missing = true;
            sweep.followup = true;
            true
        }
    });
    sweep
}

/// Loads of the same files that may fail transiently before the failure
/// is taken as definitive (until the files change).
pub const MAX_LOAD_ATTEMPTS: u32 = 3;

/// Longest wait for the directory to go quiet before reconciling anyway.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// Why a load failed, and whether trying the same files again may succeed.
pub(crate) struct LoadFailure {
    pub(crate) error: String,
    retry: bool,
    /// The manifest's module is not there (yet).
    waiting: bool,
    /// The module compiles in the background: not a failure; loaded again
    /// when the compile finishes.
    compiling: bool,
}

impl LoadFailure {
    fn retry(error: String) -> Self {
        LoadFailure {
            error,
            retry: true,
            waiting: false,
            compiling: false,
        }
    }
    fn fatal(error: String) -> Self {
        LoadFailure {
            error,
            retry: false,
            waiting: false,
            compiling: false,
        }
    }
}

/// A manifest and its module, read once: the fingerprint and the load see
/// the same bytes, and the manifest is parsed once per pass.
struct Files {
    /// The parsed manifest and its module, from its source.
    parsed: Result<(Manifest, Module), ManifestError>,
    /// SHA-256 over both files' contents, computed once at read.
    fingerprint: [u8; 32],
}

/// A manifest's module in one pass.
enum Module {
    /// Read from its source (or why not).
    Read(Result<Fetched, SourceError>),
    /// A module file the digests know as unchanged since they read it
    /// ([`ModuleDigests`]): not read, since nothing will load it unless its
    /// fingerprint changed; [`Reloader::load`] reads it if something does.
    Unchanged,
}

impl Files {
    fn read(manifest_path: &Path, sources: &Sources, digests: &ModuleDigests) -> Self {
        let raw = std::fs::read(manifest_path);
        let mut module_digest = None;
        let parsed = match &raw {
            Ok(text) => Manifest::parse(manifest_path, &String::from_utf8_lossy(text)).map(|m| {
                let fetch = || sources.fetch_for(&m.key, &m.module, m.verify_key.as_deref());
                let module = match &m.module {
                    ModuleRef::File(path) => match digests.unchanged(path) {
                        Some(digest) => {
                            module_digest = Some(digest);
                            Module::Unchanged
                        }
                        None => {
                            let before = Stat::of(path);
                            let fetched = fetch();
                            if let Ok(f) = &fetched {
                                module_digest = Some(digests.read(path, before, &f.bytes));
                            }
                            Module::Read(fetched)
                        }
                    },
                    ModuleRef::Oci(_) => {
                        let fetched = fetch();
                        if let Ok(f) = &fetched {
                            module_digest = Some(Sha256::digest(&f.bytes).into());
                        }
                        Module::Read(fetched)
                    }
                };
                (m, module)
            }),
            Err(e) => Err(ManifestError::Io {
                path: manifest_path.display().to_string(),
                error: std::io::Error::new(e.kind(), e.to_string()),
            }),
        };
        let mut h = Sha256::new();
        let manifest = raw.as_deref().unwrap_or_default();
        h.update((manifest.len() as u64).to_le_bytes());
        h.update(manifest);
        match (&parsed, module_digest) {
            (_, Some(digest)) => h.update(digest),
            // A registry module not pulled yet: its reason is part of what
            // was tried (the first pull's failure is reported once).
            (
                Ok((
                    _,
                    Module::Read(Err(
                        e @ (SourceError::NotPulled { .. } | SourceError::Unverified { .. }),
                    )),
                )),
                None,
            ) => h.update(e.to_string()),
            _ => {}
        }
        let fingerprint = h.finalize().into();
        Files {
            parsed,
            fingerprint,
        }
    }

    /// SHA-256 over both files' contents (an unreadable file hashes as empty).
    fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

/// Whether a file watcher event may mean changed content: everything but
/// an open, a read or a close after reading. The server opens its own
/// `.oasis-replicas/` directory to sync each heartbeat (every second), which
/// the watcher reports as an access of the policy directory; taken as a
/// change, it made every heartbeat a full pass that read and hashed every
/// module (a 19 MB Python component: 12% of a core on an idle server).
fn may_change_files(e: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match e.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The manifests of `dir`, sorted (every `*.toml` except `routes.toml` and
/// hidden files).
fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_name()
                    .is_some_and(|n| n != ROUTES_FILE && !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Logs an activation, saying what changed against the version it
/// replaces: a new module, only the settings, only the limits or
/// concurrency, or a new module under the name and version already served
/// (responses and metrics would not tell them apart by version: warned).
/// `pins` are the routes (with their versions) whose rollout state pins
/// another version of this policy: they keep serving it, and the line says
/// so, since "activated" alone reads as "now serving".
fn log_activation(
    key: &str,
    previous: Option<&ActivePolicy>,
    active: &ActivePolicy,
    pins: &[(String, String)],
) {
    use crate::cache::short;
    let id = active.policy.identity();
    let settings = short(active.policy.settings_sha256());
    let file = &active.manifest.module;
    let pinned_elsewhere: Vec<String> = pins
        .iter()
        .filter(|(_, digest)| *digest != id.digest)
        .map(|(route, digest)| format!("{route}={}", short_digest(digest)))
        .collect();
    if !pinned_elsewhere.is_empty() {
        let pinned = pinned_elsewhere.join(" ");
        tracing::warn!(policy = %key, version = %id.version, digest = %id.digest, settings, %file, %pinned,
            "policy activated in the directory, but pinned routes keep serving their pinned version (`oasis rollout unpin ROUTE` serves the directory's)");
        return;
    }
    let Some(prev_active) = previous else {
        tracing::info!(policy = %key, version = %id.version, digest = %id.digest, settings, %file, "policy activated");
        return;
    };
    let prev = prev_active.policy.identity();
    let old_settings = prev
        .settings_sha256
        .as_deref()
        .map(short)
        .unwrap_or_default();
    if prev.digest == id.digest && old_settings == settings {
        // Neither module nor settings: the manifest's limits or
        // concurrency changed (saying "settings changed" with two equal
        // hashes sent operators looking for a difference that is not there).
        tracing::info!(policy = %key, version = %id.version, digest = %id.digest,
            settings, %file, "policy limits changed (same module, same settings)");
    } else if prev.digest == id.digest {
        tracing::info!(policy = %key, version = %id.version, digest = %id.digest,
            settings, old_settings, %file, "policy settings changed (same module)");
    } else if prev.name == id.name && prev.version == id.version {
        tracing::warn!(policy = %key, version = %id.version, digest = %id.digest,
            old_digest = %prev.digest, settings, %file,
            "policy activated: a new module under the version already served; bump the version so responses and metrics tell them apart");
    } else {
        tracing::info!(policy = %key, version = %id.version, digest = %id.digest,
            old_version = %prev.version, settings, %file, "policy activated");
    }
}

/// `sha256:` and the first 12 hex digits (a prefix the commands accept).
fn short_digest(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() > 12 => format!("sha256:{}", &h[..12]),
        _ => digest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RemoveKind,
        RenameMode,
    };

    use super::may_change_files;

    #[test]
    fn only_opens_and_reads_are_not_a_reason_to_look_again() {
        let event =
            |kind| notify::Event::new(kind).add_path("/srv/policies/.oasis-replicas".into());
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Any),
        ] {
            assert!(!may_change_files(&event(kind)), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
            EventKind::Other,
        ] {
            assert!(may_change_files(&event(kind)), "{kind:?}");
        }
    }
}
