//! Policy sources: where the module a manifest names comes from.
//!
//! ```text
//! manifest `module = …`
//!   "baseline.wasm"                       ─► dir::DirSource  (the file, beside the manifest)
//!   "oci://registry/repo:tag"             ─► oci::OciSource  (what its poller pulled, verified
//!   "oci://registry/repo@sha256:…"                            against its digest; after a
//!                                                             restart, the version store)
//! ```
//!
//! A source answers [`PolicySource::fetch`] from what it holds locally:
//! reconciliation never waits on the network. The registry source pulls in
//! the background ([`oci::OciSource::run`]: tags polled, failures retried
//! with exponential backoff) and asks for a reconciliation when what it
//! holds changes. Whatever a source returns goes through the same
//! validate-then-swap pipeline ([`crate::control::reload`]): a module that
//! does not load is refused and reported, and the last good version keeps
//! serving.
//!
//! | module        | concern                                                     |
//! |---------------|-------------------------------------------------------------|
//! | `dir`         | modules as files beside their manifests                     |
//! | `oci`         | references, the registry client, pulls, polling, push/pull  |
//! | `credentials` | registry credentials from a docker `config.json`            |
//! | `signing`     | cosign-compatible signatures: sign, store, verify            |

pub mod credentials;
pub mod dir;
pub mod oci;
pub mod signing;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use dir::DirSource;
pub use oci::{OciRef, OciSource};

/// What a manifest's `module` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleRef {
    /// A component file (resolved against the manifest's directory).
    File(PathBuf),
    /// An artifact in an OCI registry.
    Oci(OciRef),
}

impl ModuleRef {
    /// Parses a manifest's `module` value: `oci://…` is a registry
    /// reference, anything else a file relative to `dir`.
    ///
    /// # Errors
    /// A message saying what is wrong with an `oci://` reference.
    pub fn parse(text: &str, dir: &Path) -> Result<Self, String> {
        if text.starts_with(oci::SCHEME) {
            return OciRef::parse(text).map(ModuleRef::Oci);
        }
        Ok(ModuleRef::File(dir.join(text)))
    }

    /// The file, for a file module.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ModuleRef::File(p) => Some(p),
            ModuleRef::Oci(_) => None,
        }
    }

    /// The file, or an error saying that an offline command cannot read a
    /// registry module (and how to get it).
    ///
    /// # Errors
    /// For a registry module: a message naming it and `oasis pull`.
    pub fn local_path(&self) -> Result<&Path, String> {
        match self {
            ModuleRef::File(p) => Ok(p),
            ModuleRef::Oci(r) => Err(format!(
                "the module is in a registry ({r}); fetch it with `oasis pull {}` and name the file",
                r.without_scheme()
            )),
        }
    }
}

impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleRef::File(p) => write!(f, "{}", p.display()),
            ModuleRef::Oci(r) => write!(f, "{r}"),
        }
    }
}

/// A module's bytes as a source holds them now.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The component.
    pub bytes: Vec<u8>,
    /// Where they came from, as the version store records it:
    /// `directory:<file>`, or `oci:<reference>@<manifest digest>`.
    pub origin: String,
    /// Who brought them, for the version store: `directory` or `registry`.
    pub by: &'static str,
}

/// Why a source has no module to give.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file is not there (yet): deploying the manifest before its
    /// module is a normal order.
    #[error("waiting for module {module}")]
    Missing {
        /// The module as the manifest names it.
        module: String,
    },
    /// The file exists but cannot be read (tried again).
    #[error("cannot read {module}: {error}")]
    Io {
        /// The module.
        module: String,
        /// Why.
        error: std::io::Error,
    },
    /// A registry module that was never pulled, and that no earlier run
    /// kept: loaded when the poller first pulls it.
    #[error("{reference}: not pulled yet: {reason}")]
    NotPulled {
        /// The reference.
        reference: String,
        /// Why (the registry's last error, or "first pull pending").
        reason: String,
        /// The registry was not asked yet in this run (a wait, not a
        /// failure).
        pending: bool,
    },
    /// A registry module whose signatures do not satisfy the configured
    /// keys (`--verify-key`, the manifest's `verify_key`): refused.
    #[error("{reference}@{digest}: refused: {reason}")]
    Unverified {
        /// The reference.
        reference: String,
        /// The manifest digest that was checked.
        digest: String,
        /// Why: unsigned, not signed by a configured key, unreadable.
        reason: String,
    },
}

/// Where a kind of module reference is read from.
pub trait PolicySource: Send + Sync {
    /// `directory` or `oci`, for logs.
    fn kind(&self) -> &'static str;

    /// The module `reference` names, for policy `key`, as this source holds
    /// it now. Blocking and local: never waits on the network.
    ///
    /// # Errors
    /// [`SourceError`]: missing, unreadable, or not pulled yet.
    fn fetch(&self, key: &str, reference: &ModuleRef) -> Result<Fetched, SourceError>;

    /// Told when policy `key` loaded version `digest` from `reference`
    /// (passed validation and serves): a source may remember it, as the
    /// registry source does to serve it after a restart while the registry
    /// is down.
    fn accepted(&self, key: &str, reference: &ModuleRef, digest: &str) {
        let _ = (key, reference, digest);
    }
}

/// The sources of one policy directory: its files, and a registry source
/// for `oci://` modules.
#[derive(Clone)]
pub struct Sources {
    /// Modules as files.
    pub dir: Arc<DirSource>,
    /// Modules in OCI registries.
    pub oci: Arc<OciSource>,
}

impl Sources {
    /// The source that reads `reference`.
    pub fn for_ref(&self, reference: &ModuleRef) -> &dyn PolicySource {
        match reference {
            ModuleRef::File(_) => self.dir.as_ref(),
            ModuleRef::Oci(_) => self.oci.as_ref(),
        }
    }

    /// [`PolicySource::fetch`] from the source of `reference`.
    ///
    /// # Errors
    /// That source's [`SourceError`].
    pub fn fetch(&self, key: &str, reference: &ModuleRef) -> Result<Fetched, SourceError> {
        self.for_ref(reference).fetch(key, reference)
    }

    /// The module of a manifest (its key, `module` and `verify_key`), as
    /// [`Sources::fetch`], with the `verify_key` required of a registry
    /// module (besides `--verify-key`). Takes the manifest's fields rather
    /// than the manifest: the manifest module imports this one.
    ///
    /// # Errors
    /// That source's [`SourceError`]; [`SourceError::Unverified`] when the
    /// key cannot be read.
    pub fn fetch_for(
        &self,
        key: &str,
        module: &ModuleRef,
        verify_key: Option<&Path>,
    ) -> Result<Fetched, SourceError> {
        let ModuleRef::Oci(r) = module else {
            return self.fetch(key, module);
        };
        let extra = match verify_key {
            Some(path) => {
                Some(
                    signing::PublicKey::load(path).map_err(|e| SourceError::Unverified {
                        reference: r.to_string(),
                        digest: "-".into(),
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        self.oci.fetch_with(key, r, extra.as_ref())
    }

    /// [`PolicySource::accepted`] to the source of `reference`.
    pub fn accepted(&self, key: &str, reference: &ModuleRef, digest: &str) {
        self.for_ref(reference).accepted(key, reference, digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_resolve_against_the_manifest_directory_and_oci_refs_parse() {
        let dir = Path::new("/srv/policies");
        assert_eq!(
            ModuleRef::parse("gb.wasm", dir).unwrap(),
            ModuleRef::File(PathBuf::from("/srv/policies/gb.wasm"))
        );
        let m = ModuleRef::parse("oci://127.0.0.1:5000/oasis/gb:v1", dir).unwrap();
        assert_eq!(m.to_string(), "oci://127.0.0.1:5000/oasis/gb:v1");
        assert!(m.path().is_none());
        let e = m.local_path().unwrap_err();
        assert!(e.contains("oasis pull 127.0.0.1:5000/oasis/gb:v1"), "{e}");
        let e = ModuleRef::parse("oci://gb", dir).unwrap_err();
        assert!(e.contains("registry"), "{e}");
    }
}
