//! The rollout manager: the one writer of rollout state.
//!
//! Every change — an operator's through the admin API, or the host's own
//! automatic rollback — goes through [`RolloutManager::change`]:
//!
//! 1. load the committed document and its revision from the control store
//!    ([`ControlStore`]: the directory, or Redis);
//! 2. check and apply the change ([`RouteRollout`]'s operations);
//! 3. commit it with its audit entry if the store is still at that revision
//!    (compare-and-set; on a conflict, apply again from 1, at most
//!    [`MAX_ATTEMPTS`] times, unless the caller gave the revision it expects:
//!    then the conflict is the answer);
//! 4. with a shared store, copy the committed document into the local
//!    directory; reconcile, so the change serves from the next request on;
//!    other replicas follow the store (watcher, pub/sub, poll).
//!
//! Uploads are loaded through the same pipeline as files (compile, link,
//! metadata, settings, smoke call) with the policy's manifest, and stored
//! only if they load.

use std::path::PathBuf;
use std::sync::Arc;

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::control::audit::{AuditEntry, AuditLog, now_ms};
use crate::control::persist::DirLock;
use crate::control::reload::{Reloader, pinned_versions, version_record};
use crate::control::rollout::{
    RolloutError, RolloutFile, RouteRollout, VersionRef, is_digest, read_rollout,
};
use crate::control::store::{ControlStore, DirStore, StoreError, Versioned};
use crate::control::versions::{ResolveError, VersionRecord, VersionStore};

/// The full digest of the stored version of `policy` that `version` (a
/// digest or a unique prefix of one) names, as a change's error.
fn resolve(store: &VersionStore, policy: &str, version: &str) -> Result<String, ChangeError> {
    store.resolve(policy, version).map_err(|e| match e {
        ResolveError::Unknown { .. } => ChangeError::NotStored {
            policy: policy.to_string(),
            version: version.to_string(),
        },
        e => ChangeError::InvalidField {
            field: "version",
            message: e.to_string(),
        },
    })
}
use crate::telemetry::metrics::Metrics;

/// Largest rollback reason accepted, in bytes: it is recorded in the audit
/// log and in the route's status, whose entries are bounded.
pub const MAX_REASON_BYTES: usize = 4096;

/// Default largest module accepted by [`RolloutManager::upload`].
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 32 << 20;

/// Why a rollout change or an upload was not made. The transport maps each
/// to its status (`api::error`).
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No route or policy of that name.
    #[error("no route or policy named `{route}`")]
    UnknownRoute {
        /// What was asked for.
        route: String,
        /// The routes there are.
        known: Vec<String>,
    },
    /// No loaded policy with that key.
    #[error("no policy named `{policy}`")]
    UnknownPolicy {
        /// What was asked for.
        policy: String,
        /// The policies there are.
        known: Vec<String>,
    },
    /// A canary of a version the store does not hold.
    #[error("version {version} of `{policy}` is not stored")]
    NotStored {
        /// The route's policy.
        policy: String,
        /// The version asked for.
        version: String,
    },
    /// A request value the change refuses (a `version` that is not a
    /// digest, a `reason` over [`MAX_REASON_BYTES`]); `field` names it.
    #[error("`{field}`: {message}")]
    InvalidField {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A shadow that is neither a loaded policy nor a stored version.
    #[error("`{reference}` is not a loaded policy or a stored version")]
    UnknownShadow {
        /// The reference as given.
        reference: String,
    },
    /// A shadow reference that does not parse.
    #[error("{0}")]
    InvalidShadow(String),
    /// The change does not apply to the route's state, or a value is out of
    /// range.
    #[error(transparent)]
    Refused(#[from] RolloutError),
    /// The uploaded module does not load.
    #[error("{0}")]
    InvalidModule(String),
    /// The change was made on a revision that is no longer the committed
    /// one: the caller's `If-Match`, or another change won every retry.
    #[error("the rollout is at revision {current}, not {expected}: read it again and retry")]
    Conflict {
        /// The revision the change was made on.
        expected: u64,
        /// The committed revision now.
        current: u64,
    },
    /// The control store cannot be reached: no change is made (serving
    /// goes on with the last applied state).
    #[error(
        "rollout changes are refused: the control store is unavailable ({0}); serving goes on with the last applied state"
    )]
    StoreUnavailable(String),
    /// The state could not be read or written.
    #[error("{0}")]
    Internal(String),
}

/// A store failure as a change's error.
fn store_error(e: StoreError) -> ChangeError {
    match e {
        StoreError::Conflict { expected, current } => ChangeError::Conflict { expected, current },
        e @ StoreError::Unavailable { .. } => ChangeError::StoreUnavailable(e.to_string()),
        e @ StoreError::Invalid { .. } => ChangeError::Internal(e.to_string()),
    }
}

/// Attempts of a change without an expected revision when other changes
/// commit first.
pub const MAX_ATTEMPTS: u32 = 8;

/// A committed change: the route's state after it, and the revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The route's rollout state after the change.
    pub rollout: RouteRollout,
    /// The revision the change committed.
    pub revision: u64,
}

/// A change applied to a document, not committed yet.
struct Applied {
    doc: RolloutFile,
    after: RouteRollout,
    entry: AuditEntry,
}

/// `s`, cut to at most `max` characters (with `…` when cut), for echoing a
/// value back in an error.
fn truncated(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn internal(e: impl std::fmt::Display) -> ChangeError {
    ChangeError::Internal(e.to_string())
}

/// A guardrail breach to act on: roll `digest` back on `route`.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackRequest {
    /// The route.
    pub route: String,
    /// The canary version that breached.
    pub digest: String,
    /// The breach.
    pub reason: String,
}

/// The sending side of the rollback queue serving holds, and its receiving
/// side until the server's rollout manager takes it.
#[derive(Clone)]
pub struct RollbackRequests {
    tx: mpsc::UnboundedSender<RollbackRequest>,
    rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<RollbackRequest>>>>,
}

impl Default for RollbackRequests {
    fn default() -> Self {
        Self::new()
    }
}

impl RollbackRequests {
    /// A new queue.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        RollbackRequests {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }

    /// Queues a rollback. Unbounded, because each canary version trips at
    /// most once per route; never blocks the request path.
    pub fn request(&self, route: &str, digest: &str, reason: String) {
        let _ = self.tx.send(RollbackRequest {
            route: route.to_string(),
            digest: digest.to_string(),
            reason,
        });
    }

    /// The receiving side, once.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<RollbackRequest>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Name recorded for changes the host makes on its own.
pub const GUARDRAILS_ACTOR: &str = "oasis-guardrails";

/// A change of one route's rollout.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// Start a canary of `version` at `percent`, or change its percentage.
    Canary {
        /// The version (`sha256:…`), stored for the route's policy.
        version: String,
        /// Share of listeners, (0, 100].
        percent: f64,
    },
    /// Make the canary the stable version.
    Promote,
    /// Drop the pinned stable version: the route serves the directory's
    /// version again (audited as `unpin`, not counted as a rollback).
    Unpin,
    /// Stop the canary, else return to the previous stable version.
    Rollback {
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
    /// The host's own rollback of the canary `digest` after its guardrails
    /// tripped; refused if the canary is no longer that version.
    #[serde(skip)]
    GuardrailRollback {
        /// The canary version that breached.
        digest: String,
        /// The breach.
        reason: String,
    },
    /// Turn the kill switch on (serve the baseline) or off.
    Kill {
        /// On or off.
        on: bool,
        /// Why (recorded in the audit log), at most [`MAX_REASON_BYTES`].
        #[serde(default)]
        reason: Option<String>,
    },
    /// Add or remove a shadow.
    Shadow {
        /// `key` or `key@sha256:…`.
        policy: String,
        /// Add or remove.
        on: bool,
    },
}

impl Change {
    fn action(&self) -> &'static str {
        match self {
            Change::Canary { .. } => "canary.set",
            Change::Promote => "canary.promote",
            Change::Unpin => "unpin",
            Change::Rollback { .. } => "rollback",
            Change::GuardrailRollback { .. } => "rollback.automatic",
            Change::Kill { on: true, .. } => "route.kill",
            Change::Kill { on: false, .. } => "route.revive",
            Change::Shadow { on: true, .. } => "shadow.on",
            Change::Shadow { on: false, .. } => "shadow.off",
        }
    }
}

/// The one writer of rollout state and of the version store.
pub struct RolloutManager {
    reloader: Reloader,
    audit: Arc<AuditLog>,
    store: Arc<dyn ControlStore>,
    metrics: Arc<Metrics>,
    /// Largest module [`RolloutManager::upload`] is given by the admin API.
    pub max_upload_bytes: usize,
}

impl RolloutManager {
    /// The manager of `reloader`'s policy directory, auditing to `audit`.
    /// Its control store is the directory ([`DirStore`]) until
    /// [`RolloutManager::with_store`].
    pub fn new(reloader: Reloader, audit: AuditLog, metrics: Arc<Metrics>) -> Self {
        let audit = Arc::new(audit);
        RolloutManager {
            store: Arc::new(DirStore::new(reloader.dir(), audit.clone())),
            reloader,
            audit,
            metrics,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        }
    }

    /// The same manager, committing through `store`.
    pub fn with_store(mut self, store: Arc<dyn ControlStore>) -> Self {
        self.store = store;
        self
    }

    /// The control store.
    pub fn store(&self) -> &Arc<dyn ControlStore> {
        &self.store
    }

    /// The same manager, accepting uploads of up to `bytes`.
    pub fn with_max_upload_bytes(mut self, bytes: usize) -> Self {
        self.max_upload_bytes = bytes;
        self
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The reloader (registry, store, directory).
    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    fn dir(&self) -> PathBuf {
        self.reloader.dir().to_path_buf()
    }

    /// Applies `change` to `route` on behalf of `who`, and makes it serve.
    /// Returns the route's rollout state after the change.
    ///
    /// # Errors
    /// [`ChangeError`]: an unknown route or version, a change that does not
    /// apply (no canary to promote…) or a bad value, or state that cannot be
    /// read or written.
    pub async fn change(
        self: &Arc<Self>,
        route: &str,
        change: Change,
        who: &str,
    ) -> Result<RouteRollout, ChangeError> {
        Ok(self.change_if(route, change, who, None).await?.rollout)
    }

    /// [`RolloutManager::change`], made only if the committed revision is
    /// `expected` (an operator's `If-Match`); without one, a change that
    /// another replica's change overtook is applied again on the new state
    /// (at most [`MAX_ATTEMPTS`] times).
    ///
    /// # Errors
    /// As [`RolloutManager::change`], and [`ChangeError::Conflict`] naming
    /// the committed revision, [`ChangeError::StoreUnavailable`] when the
    /// control store cannot be reached.
    pub async fn change_if(
        self: &Arc<Self>,
        route: &str,
        change: Change,
        who: &str,
        expected: Option<u64>,
    ) -> Result<Committed, ChangeError> {
        if let Change::Canary { version, .. } = &change {
            self.bring_version(route, version).await?;
        }
        let mut attempt = 0;
        let (applied, revision) = loop {
            attempt += 1;
            let mut loaded = self.store.load().await.map_err(store_error)?;
            if loaded.revision == 0 && self.store.shared() {
                // A store that holds nothing (a new Redis, or one restarted
                // without persistence) while this replica applied committed
                // state: the change starts from that state, not from empty.
                let dir = self.dir();
                if let Ok(Ok(local)) = tokio::task::spawn_blocking(move || read_rollout(&dir)).await
                    && local.state.revision > 0
                {
                    tracing::warn!(
                        local = local.state.revision,
                        "the control store holds no rollout state; this change starts from the state this replica last applied"
                    );
                    loaded.doc = local.state;
                }
            }
            if let Some(e) = expected
                && e != loaded.revision
            {
                return Err(ChangeError::Conflict {
                    expected: e,
                    current: loaded.revision,
                });
            }
            let this = self.clone();
            let (r, c, w) = (route.to_string(), change.clone(), who.to_string());
            let applied = tokio::task::spawn_blocking(move || this.apply(&r, &c, &w, loaded.doc))
                .await
                .map_err(internal)??;
            match self
                .store
                .commit(loaded.revision, &applied.doc, &applied.entry)
                .await
            {
                Ok(revision) => break (applied, revision),
                Err(StoreError::Conflict { current, .. })
                    if expected.is_none() && attempt < MAX_ATTEMPTS =>
                {
                    tracing::debug!(%route, current, attempt, "another change committed first; applying again");
                }
                Err(e) => {
                    if let StoreError::Unavailable { .. } = &e {
                        tracing::warn!(%route, error = %e, "rollout change refused: the control store is unavailable");
                    }
                    return Err(store_error(e));
                }
            }
        };
        let entry = applied.entry;
        let mut doc = applied.doc;
        doc.revision = revision;
        if self.store.shared() {
            // The local copy a restart comes back on; the store holds the
            // committed one.
            let (dir, committed) = (
                self.dir(),
                Versioned {
                    revision,
                    doc: doc.clone(),
                },
            );
            let local = tokio::task::spawn_blocking(move || {
                crate::control::store::mirror(&dir, &committed)
            })
            .await
            .map_err(internal)?;
            if let Err(e) = local {
                tracing::warn!(error = %e, "could not copy the committed rollout state into the policy directory");
            }
        }
        tracing::info!(who = %entry.who, action = %entry.action, route = ?entry.route, digest = ?entry.digest, revision, "rollout changed");
        match change {
            Change::Rollback { .. } => self.metrics.control.rollback(route, false),
            Change::GuardrailRollback { .. } => self.metrics.control.rollback(route, true),
            _ => {}
        }
        self.reloader.reconcile().await;
        if self.store.shared() {
            // Off the path to serving: the local audit trail and the last
            // good copy.
            let (dir, audit, line) = (self.dir(), self.audit.clone(), entry.clone());
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = audit.append(&line) {
                    tracing::warn!(error = %e, "could not append the committed change to the local audit log");
                }
                crate::control::store::keep_last_good(&dir, &doc);
            })
            .await;
        }
        Ok(Committed {
            rollout: applied.after,
            revision,
        })
    }

    /// Applies `change` to `route` in `doc` (the committed document), with
    /// its audit entry. Blocking: resolves versions in the version store.
    fn apply(
        &self,
        route: &str,
        change: &Change,
        who: &str,
        doc: RolloutFile,
    ) -> Result<Applied, ChangeError> {
        let snapshot = self.reloader.registry().snapshot();
        let plan = snapshot
            .plans
            .get(route)
            .ok_or_else(|| ChangeError::UnknownRoute {
                route: route.to_string(),
                known: snapshot.plans.keys().cloned().collect(),
            })?;
        let policy = plan.policy.clone();
        let mut file = doc;
        let state = file
            .routes
            .entry(route.to_string())
            .or_insert_with(|| RouteRollout::new(&policy));
        if state.policy != policy {
            // routes.toml moved the route to another policy: start afresh.
            *state = RouteRollout::new(&policy);
        }
        let before = state.clone();
        let store = &self.reloader.store();
        let now = now_ms();
        let mut reason = None;
        let digest = match &change {
            Change::Canary { version, percent } => {
                // A unique prefix (as the commands print digests) names
                // its version; the state always records the full digest.
                let version = &resolve(store, &policy, version)?;
                state
                    .set_canary(version, *percent, now)
                    .map_err(ChangeError::Refused)?;
                Some(version.clone())
            }
            Change::Promote => Some(state.promote(route).map_err(ChangeError::Refused)?),
            Change::Unpin => Some(state.unpin(route).map_err(ChangeError::Refused)?),
            Change::Rollback { reason: why } => {
                check_reason(why.as_deref())?;
                let why = why.clone().unwrap_or_else(|| "operator rollback".into());
                let removed = state
                    .rollback(route, &why, false, now)
                    .map_err(ChangeError::Refused)?;
                reason = Some(why);
                removed
            }
            Change::GuardrailRollback {
                digest,
                reason: why,
            } => {
                if state.canary.as_ref().map(|c| c.digest.as_str()) != Some(digest.as_str()) {
                    return Err(RolloutError::NoCanary(route.to_string()).into());
                }
                let why = truncated(&format!("guardrail: {why}"), MAX_REASON_BYTES / 4);
                let removed = state
                    .rollback(route, &why, true, now)
                    .map_err(ChangeError::Refused)?;
                reason = Some(why);
                removed
            }
            Change::Kill { on, reason: why } => {
                check_reason(why.as_deref())?;
                reason = why.clone();
                if plan.baseline.is_none() && *on {
                    tracing::warn!(%route, "kill switch on a route without a baseline: the host's passthrough answers");
                }
                state.killed = *on;
                None
            }
            Change::Shadow {
                policy: reference,
                on,
            } => {
                // `key@<digest prefix>` names the stored version it
                // resolves to; turning a shadow off also takes the prefix
                // of the version it runs (stored: pinned versions are kept).
                let full = match reference.split_once('@') {
                    Some((key, d)) if !is_digest(d) => {
                        match self.reloader.store().resolve(key, d) {
                            Ok(full) => format!("{key}@{full}"),
                            Err(
                                e @ (ResolveError::Ambiguous { .. } | ResolveError::Unknown { .. }),
                            ) => {
                                return Err(ChangeError::InvalidShadow(e.to_string()));
                            }
                            Err(ResolveError::NotADigest(_)) => reference.clone(),
                        }
                    }
                    _ => reference.clone(),
                };
                let reference = &full;
                let r = VersionRef::parse(reference).map_err(ChangeError::InvalidShadow)?;
                if *on {
                    let known = snapshot.policies.contains_key(&r.key);
                    let stored = r.digest.as_ref().is_none_or(|d| store.contains(&r.key, d));
                    if !known || !stored {
                        return Err(ChangeError::UnknownShadow {
                            reference: reference.clone(),
                        });
                    }
                }
                state
                    .set_shadow(reference, *on)
                    .map_err(ChangeError::Refused)?;
                r.digest
            }
        };
        let after = state.clone();
        // The share a canary action concerns, so that an audit line says
        // at how many listeners the canary stood.
        let percent = match &change {
            Change::Canary { percent, .. } => Some(*percent),
            Change::Promote | Change::Rollback { .. } | Change::GuardrailRollback { .. } => {
                before.canary.as_ref().map(|c| c.percent)
            }
            _ => None,
        };
        let entry = AuditEntry {
            route: Some(route.to_string()),
            policy: Some(policy),
            digest,
            before: serde_json::to_value(&before).unwrap_or_default(),
            after: serde_json::to_value(&after).unwrap_or_default(),
            reason,
            percent,
            ..AuditEntry::now(who, change.action())
        };
        Ok(Applied {
            doc: file,
            after,
            entry,
        })
    }

    /// Loads `wasm` as a new version of policy `key` (with its manifest's
    /// settings and limits) and stores it.
    ///
    /// # Errors
    /// [`ChangeError::UnknownPolicy`] for a policy that is not loaded,
    /// [`ChangeError::InvalidModule`] with the load error when the module
    /// does not load.
    pub async fn upload(
        self: &Arc<Self>,
        key: &str,
        wasm: Vec<u8>,
        who: &str,
    ) -> Result<VersionRecord, ChangeError> {
        let this = self.clone();
        let (key, who) = (key.to_string(), who.to_string());
        let (stored, wasm) = tokio::task::spawn_blocking(move || {
            this.upload_blocking(&key, &wasm, &who).map(|r| (r, wasm))
        })
        .await
        .map_err(internal)??;
        // Shared with the fleet (a Redis store), so that a change made
        // through any replica can canary it and every replica can serve it.
        self.store
            .put_version(&stored, &wasm)
            .await
            .map_err(store_error)?;
        Ok(stored)
    }

    /// Brings `version` of the route's policy from a shared control store
    /// when this replica does not hold it (it was uploaded through another
    /// replica). Anything else is left to [`RolloutManager::apply`], which
    /// names what is wrong.
    async fn bring_version(&self, route: &str, version: &str) -> Result<(), ChangeError> {
        if !self.store.shared() || !is_digest(version) {
            return Ok(());
        }
        let snapshot = self.reloader.registry().snapshot();
        let Some(plan) = snapshot.plans.get(route) else {
            return Ok(());
        };
        let mut pinned = pinned_versions(&snapshot.rollout, &plan.policy);
        pinned.insert(version.to_string());
        crate::control::store::bring_version(
            self.store.as_ref(),
            &self.reloader,
            &plan.policy,
            version,
            pinned,
        )
        .await
        .map(drop)
        .map_err(store_error)
    }

    fn upload_blocking(
        &self,
        key: &str,
        wasm: &[u8],
        who: &str,
    ) -> Result<VersionRecord, ChangeError> {
        let snapshot = self.reloader.registry().snapshot();
        let directory = snapshot
            .policies
            .get(key)
            .and_then(|e| e.active.clone())
            .ok_or_else(|| ChangeError::UnknownPolicy {
                policy: key.to_string(),
                known: snapshot.policies.keys().cloned().collect(),
            })?;
        let active = self
            .reloader
            .activate_waiting(&directory.manifest, wasm)
            .map_err(|f| ChangeError::InvalidModule(f.error))?;
        let record = version_record(&active, "api".into(), who);
        let dir = self.dir();
        let _lock = DirLock::acquire(&dir).map_err(internal)?;
        let known = self.reloader.store().contains(key, &record.digest);
        let pinned = pinned_versions(&read_rollout(&dir).map_err(internal)?.state, key);
        self.reloader
            .store()
            .put(&record, wasm, &pinned)
            .map_err(internal)?;
        let stored = self
            .reloader
            .store()
            .get(key, &record.digest)
            .unwrap_or(record);
        if !known {
            self.audit
                .append(&AuditEntry {
                    policy: Some(key.to_string()),
                    digest: Some(stored.digest.clone()),
                    after: serde_json::to_value(&stored).unwrap_or_default(),
                    ..AuditEntry::now(who, "version.upload")
                })
                .map_err(internal)?;
            tracing::info!(policy = %key, digest = %stored.digest, %who, "version uploaded");
        }
        Ok(stored)
    }

    /// Acts on guardrail breaches until the queue closes: rolls the canary
    /// back if it is still the version that breached.
    pub async fn run_rollbacks(
        self: Arc<Self>,
        mut requests: tokio::sync::mpsc::UnboundedReceiver<RollbackRequest>,
    ) {
        while let Some(r) = requests.recv().await {
            let current = self
                .reloader
                .registry()
                .snapshot()
                .plans
                .get(&r.route)
                .and_then(|p| {
                    p.canary
                        .as_ref()
                        .map(|(c, _)| c.policy.identity().digest.clone())
                });
            if current.as_deref() != Some(r.digest.as_str()) {
                continue;
            }
            let change = Change::GuardrailRollback {
                digest: r.digest.clone(),
                reason: r.reason.clone(),
            };
            match self.change(&r.route, change, GUARDRAILS_ACTOR).await {
                Ok(_) => {
                    tracing::warn!(route = %r.route, digest = %r.digest, reason = %r.reason, "canary rolled back by its guardrails")
                }
                Err(e) => {
                    tracing::error!(route = %r.route, digest = %r.digest, error = %e, "automatic rollback failed")
                }
            }
        }
    }
}

/// An operator's reason is kept in the audit log: refused over
/// [`MAX_REASON_BYTES`].
fn check_reason(why: Option<&str>) -> Result<(), ChangeError> {
    match why {
        Some(why) if why.len() > MAX_REASON_BYTES => Err(ChangeError::InvalidField {
            field: "reason",
            message: format!(
                "{} bytes; at most {MAX_REASON_BYTES} are accepted",
                why.len()
            ),
        }),
        _ => Ok(()),
    }
}
