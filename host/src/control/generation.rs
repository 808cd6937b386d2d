//! Generations: what a replica serves, as one name that two replicas can
//! compare.
//!
//! `g<revision>-<12 hex>`: the rollout revision, and the first 12 hex digits
//! of a SHA-256 over the policy set the replica serves (each policy key with
//! the digest of its active module, in key order) and the rollout document.
//! Two replicas on the same generation serve the same modules under the same
//! rollout state; a replica that refused a module (it does not load under
//! its limits there) serves another set, so its generation differs, and its
//! [`refusals`] say why.

use sha2::{Digest, Sha256};

use serde::{Deserialize, Serialize};

use crate::control::registry::Snapshot;

/// One thing a replica refuses to serve, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refusal {
    /// The policy key, or `key@sha256:…` for a stored version, or the
    /// `oci://` reference of a registry that fails.
    pub what: String,
    /// Why (the load error, or the registry's error).
    pub reason: String,
}

/// The generation `snapshot` serves: `g<revision>-<12 hex>`.
pub fn generation(snapshot: &Snapshot) -> String {
    let mut h = Sha256::new();
    for (key, entry) in &snapshot.policies {
        h.update(key.as_bytes());
        h.update([0]);
        match &entry.active {
            Some(a) => h.update(a.policy.identity().digest.as_bytes()),
            None => h.update(b"-"),
        }
        h.update([0]);
    }
    h.update(serde_json::to_vec(&snapshot.rollout).unwrap_or_default());
    let hex = hex::encode(h.finalize());
    format!("g{}-{}", snapshot.rollout.revision, &hex[..12])
}

/// What `snapshot` refuses: policies whose files did not load, stored
/// versions the rollout names that did not load, and registries that fail.
pub fn refusals(snapshot: &Snapshot) -> Vec<Refusal> {
    let mut out = Vec::new();
    for (key, entry) in &snapshot.policies {
        if let Some(f) = &entry.failure {
            out.push(Refusal {
                what: key.clone(),
                reason: f.error.clone(),
            });
        }
        for (digest, reason) in &entry.version_failures {
            out.push(Refusal {
                what: format!("{key}@{digest}"),
                reason: reason.clone(),
            });
        }
    }
    if let Some(f) = &snapshot.rollout_failure {
        out.push(Refusal {
            what: crate::control::rollout::ROLLOUT_FILE.into(),
            reason: f.error.clone(),
        });
    }
    out
}

/// Registries that fail now: `oci://…` with the error (serving goes on with
/// what was pulled before).
pub fn registry_failures(snapshot: &Snapshot) -> Vec<Refusal> {
    snapshot
        .oci
        .iter()
        .filter(|o| o.status == "failing")
        .map(|o| Refusal {
            what: o.reference.clone(),
            reason: o.error.clone().unwrap_or_else(|| "failing".into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_names_the_revision_and_changes_with_the_rollout() {
        let mut s = Snapshot::default();
        let g0 = generation(&s);
        assert!(g0.starts_with("g0-") && g0.len() == 15, "{g0}");
        s.rollout.revision = 7;
        s.rollout
            .routes
            .insert("r".into(), crate::control::rollout::RouteRollout::new("p"));
        let g7 = generation(&s);
        assert!(g7.starts_with("g7-"), "{g7}");
        assert_ne!(g0[3..], g7[3..]);
        assert_eq!(generation(&s), g7, "deterministic");
    }
}
