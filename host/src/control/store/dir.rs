//! The directory store: today's behaviour. The document is `rollout.json`,
//! its revision a field in it bumped under the directory lock; the audit is
//! the directory's audit log; heartbeats are files in [`REPLICAS_DIR`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{ControlStore, ReplicaStatus, StoreError, Versioned};
use crate::control::audit::{AuditEntry, AuditLog, Recent};
use crate::control::persist::{DirLock, write_atomic};
use crate::control::rollout::{LAST_GOOD_FILE, ROLLOUT_FILE, RolloutFile, read_rollout};
use crate::control::versions::VersionRecord;

const STORE: &str = "dir";

/// Directory of heartbeat files inside the policy directory (hidden, so
/// the manifest scan ignores it).
pub const REPLICAS_DIR: &str = ".oasis-replicas";

/// The rollout state in a policy directory.
pub struct DirStore {
    dir: PathBuf,
    audit: Arc<AuditLog>,
}

impl DirStore {
    /// The store of policy directory `dir`, auditing to `audit`.
    pub fn new(dir: impl Into<PathBuf>, audit: Arc<AuditLog>) -> Self {
        DirStore {
            dir: dir.into(),
            audit,
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid {
        store: STORE,
        message: e.to_string(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(invalid)?
}

fn load(dir: &Path) -> Result<Versioned, StoreError> {
    let read = read_rollout(dir).map_err(invalid)?;
    if let Some(fault) = &read.fault {
        tracing::warn!(%fault, "reading the last good rollout state; the next change replaces the corrupt file");
    }
    Ok(Versioned {
        revision: read.state.revision,
        doc: read.state,
    })
}

/// The compare-and-set under the directory lock: the state and its audit
/// entry are committed together or not at all (the state is put back if
/// the entry cannot be appended).
fn commit(
    dir: &Path,
    audit: &AuditLog,
    expected: u64,
    mut doc: RolloutFile,
    entry: &AuditEntry,
) -> Result<u64, StoreError> {
    let line = AuditLog::encode(entry).map_err(invalid)?;
    let _lock = DirLock::acquire(dir).map_err(invalid)?;
    let path = dir.join(ROLLOUT_FILE);
    let previous = std::fs::read(&path).ok();
    let current = load(dir)?.revision;
    if current != expected {
        return Err(StoreError::Conflict { expected, current });
    }
    doc.revision = expected.max(doc.revision) + 1;
    let json = serde_json::to_vec_pretty(&doc).map_err(invalid)?;
    write_atomic(&path, &json).map_err(invalid)?;
    if let Err(e) = audit.append_encoded(&line) {
        let undone = match previous {
            Some(bytes) => write_atomic(&path, &bytes),
            None => std::fs::remove_file(&path),
        };
        if let Err(u) = undone {
            tracing::error!(path = %path.display(), error = %u, "could not restore the rollout state after a failed audit write; it holds a change that was refused");
        }
        return Err(invalid(format!(
            "the change was not made: its audit entry could not be written ({e})"
        )));
    }
    // The copy a restart falls back on if the file is ever corrupt.
    if let Err(e) = write_atomic(&dir.join(LAST_GOOD_FILE), &json) {
        tracing::warn!(error = %e, file = LAST_GOOD_FILE, "could not refresh the last good copy of the rollout state");
    }
    Ok(doc.revision)
}

/// A replica id as a file name: anything but `[A-Za-z0-9._-]` becomes `_`.
fn file_name(replica: &str) -> String {
    let s: String = replica
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.json", s.trim_start_matches('.'))
}

#[async_trait::async_trait]
impl ControlStore for DirStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    fn shared(&self) -> bool {
        false
    }

    async fn load(&self) -> Result<Versioned, StoreError> {
        let dir = self.dir.clone();
        blocking(move || load(&dir)).await
    }

    async fn commit(
        &self,
        expected: u64,
        doc: &RolloutFile,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        let (dir, log, doc, entry) = (
            self.dir.clone(),
            self.audit.clone(),
            doc.clone(),
            audit.clone(),
        );
        blocking(move || commit(&dir, &log, expected, doc, &entry)).await
    }

    async fn put_status(&self, status: &ReplicaStatus) -> Result<(), StoreError> {
        let dir = self.dir.join(REPLICAS_DIR);
        let json = serde_json::to_vec(status).map_err(invalid)?;
        let name = file_name(&status.replica);
        blocking(move || {
            std::fs::create_dir_all(&dir).map_err(invalid)?;
            write_atomic(&dir.join(name), &json).map_err(invalid)
        })
        .await
    }

    async fn put_version(&self, _record: &VersionRecord, _wasm: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn get_version(
        &self,
        _key: &str,
        _digest: &str,
    ) -> Result<Option<(VersionRecord, Vec<u8>)>, StoreError> {
        Ok(None)
    }

    async fn recent_audit(&self, _limit: usize) -> Result<Option<Recent>, StoreError> {
        Ok(None)
    }

    async fn list_status(&self) -> Result<Vec<ReplicaStatus>, StoreError> {
        let dir = self.dir.join(REPLICAS_DIR);
        blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(invalid(e)),
            };
            let mut out: Vec<ReplicaStatus> = entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice(&b).ok())
                .collect();
            out.sort_by(|a, b| a.replica.cmp(&b.replica));
            Ok(out)
        })
        .await
    }

    async fn watch(&self, _changed: Arc<tokio::sync::Notify>, _shutdown: CancellationToken) {
        // The reloader's file watcher sees `rollout.json` change.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::rollout::RouteRollout;

    #[tokio::test]
    async fn commits_compare_the_revision_and_bump_it() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Arc::new(AuditLog::open(dir.path().join(".audit")).unwrap());
        let store = DirStore::new(dir.path(), audit);
        let v = store.load().await.unwrap();
        assert_eq!(v.revision, 0);
        let mut doc = v.doc.clone();
        doc.routes.insert("r".into(), RouteRollout::new("p"));
        let entry = AuditEntry::now("t", "route.kill");
        assert_eq!(store.commit(0, &doc, &entry).await.unwrap(), 1);
        let after = store.load().await.unwrap();
        assert_eq!((after.revision, after.doc.routes.len()), (1, 1));
        match store.commit(0, &doc, &entry).await {
            Err(StoreError::Conflict { expected, current }) => {
                assert_eq!((expected, current), (0, 1))
            }
            other => panic!("{other:?}"),
        }
        let s = ReplicaStatus {
            replica: "host:1/x".into(),
            generation: "g1-abc".into(),
            revision: 1,
            state: crate::control::store::ReplicaState::Applied,
            refusals: vec![],
            registry_failures: vec![],
            at_ms: 5,
        };
        store.put_status(&s).await.unwrap();
        assert_eq!(store.list_status().await.unwrap(), vec![s]);
    }
}
