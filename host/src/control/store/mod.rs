//! The control store: where the rollout document, its revision, the audit
//! trail and every replica's status live, with compare-and-set commits and
//! change notification.
//!
//! Two implementations:
//!
//! | store | document | revision | audit | replica status | notification |
//! |---|---|---|---|---|---|
//! | [`DirStore`] (default) | `rollout.json` | in the file, bumped under the [`DirLock`](crate::control::persist::DirLock) | `.oasis-audit.jsonl` | files in `.oasis-replicas/` | the reloader's file watcher |
//! | [`RedisStore`] (`--control-store redis://…`) | `<prefix>rollout` | `<prefix>revision` | `<prefix>audit` (last 10,000) | hash `<prefix>replicas` | `PUBLISH <prefix>changes` + a 250 ms poll |
//!
//! With a shared store ([`ControlStore::shared`]) each replica copies a newer
//! committed document into its own policy directory's `rollout.json`
//! ([`follow`]), so a restart (kill -9 included) comes back on the committed
//! state even while the store is unreachable, and the reconcile path is the
//! one the directory uses.

mod dir;
mod redis;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::control::audit::{AuditEntry, Recent};
use crate::control::persist::write_atomic;
use crate::control::reload::Reloader;
use crate::control::rollout::{LAST_GOOD_FILE, ROLLOUT_FILE, RolloutFile, read_rollout};
use crate::control::versions::VersionRecord;

pub use crate::control::generation::Refusal;
pub use dir::{DirStore, REPLICAS_DIR};
pub use redis::{DEFAULT_PREFIX, RedisControlConfig, RedisStore};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The document is no longer at the revision the change was made on.
    #[error("the rollout is at revision {current}, not {expected}")]
    Conflict {
        /// The revision the change was made on.
        expected: u64,
        /// The store's revision now.
        current: u64,
    },
    /// The store cannot be reached (or did not answer within its budget).
    #[error("control store {store} unavailable: {message}")]
    Unavailable {
        /// `dir` or `redis`.
        store: &'static str,
        /// What failed.
        message: String,
    },
    /// The store answered with something that is not valid state, or a
    /// local file could not be read or written.
    #[error("control store {store}: {message}")]
    Invalid {
        /// `dir` or `redis`.
        store: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The rollout document at a revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Versioned {
    /// The committed revision (0: nothing committed yet).
    pub revision: u64,
    /// The document (its `revision` field equals `revision`).
    pub doc: RolloutFile,
}

/// What a replica made of the desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Everything desired loaded.
    Applied,
    /// Something did not load there (see `refusals`).
    Refused,
}

/// A replica's heartbeat: what it serves, and what it refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicaStatus {
    /// `--replica-id` (default `hostname:port`).
    pub replica: String,
    /// The generation it serves (see [`generation`](crate::control::generation)).
    pub generation: String,
    /// The rollout revision it serves.
    pub revision: u64,
    /// Whether everything desired loaded.
    pub state: ReplicaState,
    /// What it refused, with reasons.
    #[serde(default)]
    pub refusals: Vec<Refusal>,
    /// Registries that fail now (it serves what it pulled before).
    #[serde(default)]
    pub registry_failures: Vec<Refusal>,
    /// When the heartbeat was written, unix milliseconds.
    pub at_ms: u64,
}

/// Where rollout state is kept and committed. See the [module](self) docs.
#[async_trait::async_trait]
pub trait ControlStore: Send + Sync {
    /// `dir` or `redis`, for logs and errors.
    fn kind(&self) -> &'static str;

    /// Whether replicas share it through a service rather than a directory:
    /// then each replica mirrors committed documents into its own directory
    /// ([`follow`]).
    fn shared(&self) -> bool;

    /// The committed document and its revision.
    async fn load(&self) -> Result<Versioned, StoreError>;

    /// Commits `doc` and `audit` together if the store is still at
    /// `expected`; returns the new revision, `max(expected, doc.revision) +
    /// 1` (`doc.revision` is the revision the change was made on: the
    /// loaded one, or a replica's last copy when the store lost its state),
    /// which the stored document carries.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when another change committed first.
    async fn commit(
        &self,
        expected: u64,
        doc: &RolloutFile,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError>;

    /// Writes this replica's heartbeat.
    async fn put_status(&self, status: &ReplicaStatus) -> Result<(), StoreError>;

    /// Every replica's last heartbeat, by replica id.
    async fn list_status(&self) -> Result<Vec<ReplicaStatus>, StoreError>;

    /// Shares a stored version (its record and module) with the fleet, so
    /// that a replica that never loaded it can canary or pin it. The
    /// directory store shares its version store by being one directory
    /// (nothing to do).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be written.
    async fn put_version(&self, record: &VersionRecord, wasm: &[u8]) -> Result<(), StoreError>;

    /// A version shared with [`ControlStore::put_version`] (`digest` in
    /// full), its module verified against the digest; `None` when the store
    /// does not hold it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], or [`StoreError::Invalid`] for a module
    /// whose bytes do not match its digest.
    async fn get_version(
        &self,
        key: &str,
        digest: &str,
    ) -> Result<Option<(VersionRecord, Vec<u8>)>, StoreError>;

    /// The fleet's most recent audit entries (at most `limit`, oldest
    /// first) when the store keeps them for every replica; `None` when each
    /// replica's own log is the record (the directory store: replicas on
    /// one directory share that log).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be read.
    async fn recent_audit(&self, limit: usize) -> Result<Option<Recent>, StoreError>;

    /// Wakes `changed` whenever a change may have been committed, until
    /// `shutdown` (stores the directory watcher already covers return at
    /// once).
    async fn watch(&self, changed: Arc<tokio::sync::Notify>, shutdown: CancellationToken);
}

/// Copies the store's document into `reloader`'s directory when it differs
/// from the local revision, then reconciles. Returns whether it copied.
/// A store that cannot be read leaves the local state serving.
pub async fn sync_once(store: &dyn ControlStore, reloader: &Reloader) -> Result<bool, StoreError> {
    let committed = store.load().await?;
    if committed.revision == 0 {
        // Nothing committed: no replica invents state, the local file stays.
        return Ok(false);
    }
    if store.shared() {
        fetch_versions(store, reloader, &committed.doc).await?;
    }
    let dir = reloader.dir().to_path_buf();
    let doc = committed.doc.clone();
    let copied = tokio::task::spawn_blocking(move || mirror(&dir, &committed))
        .await
        .map_err(|e| StoreError::Invalid {
            store: "dir",
            message: e.to_string(),
        })??;
    if copied {
        reloader.reconcile().await;
        // Off the path to serving: the copy a corrupt file falls back on.
        let dir = reloader.dir().to_path_buf();
        let _ = tokio::task::spawn_blocking(move || keep_last_good(&dir, &doc)).await;
    }
    Ok(copied)
}

/// Brings every version `doc` names (pinned, canary, history, shadows) that
/// the local version store lacks from `store` ([`bring_version`]), so that
/// the reconcile after following `doc` finds them. Returns how many it
/// brought; a version the store does not hold either is left to the
/// reconcile, which reports it.
///
/// # Errors
/// [`StoreError`] when the store cannot be read or a local write fails.
pub async fn fetch_versions(
    store: &dyn ControlStore,
    reloader: &Reloader,
    doc: &RolloutFile,
) -> Result<usize, StoreError> {
    let mut wanted = BTreeSet::new();
    for r in doc.routes.values() {
        wanted.extend(
            r.own_versions(true)
                .map(|d| (r.policy.clone(), d.to_string())),
        );
        wanted.extend(r.shadow_versions());
    }
    let mut brought = 0;
    for (key, digest) in wanted {
        let pinned = crate::control::reload::pinned_versions(doc, &key);
        if bring_version(store, reloader, &key, &digest, pinned).await? {
            brought += 1;
        }
    }
    Ok(brought)
}

/// Puts version `key@digest` from `store` into `reloader`'s version store
/// unless it is there already (sparing `pinned` when pruning). Returns
/// whether it brought it (`false`: already local, or not in `store`).
///
/// # Errors
/// [`StoreError`] when the store cannot be read or the local write fails.
pub async fn bring_version(
    store: &dyn ControlStore,
    reloader: &Reloader,
    key: &str,
    digest: &str,
    pinned: BTreeSet<String>,
) -> Result<bool, StoreError> {
    if reloader.store().contains(key, digest) {
        return Ok(false);
    }
    let Some((record, wasm)) = store.get_version(key, digest).await? else {
        return Ok(false);
    };
    let versions = reloader.store().clone();
    tokio::task::spawn_blocking(move || versions.put(&record, &wasm, &pinned))
        .await
        .map_err(|e| StoreError::Invalid {
            store: "dir",
            message: e.to_string(),
        })?
        .map_err(|e| StoreError::Invalid {
            store: "dir",
            message: format!("cannot store version {key}@{digest}: {e}"),
        })?;
    tracing::info!(policy = %key, %digest, "version brought from the control store");
    Ok(true)
}

/// Writes `doc` as `dir`'s last good rollout state (logged if it fails).
pub fn keep_last_good(dir: &std::path::Path, doc: &RolloutFile) {
    let written = serde_json::to_vec_pretty(doc)
        .map_err(std::io::Error::other)
        .and_then(|json| write_atomic(&dir.join(LAST_GOOD_FILE), &json));
    if let Err(e) = written {
        tracing::warn!(error = %e, file = LAST_GOOD_FILE, "could not refresh the last good copy of the rollout state");
    }
}

/// Writes `committed` as `dir`'s `rollout.json` unless the file already
/// holds it (its last good copy: [`keep_last_good`], once it serves).
/// Returns whether it wrote.
pub fn mirror(dir: &std::path::Path, committed: &Versioned) -> Result<bool, StoreError> {
    let local = read_rollout(dir).ok().map(|r| r.state);
    if local.as_ref() == Some(&committed.doc) {
        return Ok(false);
    }
    let local = local.map_or(0, |l| l.revision);
    let json = serde_json::to_vec_pretty(&committed.doc).map_err(|e| StoreError::Invalid {
        store: "dir",
        message: e.to_string(),
    })?;
    let io = |e: std::io::Error| StoreError::Invalid {
        store: "dir",
        message: format!("cannot write {}: {e}", dir.join(ROLLOUT_FILE).display()),
    };
    write_atomic(&dir.join(ROLLOUT_FILE), &json).map_err(io)?;
    tracing::info!(
        from = local,
        to = committed.revision,
        "rollout state followed from the control store"
    );
    Ok(true)
}

/// Follows a shared store until `shutdown`: on every notification (and at
/// least every `poll`), copies a newer committed document into the local
/// directory and reconciles ([`sync_once`]).
pub async fn follow(
    store: Arc<dyn ControlStore>,
    reloader: Reloader,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let watcher = tokio::spawn({
        let (store, changed, shutdown) = (store.clone(), changed.clone(), shutdown.clone());
        async move { store.watch(changed, shutdown).await }
    });
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            _ = changed.notified() => {}
        }
        match sync_once(store.as_ref(), &reloader).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(store = store.kind(), "control store reachable again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot read the control store; serving the last applied rollout state");
            }
            Err(_) => {}
        }
    }
    let _ = watcher.await;
}

/// Writes this replica's heartbeat ([`ReplicaStatus`]) every `every` until
/// `shutdown`, and sets the generation metrics. A store that cannot be
/// reached is logged once per outage; serving is not affected.
pub async fn heartbeat(
    store: Arc<dyn ControlStore>,
    registry: Arc<crate::control::registry::Registry>,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    replica: String,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let status = status_of(&replica, &registry.snapshot());
        metrics
            .control
            .serving(status.revision, &status.generation, status.refusals.len());
        match store.put_status(&status).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(
                    store = store.kind(),
                    "heartbeats reach the control store again"
                );
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot write the heartbeat to the control store");
            }
            Err(_) => {}
        }
    }
}

/// The heartbeat of `replica` serving `snapshot`.
pub fn status_of(replica: &str, snapshot: &crate::control::registry::Snapshot) -> ReplicaStatus {
    use crate::control::generation;
    let refusals = generation::refusals(snapshot);
    ReplicaStatus {
        replica: replica.to_string(),
        generation: generation::generation(snapshot),
        revision: snapshot.rollout.revision,
        state: if refusals.is_empty() {
            ReplicaState::Applied
        } else {
            ReplicaState::Refused
        },
        refusals,
        registry_failures: generation::registry_failures(snapshot),
        at_ms: crate::control::audit::now_ms(),
    }
}
