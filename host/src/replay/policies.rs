//! The policies a replay runs: the logged versions, found by digest and
//! settings hash in a policy directory ([`Index`], [`LoggedVersions`]), and
//! the candidates ([`CandidateSpec`], [`Candidate`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ReplayError;
use crate::{Limits, Policy, Runtime};

// Everything replay takes from the server, in one place.
use crate::control::manifest::Manifest;
pub(crate) use crate::control::manifest::ManifestError;
use crate::control::versions::VERSIONS_DIR;

/// A policy to evaluate on the logged requests, as the caller gave it.
#[derive(Debug, Clone)]
pub struct CandidateSpec {
    /// The argument as given (`x.toml`, `x.wasm=s.json`): errors quote it.
    pub arg: String,
    /// Where its module and settings come from.
    pub source: CandidateSource,
}

/// Where a candidate's module and settings come from.
#[derive(Debug, Clone)]
pub enum CandidateSource {
    /// A manifest (`x.toml`): its module, settings and limits, as
    /// `oasis serve` loads them. The candidate is named after the
    /// manifest's key.
    Manifest(PathBuf),
    /// A component with its settings, run under
    /// [`Config::limits`](super::Config::limits). The candidate is named
    /// after the module's file stem, with the settings file's in brackets
    /// when there is one (`pid_pacing[eps]`).
    Module {
        /// The component.
        module: PathBuf,
        /// The settings file, for the name only.
        settings_file: Option<PathBuf>,
        /// The settings, JSON.
        settings_json: String,
    },
}

/// A policy evaluated on the logged requests.
pub(crate) struct Candidate {
    /// How the reports name it (unique among the candidates).
    pub(crate) name: String,
    pub(crate) module: PathBuf,
    pub(crate) policy: Policy,
}

/// Loads every candidate, naming each after its manifest or module (and
/// settings file), made unique with `#2`, `#3`… in order.
pub(crate) fn load_candidates(
    runtime: &Runtime,
    specs: &[CandidateSpec],
    limits: Limits,
) -> Result<Vec<Candidate>, ReplayError> {
    let mut out: Vec<Candidate> = Vec::with_capacity(specs.len());
    for spec in specs {
        let (name, module, policy) =
            load_candidate(runtime, spec, limits).map_err(|e| ReplayError::Candidate {
                spec: spec.arg.clone(),
                source: Box::new(e),
            })?;
        let mut unique = name.clone();
        let mut n = 1;
        while out.iter().any(|c| c.name == unique) {
            n += 1;
            unique = format!("{name}#{n}");
        }
        out.push(Candidate {
            name: unique,
            module,
            policy,
        });
    }
    Ok(out)
}

/// One candidate: its name (before making it unique), module and policy.
fn load_candidate(
    runtime: &Runtime,
    spec: &CandidateSpec,
    limits: Limits,
) -> Result<(String, PathBuf, Policy), ReplayError> {
    let (name, module, settings, limits) = match &spec.source {
        CandidateSource::Manifest(path) => {
            let manifest = Manifest::load(path)?;
            let module = manifest
                .module
                .local_path()
                .map_err(|message| ManifestError::Invalid {
                    path: path.display().to_string(),
                    message,
                })?
                .to_path_buf();
            (
                manifest.key,
                module,
                manifest.settings_json,
                manifest.limits,
            )
        }
        CandidateSource::Module {
            module,
            settings_file,
            settings_json,
        } => {
            let stem = |p: &Path| {
                p.file_stem()
                    .map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into())
            };
            let name = match settings_file {
                Some(s) => format!("{}[{}]", stem(module), stem(s)),
                None => stem(module),
            };
            (name, module.clone(), settings_json.clone(), limits)
        }
    };
    let policy = load_policy(runtime, &module, &settings, limits)?;
    Ok((name, module, policy))
}

/// Loads a policy file; the error names the file.
fn load_policy(
    runtime: &Runtime,
    path: &Path,
    settings_json: &str,
    limits: Limits,
) -> Result<Policy, ReplayError> {
    Policy::load_file(runtime, path, settings_json, limits).map_err(|source| ReplayError::Load {
        path: path.to_owned(),
        source,
    })
}

/// The logged versions, found by digest and settings hash, each loaded once
/// (by the first worker that needs it) and shared.
pub(crate) struct LoggedVersions {
    runtime: Runtime,
    index: Index,
    limits: Limits,
    loaded: Mutex<HashMap<(String, String), Arc<Policy>>>,
    /// Time spent loading versions (compile or cache load, load-time
    /// calls), nanoseconds: not replay, so passes leave it out of their rate.
    loading_ns: AtomicU64,
}

impl LoggedVersions {
    pub(crate) fn new(runtime: Runtime, index: Index, limits: Limits) -> Self {
        LoggedVersions {
            runtime,
            index,
            limits,
            loaded: Mutex::new(HashMap::new()),
            loading_ns: AtomicU64::new(0),
        }
    }

    /// Time spent loading versions so far.
    pub(crate) fn loading_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.loading_ns.load(Ordering::Relaxed))
    }

    /// The version with module `digest` and settings `settings_sha256`.
    pub(crate) fn get(
        &self,
        digest: &str,
        settings_sha256: &str,
    ) -> Result<Arc<Policy>, ReplayError> {
        let key = (digest.to_string(), settings_sha256.to_string());
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = loaded.get(&key) {
            return Ok(p.clone());
        }
        let module = self
            .index
            .modules
            .get(digest)
            .ok_or_else(|| ReplayError::UnknownModule {
                digest: digest.to_string(),
            })?;
        let settings = self.index.settings.get(settings_sha256).ok_or_else(|| {
            ReplayError::UnknownSettings {
                settings_sha256: settings_sha256.to_string(),
            }
        })?;
        let started = std::time::Instant::now();
        let policy = load_policy(&self.runtime, module, settings, self.limits);
        self.loading_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let policy = Arc::new(policy?);
        loaded.insert(key, policy.clone());
        Ok(policy)
    }
}

/// Modules by digest and settings by hash, from a policy directory: its
/// modules and `versions/`, and the settings of its manifests.
pub(crate) struct Index {
    modules: HashMap<String, PathBuf>,
    settings: HashMap<String, String>,
}

impl Index {
    /// Reads `dir`. Manifests that do not load are left out (their
    /// settings cannot have been served); a module that cannot be read is
    /// an error.
    pub(crate) fn scan(dir: &Path) -> Result<Self, ReplayError> {
        let mut modules = HashMap::new();
        let mut settings = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|source| ReplayError::PolicyDir {
            path: dir.to_owned(),
            source,
        })?;
        let mut wasm: Vec<PathBuf> = Vec::new();
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            match path.extension().and_then(|e| e.to_str()) {
                Some("wasm") => wasm.push(path),
                Some("toml") if path.file_name().is_some_and(|n| n != "routes.toml") => {
                    if let Ok(m) = Manifest::load(&path) {
                        settings.insert(
                            crate::cache::sha256_hex(m.settings_json.as_bytes()),
                            m.settings_json,
                        );
                    }
                }
                _ => {}
            }
        }
        if let Ok(keys) = std::fs::read_dir(dir.join(VERSIONS_DIR)) {
            for key in keys.filter_map(|e| e.ok().map(|e| e.path())) {
                if let Ok(files) = std::fs::read_dir(&key) {
                    wasm.extend(
                        files
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| p.extension().is_some_and(|e| e == "wasm")),
                    );
                }
            }
        }
        for path in wasm {
            let bytes = std::fs::read(&path).map_err(|source| ReplayError::Module {
                path: path.clone(),
                source,
            })?;
            modules.insert(crate::cache::digest(&bytes), path);
        }
        if modules.is_empty() {
            return Err(ReplayError::NoModules {
                dir: dir.to_owned(),
            });
        }
        Ok(Index { modules, settings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_policy_directory_has_no_modules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        let e = Index::scan(dir.path()).err().unwrap();
        assert!(matches!(e, ReplayError::NoModules { .. }), "{e}");
        let e = Index::scan(&dir.path().join("missing")).err().unwrap();
        assert!(matches!(e, ReplayError::PolicyDir { .. }), "{e}");
    }

    #[test]
    fn modules_are_found_by_digest_in_versions_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"a").unwrap();
        let old = dir.path().join(VERSIONS_DIR).join("p");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("1.wasm"), b"b").unwrap();
        let index = Index::scan(dir.path()).unwrap();
        assert_eq!(
            index.modules.get(&crate::cache::digest(b"b")),
            Some(&old.join("1.wasm"))
        );
        assert_eq!(index.modules.len(), 2);
    }
}
