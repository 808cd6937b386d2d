//! Policy-set bundles: a whole policy directory (manifests, `routes.toml`,
//! the modules beside them) as one versioned OCI artifact, so a GitOps
//! pipeline publishes one tag and every replica follows it (OPA's bundles,
//! for Oasis).
//!
//! ```text
//! oasis push-bundle DIR REF ─► check the set ─► one artifact: config
//!                               (application/vnd.oasis.bundle.config.v1+json,
//!                               the file list) + one layer per file, titled
//!                               with its name
//! oasis serve --bundle REF  ─► poll the tag (backoff) ─► pull, verify every
//!                               digest ─► stage ─► check the set ─► install
//!                               into --policies (modules, then manifests,
//!                               then routes.toml; files the last bundle had
//!                               and this one has not are removed)
//! ```
//!
//! Installing writes files into the policy directory, which the reloader
//! watches: from there each policy goes through the same validate-then-swap
//! pipeline as a file an operator copied (a module that does not load is
//! refused and the last good version keeps serving). A bundle that is not a
//! valid set (a manifest with a problem, a route to a policy it does not
//! have, a module it does not carry) is refused as a whole before anything
//! is written. What was installed is recorded in [`STATE_FILE`], so a
//! restart with the registry down serves the last installed set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest, OciManifest};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::control::manifest::{Manifest, ROUTES_FILE, RoutesFile};
use crate::control::persist::write_atomic;
use crate::control::reload::Reloader;
use crate::control::source::ModuleRef;
use crate::control::source::oci::{
    OciRef, OciStatus, RegistryClient, RegistryConfig, RegistryError,
};

/// Media type of a bundle's config (the file list).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oasis.bundle.config.v1+json";
/// Media type of a bundle's layers (one file each).
pub const FILE_MEDIA_TYPE: &str = "application/vnd.oasis.bundle.file.v1";
/// The OCI annotation naming a layer's file.
const TITLE: &str = "org.opencontainers.image.title";
/// What was installed last, in the policy directory.
pub const STATE_FILE: &str = ".oasis-bundle.json";
/// Largest bundle pulled, all files together.
pub const MAX_BUNDLE_BYTES: u64 = 256 << 20;

/// One file of a bundle: a name in the policy directory and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// The file name (no directory: a policy directory is flat).
    pub name: String,
    /// Its content.
    pub bytes: Vec<u8>,
}

/// Why a bundle cannot be made, published, pulled or installed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The set is not valid: every problem, with its file.
    #[error("the bundle is not a valid policy set:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    /// The registry failed or served something refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Reading or writing files.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        error: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BundleError {
    let what = what.into();
    move |error| BundleError::Io { what, error }
}

/// Whether `name` is a file a bundle carries: a manifest or `routes.toml`
/// (`.toml`) or a module (`.wasm`), not hidden. Rollout state, the version
/// store and the bundle record stay the replica's.
fn carried(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".toml") || name.ends_with(".wasm"))
}

/// Whether `name` is safe to write into the policy directory: one plain
/// component (no separators, no `..`).
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && carried(name)
}

/// The files of policy directory `dir` a bundle carries, sorted by name.
///
/// # Errors
/// [`BundleError::Io`] when the directory or a file cannot be read.
pub fn collect(dir: &Path) -> Result<Vec<BundleFile>, BundleError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))? {
        let entry = entry.map_err(io(format!("reading {}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !carried(&name) || !entry.path().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path())
            .map_err(io(format!("reading {}", entry.path().display())))?;
        files.push(BundleFile { name, bytes });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Checks `files` as one policy set, as they would stand in directory
/// `dir`: every manifest without problems ([`Manifest::check`]), its file
/// module carried by the bundle, `routes.toml` valid, every route's policy
/// and baseline among the manifests. Nothing is compiled: a module that
/// does not load is refused per policy when served, as a file would be.
///
/// # Errors
/// [`BundleError::Invalid`] with every problem found.
pub fn check(files: &[BundleFile], dir: &Path) -> Result<(), BundleError> {
    let mut problems = Vec::new();
    let names: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let mut keys = BTreeSet::new();
    for f in files {
        if !plain_name(&f.name) {
            problems.push(format!(
                "{:?}: not a file name a policy directory holds",
                f.name
            ));
            continue;
        }
        if !f.name.ends_with(".toml") || f.name == ROUTES_FILE {
            continue;
        }
        let Ok(text) = std::str::from_utf8(&f.bytes) else {
            problems.push(format!("{}: not UTF-8 text", f.name));
            continue;
        };
        let (manifest, found) = Manifest::check(&dir.join(&f.name), text);
        problems.extend(found.iter().map(|p| format!("{}: {p}", f.name)));
        if let Some(m) = manifest {
            if let ModuleRef::File(path) = &m.module {
                let module = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let inside = path.parent() == Some(dir);
                match module {
                    Some(n) if inside && names.contains(n.as_str()) => {}
                    _ => problems.push(format!(
                        "{}: module {} is not in the bundle",
                        f.name,
                        path.display()
                    )),
                }
            }
            keys.insert(m.key);
        }
    }
    if let Some(f) = files.iter().find(|f| f.name == ROUTES_FILE) {
        match std::str::from_utf8(&f.bytes)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<RoutesFile>(t).map_err(|e| e.to_string()))
        {
            Ok(routes) => {
                for (name, r) in &routes.routes {
                    for (what, key) in [
                        ("policy", Some(&r.policy)),
                        ("baseline", r.baseline.as_ref()),
                    ] {
                        if let Some(key) = key
                            && !keys.contains(key)
                        {
                            problems.push(format!(
                                "{ROUTES_FILE}: route `{name}`: {what} `{key}` has no manifest in the bundle"
                            ));
                        }
                    }
                }
                if let Some(d) = &routes.default
                    && !routes.routes.contains_key(d)
                    && !keys.contains(d)
                {
                    problems.push(format!("{ROUTES_FILE}: default route `{d}` does not exist"));
                }
            }
            Err(e) => problems.push(format!("{ROUTES_FILE}: {e}")),
        }
    }
    if keys.is_empty() {
        problems.push("no policy manifest (*.toml) in the bundle".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BundleError::Invalid(problems))
    }
}

/// The config blob of a bundle: its files, sizes and digests.
#[derive(Debug, Serialize, Deserialize)]
struct BundleConfig {
    files: Vec<ConfigEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConfigEntry {
    name: String,
    digest: String,
    size: u64,
}

/// What a push published or a pull fetched.
#[derive(Debug, Clone)]
pub struct Published {
    /// Digest of the bundle's manifest (its version).
    pub digest: String,
    /// The files.
    pub files: Vec<BundleFile>,
}

/// Pushes `files` to `r` (a tag) as one bundle, after [`check`].
///
/// # Errors
/// [`BundleError`].
pub async fn push(
    client: &RegistryClient,
    r: &OciRef,
    files: Vec<BundleFile>,
) -> Result<Published, BundleError> {
    if r.digest().is_some() {
        return Err(RegistryError::refused(
            r,
            "push to a tag (`REGISTRY/REPOSITORY:TAG`): a digest names what was pushed".into(),
        )
        .into());
    }
    let config = BundleConfig {
        files: files
            .iter()
            .map(|f| ConfigEntry {
                name: f.name.clone(),
                digest: crate::cache::digest(&f.bytes),
                size: f.bytes.len() as u64,
            })
            .collect(),
    };
    let config = Config::new(
        serde_json::to_vec(&config).expect("a bundle config serializes"),
        CONFIG_MEDIA_TYPE.to_string(),
        None,
    );
    let layers: Vec<ImageLayer> = files
        .iter()
        .map(|f| {
            ImageLayer::new(
                f.bytes.clone(),
                FILE_MEDIA_TYPE.to_string(),
                Some(BTreeMap::from([(TITLE.to_string(), f.name.clone())])),
            )
        })
        .collect();
    let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let annotations = BTreeMap::from([("org.opencontainers.image.created".to_string(), created)]);
    let mut manifest = OciImageManifest::build(&layers, &config, Some(annotations));
    manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_string());
    client
        .client
        .push(
            &r.reference,
            &layers,
            config,
            &client.auth(r),
            Some(manifest),
        )
        .await
        .map_err(|e| RegistryError::of(r, e))?;
    let digest = client.resolve(r).await?;
    Ok(Published { digest, files })
}

/// Pulls the bundle `r` names (or its manifest `digest` when given) and
/// verifies it: the manifest against its digest, the bundle layout, every
/// layer against its digest and the config's, the file names.
///
/// # Errors
/// [`BundleError::Registry`] (unreachable, refused content).
pub async fn pull(
    client: &RegistryClient,
    r: &OciRef,
    digest: Option<&str>,
) -> Result<Published, BundleError> {
    let target = match digest {
        Some(d) => r.reference.clone_with_digest(d.to_string()),
        None => r.reference.clone(),
    };
    let auth = client.auth(r);
    let refused = |m: String| BundleError::Registry(RegistryError::refused(r, m));
    let (manifest, got) = client
        .client
        .pull_manifest(&target, &auth)
        .await
        .map_err(|e| RegistryError::of(r, e))?;
    for expected in [digest, r.digest()].into_iter().flatten() {
        if got != expected {
            return Err(refused(format!(
                "digest mismatch: asked for manifest {expected}, got {got}"
            )));
        }
    }
    let OciManifest::Image(manifest) = manifest else {
        return Err(refused("an image index, not a policy bundle".into()));
    };
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(refused(format!(
            "config media type `{}` is not a policy bundle's (`{CONFIG_MEDIA_TYPE}`; publish with `oasis push-bundle`)",
            manifest.config.media_type
        )));
    }
    let total: u64 = manifest.layers.iter().map(|l| l.size.max(0) as u64).sum();
    if total > MAX_BUNDLE_BYTES {
        return Err(refused(format!(
            "the bundle is {total} bytes, more than the {MAX_BUNDLE_BYTES} pulled at most"
        )));
    }
    let mut config = Vec::new();
    client
        .client
        .pull_blob(&target, &manifest.config, &mut config)
        .await
        .map_err(|e| RegistryError::of(r, e))?;
    if crate::cache::digest(&config) != manifest.config.digest {
        return Err(refused("digest mismatch: the bundle's config".into()));
    }
    let config: BundleConfig = serde_json::from_slice(&config)
        .map_err(|e| refused(format!("the bundle's config: {e}")))?;
    if config.files.len() != manifest.layers.len() {
        return Err(refused(format!(
            "the config lists {} files, the manifest {} layers",
            config.files.len(),
            manifest.layers.len()
        )));
    }
    let mut files = Vec::with_capacity(manifest.layers.len());
    for (layer, entry) in manifest.layers.iter().zip(&config.files) {
        let name = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(TITLE))
            .cloned()
            .unwrap_or_default();
        if layer.media_type != FILE_MEDIA_TYPE || name != entry.name || layer.digest != entry.digest
        {
            return Err(refused(format!(
                "layer {} ({name:?}) does not match the config's entry {:?}",
                layer.digest, entry.name
            )));
        }
        if !plain_name(&name) {
            return Err(refused(format!(
                "{name:?} is not a file name a policy directory holds"
            )));
        }
        let mut bytes = Vec::with_capacity(layer.size.max(0) as usize);
        client
            .client
            .pull_blob(&target, layer, &mut bytes)
            .await
            .map_err(|e| RegistryError::of(r, e))?;
        if crate::cache::digest(&bytes) != layer.digest {
            return Err(refused(format!(
                "digest mismatch: {name}: the manifest names {}, the registry served other bytes",
                layer.digest
            )));
        }
        files.push(BundleFile { name, bytes });
    }
    Ok(Published { digest: got, files })
}

/// What [`STATE_FILE`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// The reference followed.
    pub reference: String,
    /// The bundle's manifest digest.
    pub digest: String,
    /// The files it put in the directory.
    pub files: Vec<String>,
    /// When, RFC 3339.
    pub installed_at: String,
}

/// The last installed bundle of `dir`, if any (an unreadable record is none:
/// the next pull installs again).
pub fn installed(dir: &Path) -> Option<Installed> {
    let text = std::fs::read(dir.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Installs `bundle` (pulled from `reference`) into `dir` after [`check`]:
/// each file written atomically, modules first, then manifests, then
/// `routes.toml` (the reloader never sees a manifest before its module);
/// files of the previous bundle it does not carry are removed; then the
/// record. Files the bundle does not name are left alone.
///
/// # Errors
/// [`BundleError::Invalid`] (nothing written), [`BundleError::Io`].
pub fn install(dir: &Path, reference: &str, bundle: &Published) -> Result<Installed, BundleError> {
    check(&bundle.files, dir)?;
    let rank = |n: &str| match n {
        ROUTES_FILE => 2,
        n if n.ends_with(".toml") => 1,
        _ => 0,
    };
    let mut order: Vec<&BundleFile> = bundle.files.iter().collect();
    order.sort_by_key(|f| (rank(&f.name), f.name.clone()));
    for f in order {
        let path = dir.join(&f.name);
        if std::fs::read(&path).is_ok_and(|b| b == f.bytes) {
            continue;
        }
        write_atomic(&path, &f.bytes).map_err(io(format!("writing {}", path.display())))?;
    }
    let now: BTreeSet<&str> = bundle.files.iter().map(|f| f.name.as_str()).collect();
    if let Some(previous) = installed(dir) {
        // Manifests first, so no policy is left naming a removed module.
        let mut gone: Vec<&String> = previous
            .files
            .iter()
            .filter(|n| !now.contains(n.as_str()) && plain_name(n))
            .collect();
        gone.sort_by_key(|n| std::cmp::Reverse(rank(n)));
        for n in gone {
            let path = dir.join(n);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("removing {}", path.display()))(e)),
            }
        }
    }
    let record = Installed {
        reference: reference.to_string(),
        digest: bundle.digest.clone(),
        files: bundle.files.iter().map(|f| f.name.clone()).collect(),
        installed_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    let path = dir.join(STATE_FILE);
    write_atomic(
        &path,
        &serde_json::to_vec_pretty(&record).expect("a bundle record serializes"),
    )
    .map_err(io(format!("writing {}", path.display())))?;
    Ok(record)
}

/// Follows a bundle tag into a policy directory (`oasis serve --bundle`).
#[derive(Clone)]
pub struct BundleFollower {
    client: RegistryClient,
    reference: OciRef,
    dir: PathBuf,
    /// Where its status is reported, and what reconciles after a change
    /// of it ([`BundleFollower::reporting_to`]).
    reloader: Option<Reloader>,
}

impl std::fmt::Debug for BundleFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleFollower")
            .field("reference", &self.reference.to_string())
            .field("dir", &self.dir)
            .finish()
    }
}

impl BundleFollower {
    /// A follower of `reference` into `dir`.
    pub fn new(config: RegistryConfig, reference: OciRef, dir: PathBuf) -> Self {
        BundleFollower {
            client: RegistryClient::new(config),
            reference,
            dir,
            reloader: None,
        }
    }

    /// Reports the bundle's status through `reloader`'s registry source
    /// (`/v1/policies` `oci`, `/readyz`, heartbeats), reconciling when it
    /// changes.
    pub fn reporting_to(mut self, reloader: Reloader) -> Self {
        self.reloader = Some(reloader);
        self
    }

    /// Publishes the status after a poll.
    async fn report(&self, failures: u32, since: Option<SystemTime>, error: Option<&BundleError>) {
        let Some(reloader) = &self.reloader else {
            return;
        };
        let installed = installed(&self.dir);
        let status = OciStatus {
            reference: format!("{} (bundle)", self.reference),
            status: if error.is_some() { "failing" } else { "ok" },
            kind: error.map(|e| match e {
                BundleError::Registry(r) => r.kind(),
                BundleError::Invalid(_) => "invalid",
                BundleError::Io { .. } => "io",
            }),
            error: error.map(ToString::to_string),
            failures,
            failing_since: since.as_ref().map(crate::control::source::oci::rfc3339),
            serving_from: installed.as_ref().map(|_| {
                if error.is_some_and(|e| matches!(e, BundleError::Registry(_))) {
                    "store"
                } else {
                    "registry"
                }
            }),
            manifest_digest: installed.as_ref().map(|i| i.digest.clone()),
            module_digest: None,
            pulled_at: installed.map(|i| i.installed_at),
        };
        if reloader.sources().oci.set_bundle_status(status) {
            reloader.reconcile().await;
        }
    }

    /// One pass: resolve the tag; when it names another bundle than the
    /// installed one, pull, check and install it. Returns the installed
    /// record when something was installed.
    ///
    /// # Errors
    /// [`BundleError`]; the directory is unchanged.
    pub async fn poll(&self) -> Result<Option<Installed>, BundleError> {
        let digest = match self.reference.digest() {
            Some(d) => d.to_string(),
            None => self.client.resolve(&self.reference).await?,
        };
        if installed(&self.dir).is_some_and(|i| i.digest == digest) {
            return Ok(None);
        }
        let bundle = pull(&self.client, &self.reference, Some(&digest)).await?;
        let dir = self.dir.clone();
        let reference = self.reference.to_string();
        tokio::task::spawn_blocking(move || install(&dir, &reference, &bundle))
            .await
            .expect("the install task does not panic")
            .map(Some)
    }

    /// Polls every `poll` until `shutdown`; a failure is logged and retried
    /// with the registry's backoff, and the directory keeps what it has.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = self.client.config().clone();
        let mut failures = 0u32;
        let mut since: Option<SystemTime> = None;
        let mut last_error: Option<String> = None;
        loop {
            let result = self.poll().await;
            let wait = match &result {
                Ok(installed) => {
                    if let Some(i) = installed {
                        tracing::info!(reference = %i.reference, digest = %i.digest, files = i.files.len(), "policy bundle installed");
                    }
                    if failures > 0 {
                        tracing::info!(reference = %self.reference, "policy bundle reachable again");
                    }
                    failures = 0;
                    since = None;
                    last_error = None;
                    config.poll
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    since.get_or_insert_with(SystemTime::now);
                    let text = e.to_string();
                    if last_error.as_deref() != Some(&text) {
                        tracing::warn!(reference = %self.reference, error = %text, "policy bundle not installed; the directory keeps its set");
                        last_error = Some(text);
                    }
                    config.backoff(failures)
                }
            };
            self.report(failures, since, result.as_ref().err()).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> BundleFile {
        BundleFile {
            name: name.into(),
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_set_is_checked_as_a_whole_naming_each_problem() {
        let dir = Path::new("/srv/policies");
        let ok = vec![
            file("p.toml", "module = \"p.wasm\"\n"),
            file("p.wasm", "\0asm"),
            file("routes.toml", "[routes.radio]\npolicy = \"p\"\n"),
        ];
        check(&ok, dir).unwrap();
        let bad = vec![
            file(
                "p.toml",
                "module = \"missing.wasm\"\n[limits]\ndeadline_ms = 0\n",
            ),
            file("routes.toml", "[routes.radio]\npolicy = \"q\"\n"),
            file("../x.toml", ""),
        ];
        let BundleError::Invalid(problems) = check(&bad, dir).unwrap_err() else {
            panic!("not invalid")
        };
        let all = problems.join("\n");
        assert!(
            all.contains("p.toml: line 3: [limits] deadline_ms"),
            "{all}"
        );
        assert!(
            all.contains("module /srv/policies/missing.wasm is not in the bundle"),
            "{all}"
        );
        assert!(
            all.contains("route `radio`: policy `q` has no manifest"),
            "{all}"
        );
        assert!(all.contains("\"../x.toml\": not a file name"), "{all}");
    }

    #[test]
    fn install_writes_the_set_removes_what_the_last_bundle_had_and_keeps_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("rollout.json"), "{}").unwrap();
        let first = Published {
            digest: "sha256:1".into(),
            files: vec![
                file("a.toml", "module = \"a.wasm\"\n"),
                file("a.wasm", "A"),
                file("b.toml", "module = \"b.wasm\"\n"),
                file("b.wasm", "B"),
            ],
        };
        install(dir, "r", &first).unwrap();
        assert_eq!(installed(dir).unwrap().digest, "sha256:1");
        let second = Published {
            digest: "sha256:2".into(),
            files: vec![
                file("a.toml", "module = \"a.wasm\"\n"),
                file("a.wasm", "A2"),
            ],
        };
        install(dir, "r", &second).unwrap();
        assert_eq!(std::fs::read(dir.join("a.wasm")).unwrap(), b"A2");
        assert!(!dir.join("b.toml").exists() && !dir.join("b.wasm").exists());
        assert!(dir.join("rollout.json").exists(), "not the bundle's: kept");
        // An invalid set writes nothing.
        let bad = Published {
            digest: "sha256:3".into(),
            files: vec![file("a.toml", "module = \"gone.wasm\"\n")],
        };
        assert!(matches!(
            install(dir, "r", &bad),
            Err(BundleError::Invalid(_))
        ));
        assert_eq!(installed(dir).unwrap().digest, "sha256:2");
        assert_eq!(std::fs::read(dir.join("a.wasm")).unwrap(), b"A2");
    }
}
