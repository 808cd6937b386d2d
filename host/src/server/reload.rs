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
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::columnar::feature_columns;
use crate::policy::Policy;
use crate::runtime::Runtime;
use crate::server::manifest::{Manifest, ROUTES_FILE, RoutesFile};
use crate::server::metrics::{Metrics, ReloadLabels};
use crate::server::registry::{ActivePolicy, Failure, PolicyEntry, Registry, Snapshot};

/// Reconciles a policy directory into a [`Registry`].
#[derive(Clone)]
pub struct Reloader {
    /// The watched directory.
    pub dir: PathBuf,
    /// Default route when `routes.toml` names none.
    pub default_route: Option<String>,
    /// Runtime used to compile and validate.
    pub runtime: Runtime,
    /// Where snapshots are published.
    pub registry: Arc<Registry>,
    /// Reload metrics.
    pub metrics: Arc<Metrics>,
    /// Quiet period after the last event before reconciling.
    pub debounce: Duration,
    /// Safety-net rescan interval.
    pub rescan: Duration,
}

impl Reloader {
    /// Runs one reconciliation off the async threads.
    pub async fn reconcile(&self) {
        let this = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || this.reconcile_blocking()).await {
            tracing::error!(error = %e, "reconciliation task failed");
        }
    }

    /// Watches the directory until `shutdown`, reconciling after changes.
    ///
    /// # Errors
    /// When the directory cannot be watched at all.
    pub async fn watch(self, shutdown: CancellationToken) -> Result<(), notify::Error> {
        use notify::Watcher;
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                match res {
                    // Any event means "look again"; a full channel already says so.
                    Ok(_) => {
                        let _ = tx.try_send(());
                    }
                    Err(e) => tracing::warn!(error = %e, "file watcher error"),
                }
            })?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
        tracing::info!(dir = %self.dir.display(), "watching the policy directory");
        let mut rescan = tokio::time::interval(self.rescan);
        rescan.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = rescan.tick() => self.reconcile().await,
                Some(()) = rx.recv() => {
                    // Debounce: wait until no event arrived for `debounce`.
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(self.debounce) => break,
                            Some(()) = rx.recv() => continue,
                        }
                    }
                    self.reconcile().await;
                }
            }
        }
        drop(watcher);
        Ok(())
    }

    /// One reconciliation pass. Blocking: reads files and compiles.
    pub fn reconcile_blocking(&self) {
        let old = self.registry.snapshot();
        let mut next: Snapshot = (*old).clone();
        let mut changed = false;

        match RoutesFile::load(&self.dir) {
            Ok(r) => {
                let routes = r.routes.into_iter().map(|(k, v)| (k, v.policy)).collect();
                let default = r.default.or_else(|| self.default_route.clone());
                if routes != next.routes
                    || default != next.default_route
                    || next.routes_failure.is_some()
                {
                    changed = true;
                    next.routes = routes;
                    next.default_route = default;
                    next.routes_failure = None;
                }
            }
            Err(e) => {
                if next.routes_failure.as_ref().map(|f| &f.error) != Some(&e.to_string()) {
                    tracing::error!(error = %e, "routes file refused; keeping the previous routes");
                    self.metrics
                        .reloads
                        .get_or_create(&ReloadLabels {
                            policy: "routes".into(),
                            result: "failed",
                        })
                        .inc();
                    next.routes_failure = Some(Failure {
                        error: e.to_string(),
                        at: SystemTime::now(),
                    });
                    changed = true;
                }
            }
        }

        let mut seen = BTreeSet::new();
        for path in manifest_files(&self.dir) {
            let Some(key) = path.file_stem().and_then(|s| s.to_str()).map(String::from) else {
                continue;
            };
            seen.insert(key.clone());
            let fingerprint = fingerprint(&path);
            if next
                .policies
                .get(&key)
                .is_some_and(|e| e.attempted == fingerprint)
            {
                continue;
            }
            changed = true;
            let entry = next.policies.entry(key.clone()).or_insert(PolicyEntry {
                active: None,
                failure: None,
                attempted: fingerprint,
            });
            entry.attempted = fingerprint;
            match self.load(&path) {
                Ok(active) => {
                    tracing::info!(
                        policy = %key, version = %active.policy.info().version,
                        digest = %active.policy.info().digest, file = %active.manifest.module.display(),
                        "policy activated"
                    );
                    self.metrics
                        .reloads
                        .get_or_create(&ReloadLabels {
                            policy: key.clone(),
                            result: "ok",
                        })
                        .inc();
                    entry.active = Some(Arc::new(active));
                    entry.failure = None;
                }
                Err(error) => {
                    tracing::error!(
                        policy = %key, %error,
                        serving = entry.active.as_ref().map(|a| a.policy.info().version.as_str()).unwrap_or("nothing"),
                        "policy load failed; the last good version keeps serving"
                    );
                    self.metrics
                        .reloads
                        .get_or_create(&ReloadLabels {
                            policy: key.clone(),
                            result: "failed",
                        })
                        .inc();
                    entry.failure = Some(Failure {
                        error,
                        at: SystemTime::now(),
                    });
                }
            }
        }
        let before = next.policies.len();
        next.policies.retain(|key, _| {
            let keep = seen.contains(key);
            if !keep {
                tracing::info!(policy = %key, "manifest removed; policy unloaded");
            }
            keep
        });
        changed |= next.policies.len() != before;

        if changed {
            let active = next
                .policies
                .values()
                .filter(|e| e.active.is_some())
                .count();
            self.metrics.policies_active.set(active as i64);
            self.registry.publish(next);
        }
    }

    /// Loads one manifest and its module into an [`ActivePolicy`].
    fn load(&self, path: &Path) -> Result<ActivePolicy, String> {
        let manifest = Manifest::load(path).map_err(|e| e.to_string())?;
        let policy = Policy::load_file(
            &self.runtime,
            &manifest.module,
            &manifest.settings_json,
            manifest.limits,
        )
        .map_err(|e| format!("{}: {e}", manifest.module.display()))?;
        let info = policy.info();
        Ok(ActivePolicy {
            key: manifest.key.clone(),
            columns: feature_columns(info),
            permits: Arc::new(Semaphore::new(manifest.concurrency.max)),
            loaded_at: SystemTime::now(),
            metrics: self.metrics.for_policy(&manifest.key, &info.version),
            policy,
            manifest,
        })
    }
}

/// The manifests of `dir`, sorted (every `*.toml` except `routes.toml`).
fn manifest_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "toml")
                    && p.file_name().is_some_and(|n| n != ROUTES_FILE)
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect(),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read the policy directory");
            Vec::new()
        }
    };
    files.sort();
    files
}

/// SHA-256 over the manifest's bytes and its module's bytes (empty when
/// unreadable): changes whenever either file's content does.
fn fingerprint(manifest: &Path) -> [u8; 32] {
    let mut h = Sha256::new();
    let text = std::fs::read(manifest).unwrap_or_default();
    h.update((text.len() as u64).to_le_bytes());
    h.update(&text);
    if let Ok(m) = Manifest::parse(manifest, &String::from_utf8_lossy(&text)) {
        h.update(std::fs::read(&m.module).unwrap_or_default());
    }
    h.finalize().into()
}
