//! The version store: every loaded version of a policy, kept by content
//! digest with what an operator needs to know about it.
//!
//! ```text
//! <policy dir>/versions/<policy key>/<hex digest>.wasm    the module, as loaded
//! <policy dir>/versions/<policy key>/<hex digest>.json    its VersionRecord
//! ```
//!
//! A version arrives from the directory (its manifest's module, recorded when
//! it first loads) or from the admin API (uploaded, and stored only after the
//! same load pipeline accepted it). The store lives in the policy directory,
//! so replicas serving that directory, and a restarted host, see the same
//! versions. The newest `keep` versions per policy that the rollout state
//! does not refer to are kept, plus every one it refers to (those do not
//! count among the `keep`); files are written atomically.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::control::persist::write_atomic;
use crate::control::rollout::{MIN_DIGEST_PREFIX, is_digest, is_digest_prefix};

/// Why a version reference does not name one stored version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Not `sha256:` and 12 to 64 lower-case hex digits.
    #[error(
        "`{0}` is not a version digest (`sha256:` and at least {MIN_DIGEST_PREFIX} of its 64 lower-case hex digits)"
    )]
    NotADigest(String),
    /// No stored version of the policy starts with it.
    #[error("no stored version of `{policy}` is `{reference}`")]
    Unknown {
        /// The policy.
        policy: String,
        /// The reference as given.
        reference: String,
    },
    /// More than one stored version starts with it.
    #[error("`{reference}` names {} stored versions of `{policy}` ({}); give more digits", .matches.len(), .matches.join(", "))]
    Ambiguous {
        /// The policy.
        policy: String,
        /// The reference as given.
        reference: String,
        /// The full digests it matches.
        matches: Vec<String>,
    },
}

/// Directory of the store inside the policy directory.
pub const VERSIONS_DIR: &str = "versions";

/// Versions kept per policy by default.
pub const DEFAULT_KEEP: usize = 10;

/// What the host knows about one stored version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionRecord {
    /// `sha256:…` of the module.
    pub digest: String,
    /// The policy key it is a version of.
    pub policy: String,
    /// Name from the policy's metadata.
    pub name: String,
    /// Semver from the policy's metadata.
    pub version: String,
    /// SDK it was built with.
    pub sdk_version: String,
    /// Module size.
    pub size_bytes: usize,
    /// Where it came from: `directory:<module file>` or `api`.
    pub source: String,
    /// Who brought it: the admin token's name, or `directory`.
    pub by: String,
    /// When it was first accepted, unix ms.
    pub loaded_at_ms: u64,
    /// SHA-256 of the settings JSON it was validated with.
    pub settings_sha256: String,
}

/// The store of one policy directory.
#[derive(Debug, Clone)]
pub struct VersionStore {
    root: PathBuf,
    keep: usize,
}

impl VersionStore {
    /// The store of policy directory `dir`, keeping `keep` versions per policy.
    pub fn new(dir: &Path, keep: usize) -> Self {
        VersionStore {
            root: dir.join(VERSIONS_DIR),
            keep: keep.max(1),
        }
    }

    /// Where version `digest` of `key` lives, without extension; `None`
    /// unless `key` is a policy key and `digest` a digest (`sha256:` and 64
    /// lower-case hex digits), so that no reference resolves outside the
    /// store (`sha256:../../x`) or to a name that could never serve (a bare
    /// hex digest).
    fn base(&self, key: &str, digest: &str) -> Option<PathBuf> {
        if !oasis_contract::is_key(key) || !is_digest(digest) {
            return None;
        }
        Some(self.root.join(key).join(&digest["sha256:".len()..]))
    }

    /// Path of a stored module; `None` when `key` or `digest` is not a valid
    /// name (see [`is_digest`]).
    pub fn module_path(&self, key: &str, digest: &str) -> Option<PathBuf> {
        Some(self.base(key, digest)?.with_extension("wasm"))
    }

    /// Reads a stored module.
    ///
    /// # Errors
    /// The I/O error (`NotFound` when the version is not stored, or when
    /// `digest` is not a digest).
    pub fn read_module(&self, key: &str, digest: &str) -> std::io::Result<Vec<u8>> {
        let path = self.module_path(key, digest).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("`{key}@{digest}` is not a stored version's name"),
            )
        })?;
        std::fs::read(path)
    }

    /// The record of a stored version.
    pub fn get(&self, key: &str, digest: &str) -> Option<VersionRecord> {
        let text = std::fs::read(self.base(key, digest)?.with_extension("json")).ok()?;
        let record: VersionRecord = serde_json::from_slice(&text).ok()?;
        // A record copied under another name is not that version.
        (record.digest == digest && record.policy == key).then_some(record)
    }

    /// Whether `digest` is stored for `key` (record and module).
    pub fn contains(&self, key: &str, digest: &str) -> bool {
        self.module_path(key, digest).is_some_and(|p| p.is_file())
            && self.get(key, digest).is_some()
    }

    /// The full digest of the one stored version of `key` that `reference`
    /// names: a full digest, or a unique prefix of one (`sha256:` and at
    /// least [`MIN_DIGEST_PREFIX`] hex digits, as the commands print them).
    ///
    /// # Errors
    /// [`ResolveError`]: not a digest (prefix), no such version, or a
    /// prefix several versions share.
    pub fn resolve(&self, key: &str, reference: &str) -> Result<String, ResolveError> {
        if !is_digest_prefix(reference) {
            return Err(ResolveError::NotADigest(truncate(reference, 80)));
        }
        let unknown = || ResolveError::Unknown {
            policy: key.to_string(),
            reference: reference.to_string(),
        };
        if is_digest(reference) {
            return if self.contains(key, reference) {
                Ok(reference.to_string())
            } else {
                Err(unknown())
            };
        }
        let mut matches: Vec<String> = self
            .list(key)
            .into_iter()
            .map(|r| r.digest)
            .filter(|d| d.starts_with(reference) && self.contains(key, d))
            .collect();
        matches.dedup();
        match matches.len() {
            0 => Err(unknown()),
            1 => Ok(matches.remove(0)),
            _ => Err(ResolveError::Ambiguous {
                policy: key.to_string(),
                reference: reference.to_string(),
                matches,
            }),
        }
    }

    /// Every stored version of `key`, oldest first.
    pub fn list(&self, key: &str) -> Vec<VersionRecord> {
        let Ok(entries) = std::fs::read_dir(self.root.join(key)) else {
            return Vec::new();
        };
        let mut out: Vec<VersionRecord> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter_map(|p| std::fs::read(&p).ok())
            .filter_map(|b| serde_json::from_slice::<VersionRecord>(&b).ok())
            .filter(|r| r.policy == key)
            .collect();
        out.sort_by(|a, b| (a.loaded_at_ms, &a.digest).cmp(&(b.loaded_at_ms, &b.digest)));
        out
    }

    /// Stores `wasm` as version `record` (module first, then the record, each
    /// atomically; an existing version keeps its first record), then prunes
    /// the oldest versions beyond `keep`, sparing those in `pinned`.
    ///
    /// # Errors
    /// The I/O error; the store is unchanged or has the version complete.
    pub fn put(
        &self,
        record: &VersionRecord,
        wasm: &[u8],
        pinned: &BTreeSet<String>,
    ) -> std::io::Result<()> {
        let base = self.base(&record.policy, &record.digest).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "`{}@{}` is not a version name (a policy key and `sha256:` with 64 lower-case hex digits)",
                    record.policy, record.digest
                ),
            )
        })?;
        let dir = self.root.join(&record.policy);
        std::fs::create_dir_all(&dir)?;
        if self.get(&record.policy, &record.digest).is_none() {
            write_atomic(&base.with_extension("wasm"), wasm)?;
            let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
            write_atomic(&base.with_extension("json"), &json)?;
        }
        self.prune(&record.policy, pinned);
        Ok(())
    }

    /// Removes the oldest versions of `key` beyond the newest `keep`
    /// unpinned ones; `pinned` versions are kept besides and do not count
    /// among the `keep`. Best effort: a file that cannot be removed stays.
    fn prune(&self, key: &str, pinned: &BTreeSet<String>) {
        let unpinned: Vec<VersionRecord> = self
            .list(key)
            .into_iter()
            .filter(|r| !pinned.contains(&r.digest))
            .collect();
        let excess = unpinned.len().saturating_sub(self.keep);
        for r in unpinned.iter().take(excess) {
            let Some(base) = self.base(key, &r.digest) else {
                continue;
            };
            // Record first: a version without a record is not listed.
            let _ = std::fs::remove_file(base.with_extension("json"));
            let _ = std::fs::remove_file(base.with_extension("wasm"));
        }
    }
}

/// `s`, cut to at most `max` characters, for echoing it in an error.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_prefixes_of_twelve_digits_or_more_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = VersionStore::new(dir.path(), 10);
        let mut a = record(1);
        a.digest = format!("sha256:{}{}", "d1a87b5534d0", "1".repeat(52));
        let mut b = record(2);
        b.digest = format!("sha256:{}{}", "d1a87b5534d0", "2".repeat(52));
        for r in [&a, &b] {
            store.put(r, b"abc", &BTreeSet::new()).unwrap();
        }
        assert_eq!(store.resolve("p", &a.digest).unwrap(), a.digest);
        assert_eq!(
            store.resolve("p", "sha256:d1a87b5534d01").unwrap(),
            a.digest
        );
        assert_eq!(
            store.resolve("p", "sha256:d1a87b5534d02").unwrap(),
            b.digest
        );
        let e = store.resolve("p", "sha256:d1a87b5534d0").unwrap_err();
        assert!(
            matches!(&e, ResolveError::Ambiguous { matches, .. } if matches.len() == 2),
            "{e}"
        );
        assert!(e.to_string().contains("give more digits"), "{e}");
        for short in [
            "sha256:d1a87b5534d",
            "d1a87b5534d01",
            "sha256:D1A87B5534D01",
        ] {
            assert!(
                matches!(store.resolve("p", short), Err(ResolveError::NotADigest(_))),
                "{short}"
            );
        }
        assert!(matches!(
            store.resolve("p", "sha256:000000000000"),
            Err(ResolveError::Unknown { .. })
        ));
        assert!(matches!(
            store.resolve("other", "sha256:d1a87b5534d01"),
            Err(ResolveError::Unknown { .. })
        ));
    }

    fn record(i: u64) -> VersionRecord {
        VersionRecord {
            digest: format!("sha256:{i:064x}"),
            policy: "p".into(),
            name: "p".into(),
            version: "1.0.0".into(),
            sdk_version: "0.1.0".into(),
            size_bytes: 3,
            source: "api".into(),
            by: "alice".into(),
            loaded_at_ms: i,
            settings_sha256: String::new(),
        }
    }

    #[test]
    fn stores_lists_and_prunes_sparing_pinned_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = VersionStore::new(dir.path(), 3);
        let pinned: BTreeSet<String> = [record(1).digest].into();
        for i in 1..=5 {
            store.put(&record(i), b"abc", &pinned).unwrap();
        }
        let kept: Vec<u64> = store.list("p").iter().map(|r| r.loaded_at_ms).collect();
        assert_eq!(
            kept,
            vec![1, 3, 4, 5],
            "the newest 3 unpinned versions are kept, and the pinned one beside them"
        );
        assert_eq!(store.read_module("p", &record(4).digest).unwrap(), b"abc");
        assert!(store.contains("p", &record(1).digest));
        assert!(!store.contains("p", &record(2).digest));
        // A second put of a stored version keeps its first record.
        let mut again = record(5);
        again.by = "bob".into();
        store.put(&again, b"abc", &pinned).unwrap();
        assert_eq!(store.get("p", &again.digest).unwrap().by, "alice");
        assert!(store.list("other").is_empty());
    }

    #[test]
    fn only_digests_resolve_and_only_inside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = VersionStore::new(dir.path(), 3);
        store.put(&record(0xabc), b"abc", &BTreeSet::new()).unwrap();
        let hex = format!("{:064x}", 0xabc);
        // The same files, reached by names that are not the digest.
        for name in [
            hex.clone(),
            format!("sha256:../p/{hex}"),
            format!("sha256:{}", hex.to_uppercase()),
        ] {
            assert!(!store.contains("p", &name), "{name}");
            assert!(store.get("p", &name).is_none(), "{name}");
            assert!(store.read_module("p", &name).is_err(), "{name}");
        }
        assert!(store.contains("p", &record(0xabc).digest));
        // Nor is a version stored under a name that is not a digest.
        let mut bad = record(2);
        bad.digest = "sha256:../../evil".into();
        assert!(store.put(&bad, b"abc", &BTreeSet::new()).is_err());
        assert!(!dir.path().join("evil.wasm").exists());
    }
}
