//! [`ReplayError`]: why a replay could not run.
//!
//! Problems with single records (a module missing, a request that no longer
//! validates) are not errors: they are counted in the [`Report`](super::Report)
//! and listed by request id. A `ReplayError` stops the whole replay.
//!
//! Each variant's message is one step of the story and its
//! [`source`](std::error::Error::source) the cause, so that a chain printer
//! (anyhow's `{:#}`, or `chain`) reads "candidate x.wasm: cannot load
//! policy x.wasm: the component does not compile: …".

use std::io;
use std::path::PathBuf;

use crate::LoadError;
use crate::decision_log::ReadError;
use crate::decision_log::outcomes::OutcomeError;
use crate::runtime::RuntimeError;

use super::policies::ManifestError;

/// `a, b, c` for an error message.
fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The engine could not be built.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The policy directory cannot be listed.
    #[error("cannot read the policy directory {}", path.display())]
    PolicyDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A module of the policy directory (or its versions) cannot be read.
    #[error("cannot read {}", path.display())]
    Module {
        /// The module.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The logs given name no decision log file (an empty directory, or one
    /// that holds other files).
    #[error("no decision log files (decisions-*.jsonl or decisions-*.jsonl.zst) in {}", display_paths(.inputs))]
    NoLogFiles {
        /// The `--logs` inputs.
        inputs: Vec<PathBuf>,
    },
    /// The policy directory and its versions hold no module.
    #[error("no modules in {}", dir.display())]
    NoModules {
        /// The directory.
        dir: PathBuf,
    },
    /// A logged digest matches no module of the policy directory.
    #[error("no module with digest {digest} in the policy directory or its versions/")]
    UnknownModule {
        /// The logged module digest.
        digest: String,
    },
    /// A logged settings hash matches no manifest of the policy directory.
    #[error("no manifest with settings of hash {settings_sha256}")]
    UnknownSettings {
        /// The logged settings hash.
        settings_sha256: String,
    },
    /// A policy (a logged version or a candidate) did not load.
    #[error("cannot load policy {}", path.display())]
    Load {
        /// The component.
        path: PathBuf,
        /// Why.
        #[source]
        source: LoadError,
    },
    /// A candidate's manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A candidate could not be loaded (the argument as given, and why).
    #[error("candidate {spec}")]
    Candidate {
        /// The candidate as given ([`CandidateSpec::arg`](super::CandidateSpec::arg)).
        spec: String,
        /// Why.
        #[source]
        source: Box<ReplayError>,
    },
    /// The outcome events cannot be found or read.
    #[error("reading the outcomes")]
    Outcomes(#[source] OutcomeError),
    /// The decision logs cannot be found or read.
    #[error("reading the decision logs")]
    Logs(#[source] ReadError),
    /// The report cannot be turned into JSON (for the HTML page).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl ReplayError {
    /// Whether a policy did not load (a candidate, or a logged version):
    /// the CLI exits with its "load failed" status for these.
    pub fn is_load_failure(&self) -> bool {
        match self {
            ReplayError::Load { .. } => true,
            ReplayError::Candidate { source, .. } => source.is_load_failure(),
            _ => false,
        }
    }
}

/// `e` and its sources, joined by `": "` (what anyhow's `{:#}` prints).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_reads_like_anyhow_alternate() {
        let e = ReplayError::Candidate {
            spec: "x.wasm".into(),
            source: Box::new(ReplayError::NoModules {
                dir: PathBuf::from("deploy"),
            }),
        };
        assert_eq!(chain(&e), "candidate x.wasm: no modules in deploy");
        assert_eq!(chain(&e), format!("{:#}", anyhow::Error::from(e)));
    }

    #[test]
    fn load_failures_are_told_apart() {
        let load = ReplayError::Load {
            path: "p.wasm".into(),
            source: LoadError::BadSettings("no".into()),
        };
        assert!(load.is_load_failure());
        let wrapped = ReplayError::Candidate {
            spec: "p.wasm".into(),
            source: Box::new(load),
        };
        assert!(wrapped.is_load_failure());
        let missing = ReplayError::UnknownModule { digest: "d".into() };
        assert!(!missing.is_load_failure());
    }
}
