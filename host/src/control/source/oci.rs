//! The registry source: policy modules as OCI artifacts.
//!
//! A manifest names a module `oci://registry/repository:tag` (followed:
//! the tag is polled and resolved to a digest) or
//! `oci://registry/repository@sha256:…` (pinned: pulled once). The artifact
//! has the CNCF wasm layout: config media type
//! [`WASM_CONFIG_MEDIA_TYPE`], one layer of [`WASM_LAYER_MEDIA_TYPE`] (the
//! component), and the annotations of [`annotation`] (`oasis push` writes
//! them).
//!
//! ```text
//! OciSource::run (background, one task)        reconciliation (blocking)
//!   per reference, when due:                     OciSource::fetch(key, ref)
//!     HEAD the tag ─► manifest digest              the bytes pulled in this run,
//!     new digest? GET manifest (digest checked),   else the version this policy last
//!       check the layout, GET the layer            accepted from the reference (the
//!       (digest checked) ─► held in memory         version store), else "not pulled"
//!     ok: next poll after `poll`
//!     failed: retry after 1 s, 2, 4 … (capped), reported
//!     anything changed ─► ask for a reconciliation
//! ```
//!
//! A pulled module goes through the same validate-then-swap pipeline as a
//! file: one that does not load is refused and reported, the last good
//! version keeps serving. A policy that loads is recorded in the version
//! store (by digest) and in an index (`versions/.oci-index.json`: which
//! version each policy last accepted from which reference), so a restart
//! with the registry down serves it again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::credentials::{Credential, Credentials};
use super::signing::{
    self, PrivateKey, PublicKey, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, SignatureLayer,
};
use super::{Fetched, ModuleRef, PolicySource, SourceError};
use crate::control::persist::write_atomic;
use crate::control::versions::{VERSIONS_DIR, VersionStore};

/// The scheme of a registry module in a manifest.
pub const SCHEME: &str = "oci://";

/// Config media type of a wasm artifact (CNCF TAG Runtime's wasm OCI
/// artifact layout).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";

/// Media type of the component layer.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";

/// Annotations `oasis push` writes on the artifact's manifest.
pub mod annotation {
    /// The policy's name (from its metadata).
    pub const NAME: &str = "dev.oasis.policy.name";
    /// The policy's version (semver, from its metadata).
    pub const VERSION: &str = "dev.oasis.policy.version";
    /// The contract it was built against, `oasis:policy@0.2.0`.
    pub const CONTRACT: &str = "dev.oasis.policy.contract";
    /// SHA-256 of the settings JSON it was validated with (`--manifest`).
    pub const SETTINGS_SHA256: &str = "dev.oasis.policy.settings-sha256";
    /// The module's digest (the version's name in Oasis).
    pub const DIGEST: &str = "dev.oasis.policy.digest";
    /// The standard OCI title (the policy's name).
    pub const OCI_TITLE: &str = "org.opencontainers.image.title";
    /// The standard OCI version.
    pub const OCI_VERSION: &str = "org.opencontainers.image.version";
    /// The standard OCI creation time (RFC 3339).
    pub const OCI_CREATED: &str = "org.opencontainers.image.created";
}

/// A registry reference: `registry/repository:tag` or
/// `registry/repository@sha256:<64 hex>`, always naming its registry.
#[derive(Clone)]
pub struct OciRef {
    /// As written, without the scheme.
    text: String,
    pub(crate) reference: Reference,
}

impl PartialEq for OciRef {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for OciRef {}

impl fmt::Debug for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OciRef({})", self.text)
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.text)
    }
}

impl std::str::FromStr for OciRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl OciRef {
    /// Parses `oci://registry/repository:tag`, `…@sha256:…`, or the same
    /// without the scheme (as the commands take it).
    ///
    /// # Errors
    /// A message saying what is wrong: no registry, no tag or digest, a
    /// malformed name or digest.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bare = text.strip_prefix(SCHEME).unwrap_or(text);
        let shape =
            "expected oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST";
        let (first, rest) = bare
            .split_once('/')
            .ok_or_else(|| format!("`{text}` names no registry: {shape}"))?;
        if !(first.contains('.') || first.contains(':') || first == "localhost") {
            return Err(format!(
                "`{text}` names no registry (`{first}` is not a host: it needs a dot, a port or to be `localhost`): {shape}"
            ));
        }
        let last = rest.rsplit('/').next().unwrap_or(rest);
        if !last.contains(':') && !rest.contains('@') {
            return Err(format!(
                "`{text}` names no tag or digest (no implicit `latest`): {shape}"
            ));
        }
        let reference = Reference::try_from(bare).map_err(|e| format!("`{text}`: {e}: {shape}"))?;
        Ok(OciRef {
            text: bare.to_string(),
            reference,
        })
    }

    /// The reference without `oci://`.
    pub fn without_scheme(&self) -> &str {
        &self.text
    }

    /// The registry (`host` or `host:port`).
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The repository.
    pub fn repository(&self) -> &str {
        self.reference.repository()
    }

    /// The pinned digest, for a digest reference.
    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// The tag, for a tag reference.
    pub fn tag(&self) -> Option<&str> {
        self.reference.tag()
    }
}

/// How Oasis reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Registries (`host` or `host:port`) spoken to over plain HTTP; every
    /// other one over HTTPS.
    pub plain_http: BTreeSet<String>,
    /// Credentials by registry.
    pub credentials: Credentials,
    /// Interval between two polls of a tag.
    pub poll: Duration,
    /// Longest wait between two attempts after failures (the backoff
    /// doubles from `min(poll, 1 s)` up to this).
    pub backoff_max: Duration,
    /// Largest module pulled.
    pub max_module_bytes: usize,
    /// Connect timeout of one request.
    pub connect_timeout: Duration,
    /// Read timeout of one request.
    pub read_timeout: Duration,
    /// Public keys one of which must have signed every registry module
    /// (`--verify-key`); empty: signatures are not required (a manifest's
    /// `verify_key` may still require one).
    pub verify_keys: Vec<PublicKey>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            plain_http: BTreeSet::new(),
            credentials: Credentials::none(),
            poll: Duration::from_secs(30),
            backoff_max: Duration::from_secs(300),
            max_module_bytes: 256 << 20,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            verify_keys: Vec::new(),
        }
    }
}

impl RegistryConfig {
    /// The wait before attempt `failures + 1` after `failures` failures in
    /// a row (at least one): `min(poll, 1 s)` doubled per failure, at most
    /// `backoff_max`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let first = self.poll.min(Duration::from_secs(1));
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        first
            .saturating_mul(factor)
            .min(self.backoff_max.max(first))
    }
}

/// Why a registry operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry did not answer (connection refused, timeout, TLS).
    #[error("{reference}: cannot reach the registry: {message}")]
    Unreachable {
        /// The reference.
        reference: String,
        /// Why.
        message: String,
    },
    /// The registry answered with an error (not found, unauthorized, …).
    #[error("{reference}: the registry refused the request: {message}")]
    Registry {
        /// The reference.
        reference: String,
        /// What it said.
        message: String,
    },
    /// What the registry served is refused: a digest that does not match
    /// the content, not a wasm artifact, too large.
    #[error("{reference}: refused: {message}")]
    Refused {
        /// The reference.
        reference: String,
        /// Why.
        message: String,
    },
}

impl RegistryError {
    /// `unreachable`, `registry` or `invalid` (what it served is refused).
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::Unreachable { .. } => "unreachable",
            RegistryError::Registry { .. } => "registry",
            RegistryError::Refused { .. } => "invalid",
        }
    }

    pub(crate) fn of(reference: &OciRef, e: OciDistributionError) -> Self {
        let reference = reference.to_string();
        let message = chain(&e);
        match &e {
            OciDistributionError::RequestError(r)
                if r.is_connect() || r.is_timeout() || r.is_request() =>
            {
                RegistryError::Unreachable { reference, message }
            }
            OciDistributionError::IoError(_) => RegistryError::Unreachable { reference, message },
            OciDistributionError::DigestError(_) => RegistryError::Refused {
                reference,
                message: format!("digest mismatch: {message}"),
            },
            OciDistributionError::IncompatibleLayerMediaTypeError(_)
            | OciDistributionError::PullNoLayersError
            | OciDistributionError::ManifestParsingError(_)
            | OciDistributionError::VersionedParsingError(_)
            | OciDistributionError::UnsupportedSchemaVersionError(_)
            | OciDistributionError::UnsupportedMediaTypeError(_) => {
                RegistryError::Refused { reference, message }
            }
            _ => RegistryError::Registry { reference, message },
        }
    }

    pub(crate) fn refused(reference: &OciRef, message: String) -> Self {
        RegistryError::Refused {
            reference: reference.to_string(),
            message,
        }
    }
}

/// An error and its causes, one line (reqwest hides "connection refused"
/// in a source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

/// A module pulled from a registry and verified.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Digest of the artifact's manifest (what the tag resolved to).
    pub manifest_digest: String,
    /// Digest of the component (the version's name in Oasis).
    pub module_digest: String,
    /// The component.
    pub bytes: Vec<u8>,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it was pulled.
    pub pulled_at: SystemTime,
}

/// What a push published.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Digest of the artifact's manifest.
    pub manifest_digest: String,
    /// Digest of the component.
    pub module_digest: String,
}

/// A registry client: resolve, pull and push wasm artifacts.
#[derive(Clone)]
pub struct RegistryClient {
    pub(crate) client: oci_client::Client,
    config: RegistryConfig,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("config", &self.config)
            .finish()
    }
}

impl RegistryClient {
    /// A client with `config`.
    pub fn new(config: RegistryConfig) -> Self {
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(config.plain_http.iter().cloned().collect()),
            use_monolithic_push: true,
            connect_timeout: Some(config.connect_timeout),
            read_timeout: Some(config.read_timeout),
            platform_resolver: None,
            ..Default::default()
        });
        RegistryClient { client, config }
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    pub(crate) fn auth(&self, r: &OciRef) -> RegistryAuth {
        match self.config.credentials.for_host(r.registry()) {
            Some(Credential::Basic { user, password }) => {
                RegistryAuth::Basic(user.clone(), password.clone())
            }
            Some(Credential::Bearer(token)) => RegistryAuth::Bearer(token.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// The digest of the manifest `r` names now (a tag's current target).
    ///
    /// # Errors
    /// [`RegistryError`].
    pub async fn resolve(&self, r: &OciRef) -> Result<String, RegistryError> {
        self.client
            .fetch_manifest_digest(&r.reference, &self.auth(r))
            .await
            .map_err(|e| RegistryError::of(r, e))
    }

    /// Pulls the module `r` names, or the manifest `manifest_digest` of its
    /// repository when given (what a tag was resolved to), and verifies it:
    /// the manifest against its digest, the wasm layout, the layer against
    /// the digest the manifest gives it.
    ///
    /// # Errors
    /// [`RegistryError`]: unreachable, an error answer, or refused content.
    pub async fn pull(
        &self,
        r: &OciRef,
        manifest_digest: Option<&str>,
    ) -> Result<Pulled, RegistryError> {
        let target = match manifest_digest {
            Some(d) => r.reference.clone_with_digest(d.to_string()),
            None => r.reference.clone(),
        };
        let auth = self.auth(r);
        let (manifest, digest) = self
            .client
            .pull_manifest(&target, &auth)
            .await
            .map_err(|e| RegistryError::of(r, e))?;
        for expected in [manifest_digest, r.digest()].into_iter().flatten() {
            if digest != expected {
                return Err(RegistryError::refused(
                    r,
                    format!("digest mismatch: asked for manifest {expected}, got {digest}"),
                ));
            }
        }
        let OciManifest::Image(manifest) = manifest else {
            return Err(RegistryError::refused(
                r,
                "an image index, not a wasm artifact (push the module with `oasis push`)".into(),
            ));
        };
        if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
            return Err(RegistryError::refused(
                r,
                format!(
                    "config media type `{}` is not a wasm artifact's (`{WASM_CONFIG_MEDIA_TYPE}`; push the module with `oasis push`)",
                    manifest.config.media_type
                ),
            ));
        }
        let [layer] = manifest.layers.as_slice() else {
            return Err(RegistryError::refused(
                r,
                format!(
                    "{} layers; a policy artifact has one, the component",
                    manifest.layers.len()
                ),
            ));
        };
        if layer.media_type != WASM_LAYER_MEDIA_TYPE {
            return Err(RegistryError::refused(
                r,
                format!(
                    "layer media type `{}` is not `{WASM_LAYER_MEDIA_TYPE}`",
                    layer.media_type
                ),
            ));
        }
        let size = usize::try_from(layer.size).unwrap_or(usize::MAX);
        if size > self.config.max_module_bytes {
            return Err(RegistryError::refused(
                r,
                format!(
                    "the module is {} bytes, more than the {} pulled at most",
                    layer.size, self.config.max_module_bytes
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(size);
        self.client
            .pull_blob(&target, &layer, &mut bytes)
            .await
            .map_err(|e| RegistryError::of(r, e))?;
        // The client checks the digest too; the module's digest is the
        // version's name in Oasis, so it is checked here, where it matters.
        let actual = crate::cache::digest(&bytes);
        if actual != layer.digest {
            return Err(RegistryError::refused(
                r,
                format!(
                    "digest mismatch: the manifest names layer {}, the registry served {actual}",
                    layer.digest
                ),
            ));
        }
        Ok(Pulled {
            manifest_digest: digest,
            module_digest: actual,
            bytes,
            annotations: manifest.annotations.clone().unwrap_or_default(),
            pulled_at: SystemTime::now(),
        })
    }

    /// Pushes `wasm` to `r` (a tag) as a wasm artifact with `annotations`.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub async fn push(
        &self,
        r: &OciRef,
        wasm: &[u8],
        annotations: BTreeMap<String, String>,
    ) -> Result<Pushed, RegistryError> {
        if r.digest().is_some() {
            return Err(RegistryError::refused(
                r,
                "push to a tag (`REGISTRY/REPOSITORY:TAG`): a digest names what was pushed".into(),
            ));
        }
        let module_digest = crate::cache::digest(wasm);
        let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let config = serde_json::json!({
            "created": created,
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [module_digest],
        });
        let config = Config::new(
            serde_json::to_vec(&config).map_err(|e| RegistryError::refused(r, e.to_string()))?,
            WASM_CONFIG_MEDIA_TYPE.to_string(),
            None,
        );
        let title = annotations.get(annotation::NAME).cloned();
        let layer = ImageLayer::new(
            wasm.to_vec(),
            WASM_LAYER_MEDIA_TYPE.to_string(),
            title.map(|t| {
                BTreeMap::from([(annotation::OCI_TITLE.to_string(), format!("{t}.wasm"))])
            }),
        );
        let mut annotations = annotations;
        annotations.insert(annotation::DIGEST.into(), module_digest.clone());
        annotations.insert(annotation::OCI_CREATED.into(), created);
        let layers = [layer];
        let mut manifest = OciImageManifest::build(&layers, &config, Some(annotations));
        manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_string());
        let auth = self.auth(r);
        self.client
            .push(&r.reference, &layers, config, &auth, Some(manifest))
            .await
            .map_err(|e| RegistryError::of(r, e))?;
        let manifest_digest = self.resolve(r).await?;
        Ok(Pushed {
            manifest_digest,
            module_digest,
        })
    }
}

impl RegistryClient {
    /// The signature layers cosign keeps for manifest `digest` of `r`'s
    /// repository (tag `sha256-<hex>.sig`): each payload (verified against
    /// its layer digest) with its signature annotation. No such tag: none.
    ///
    /// # Errors
    /// [`RegistryError`]: unreachable, an error answer other than "not
    /// found", or a malformed signature manifest.
    pub async fn signatures(
        &self,
        r: &OciRef,
        digest: &str,
    ) -> Result<Vec<SignatureLayer>, RegistryError> {
        let target = Reference::with_tag(
            r.registry().to_string(),
            r.repository().to_string(),
            signing::signature_tag(digest),
        );
        let auth = self.auth(r);
        let manifest = match self.client.pull_manifest(&target, &auth).await {
            Ok((m, _)) => m,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(RegistryError::of(r, e)),
        };
        let OciManifest::Image(manifest) = manifest else {
            return Err(RegistryError::refused(
                r,
                format!(
                    "the signature tag {} holds an image index",
                    signing::signature_tag(digest)
                ),
            ));
        };
        let mut out = Vec::new();
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        {
            if layer.size > 1 << 20 {
                return Err(RegistryError::refused(
                    r,
                    format!("a signature payload of {} bytes", layer.size),
                ));
            }
            let mut payload = Vec::new();
            self.client
                .pull_blob(&target, layer, &mut payload)
                .await
                .map_err(|e| RegistryError::of(r, e))?;
            if crate::cache::digest(&payload) != layer.digest {
                return Err(RegistryError::refused(
                    r,
                    format!("digest mismatch of signature payload {}", layer.digest),
                ));
            }
            out.push(SignatureLayer {
                payload,
                signature: layer
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(SIGNATURE_ANNOTATION).cloned()),
            });
        }
        Ok(out)
    }

    /// Signs manifest `digest` of `r`'s repository with `key` as `cosign
    /// sign --key` does, and pushes the signature to its `.sig` tag
    /// (replacing the signatures stored there). Returns the tag.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub async fn push_signature(
        &self,
        r: &OciRef,
        digest: &str,
        key: &PrivateKey,
    ) -> Result<String, RegistryError> {
        let payload = signing::payload(&format!("{}/{}", r.registry(), r.repository()), digest);
        let signature = key.sign(&payload);
        self.push_signature_layer(r, digest, payload, signature)
            .await
    }

    /// Pushes one signature layer (`payload`, base64 `signature`) to the
    /// `.sig` tag of manifest `digest`, as cosign lays it out (what
    /// [`push_signature`](Self::push_signature) signs and writes). Returns
    /// the tag.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub async fn push_signature_layer(
        &self,
        r: &OciRef,
        digest: &str,
        payload: Vec<u8>,
        signature: String,
    ) -> Result<String, RegistryError> {
        let tag = signing::signature_tag(digest);
        let target = Reference::with_tag(
            r.registry().to_string(),
            r.repository().to_string(),
            tag.clone(),
        );
        let payload_digest = crate::cache::digest(&payload);
        let layer = ImageLayer::new(
            payload,
            SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
            Some(BTreeMap::from([(
                SIGNATURE_ANNOTATION.to_string(),
                signature,
            )])),
        );
        // The config cosign writes: an image config whose one layer is
        // the payload.
        let config = serde_json::json!({
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [payload_digest]},
        });
        let config = Config::oci_v1(
            serde_json::to_vec(&config).map_err(|e| RegistryError::refused(r, e.to_string()))?,
            None,
        );
        let layers = [layer];
        let mut manifest = OciImageManifest::build(&layers, &config, None);
        manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_string());
        self.client
            .push(&target, &layers, config, &self.auth(r), Some(manifest))
            .await
            .map_err(|e| RegistryError::of(r, e))?;
        Ok(tag)
    }
}

/// Whether a manifest request failed because there is no such manifest.
fn is_not_found(e: &OciDistributionError) -> bool {
    use oci_client::errors::OciErrorCode;
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

/// What the registry source reports about one reference (`/v1/policies`
/// `oci`, `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OciStatus {
    /// The reference, `oci://…`.
    pub reference: String,
    /// `ok` (the last poll reached the registry), `pending` (not polled
    /// yet) or `failing` (the last poll failed: serving goes on with what
    /// was pulled before, retried with backoff).
    pub status: &'static str,
    /// With `failing`: `unreachable`, `registry` (an error answer) or
    /// `invalid` (what it served is refused: a digest mismatch, not a wasm
    /// artifact, too large).
    pub kind: Option<&'static str>,
    /// The last error.
    pub error: Option<String>,
    /// Failed polls in a row.
    pub failures: u32,
    /// Since when it fails, RFC 3339.
    pub failing_since: Option<String>,
    /// What the module comes from now: `registry` (pulled in this run),
    /// `store` (kept from an earlier run: the registry was not reached
    /// since the start), or absent (nothing to serve).
    pub serving_from: Option<&'static str>,
    /// The manifest digest pulled in this run (a tag's last target).
    pub manifest_digest: Option<String>,
    /// The component's digest pulled in this run.
    pub module_digest: Option<String>,
    /// When it was pulled, RFC 3339.
    pub pulled_at: Option<String>,
}

/// RFC 3339, UTC, milliseconds (as the rest of the status API).
pub(crate) fn rfc3339(t: &SystemTime) -> String {
    humantime::format_rfc3339_millis(*t).to_string()
}

/// One reference's state in the source.
struct RefState {
    reference: OciRef,
    pulled: Option<Arc<Pulled>>,
    /// The signature layers of `pulled`'s manifest digest, when signatures
    /// are wanted (fetched again at each poll, so a signature added or
    /// fixed after the push is seen); `Err`: they could not be read.
    signatures: Option<Result<Vec<SignatureLayer>, String>>,
    /// Polled at least once in this run.
    attempted: bool,
    failures: u32,
    error: Option<RegistryError>,
    failing_since: Option<SystemTime>,
    next_attempt: Instant,
}

/// Which version each policy last accepted from which reference, kept
/// across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Index {
    accepted: BTreeMap<String, Accepted>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Accepted {
    /// The reference, without the scheme.
    reference: String,
    /// The module's digest.
    digest: String,
}

/// File of the index inside the version store.
pub const INDEX_FILE: &str = ".oci-index.json";

/// The registry source of one policy directory.
pub struct OciSource {
    client: RegistryClient,
    store: VersionStore,
    index_path: PathBuf,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
    /// A manifest asked for a signature (`verify_key`): signatures are
    /// fetched even without `--verify-key`.
    wants_signatures: std::sync::atomic::AtomicBool,
    /// The status of the policy-set bundle followed (`--bundle`), reported
    /// beside the modules' ([`OciSource::set_bundle_status`]).
    bundle: Mutex<Option<OciStatus>>,
}

struct State {
    refs: BTreeMap<String, RefState>,
    index: Index,
}

impl fmt::Debug for OciSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciSource")
            .field("client", &self.client)
            .field("index", &self.index_path)
            .finish()
    }
}

impl OciSource {
    /// The registry source of policy directory `dir`, pulling with
    /// `client` and falling back to `store` for what earlier runs accepted.
    pub fn new(client: RegistryClient, store: VersionStore, dir: &Path) -> Self {
        let index_path = dir.join(VERSIONS_DIR).join(INDEX_FILE);
        let index = std::fs::read(&index_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        OciSource {
            client,
            store,
            index_path,
            state: Mutex::new(State {
                refs: BTreeMap::new(),
                index,
            }),
            wake: tokio::sync::Notify::new(),
            wants_signatures: std::sync::atomic::AtomicBool::new(false),
            bundle: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the references no manifest names any more (they are no
    /// longer polled).
    pub fn retain(&self, wanted: &BTreeSet<String>) {
        self.lock().refs.retain(|k, _| wanted.contains(k));
    }

    /// Whether signatures are read: `--verify-key` given, or a manifest's
    /// `verify_key` seen.
    fn wants_signatures(&self) -> bool {
        !self.client.config().verify_keys.is_empty()
            || self
                .wants_signatures
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a reference was never polled in this run.
    pub fn has_pending(&self) -> bool {
        self.lock().refs.values().any(|r| !r.attempted)
    }

    /// Reports the followed bundle's status with the modules' (in
    /// `/v1/policies` `oci`, `/readyz` and heartbeats). Returns whether it
    /// changed.
    pub fn set_bundle_status(&self, status: OciStatus) -> bool {
        let mut b = self.bundle.lock().unwrap_or_else(|e| e.into_inner());
        let changed = b.as_ref() != Some(&status);
        *b = Some(status);
        changed
    }

    /// The status of every reference, by reference (the bundle's last).
    pub fn status(&self) -> Vec<OciStatus> {
        let bundle = self
            .bundle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let st = self.lock();
        st.refs
            .values()
            .map(|r| {
                let stored = st
                    .index
                    .accepted
                    .values()
                    .any(|a| a.reference == r.reference.text);
                OciStatus {
                    reference: r.reference.to_string(),
                    status: match (&r.error, r.attempted) {
                        (Some(_), _) => "failing",
                        (None, true) => "ok",
                        (None, false) => "pending",
                    },
                    kind: r.error.as_ref().map(RegistryError::kind),
                    error: r.error.as_ref().map(|e| e.to_string()),
                    failures: r.failures,
                    failing_since: r.failing_since.as_ref().map(rfc3339),
                    serving_from: if r.pulled.is_some() {
                        Some("registry")
                    } else if stored {
                        Some("store")
                    } else {
                        None
                    },
                    manifest_digest: r.pulled.as_ref().map(|p| p.manifest_digest.clone()),
                    module_digest: r.pulled.as_ref().map(|p| p.module_digest.clone()),
                    pulled_at: r.pulled.as_ref().map(|p| rfc3339(&p.pulled_at)),
                }
            })
            .chain(bundle)
            .collect()
    }

    /// Polls every reference that was never polled, once (the initial
    /// load waits for this, so that ready means "the registry was asked").
    pub async fn poll_pending(&self) -> bool {
        let due: Vec<OciRef> = self
            .lock()
            .refs
            .values()
            .filter(|r| !r.attempted)
            .map(|r| r.reference.clone())
            .collect();
        let mut changed = false;
        for r in due {
            changed |= self.refresh(&r).await;
        }
        changed
    }

    /// Polls the references when due until `shutdown`, calling `changed`
    /// when what the source holds or reports changed (a new pull, a
    /// failure, a recovery).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, changed: impl Fn() + Send) {
        loop {
            let now = Instant::now();
            let due: Vec<OciRef> = self
                .lock()
                .refs
                .values()
                .filter(|r| r.next_attempt <= now)
                .map(|r| r.reference.clone())
                .collect();
            let mut any = false;
            for r in due {
                if shutdown.is_cancelled() {
                    return;
                }
                any |= self.refresh(&r).await;
            }
            if any {
                changed();
            }
            let next = self
                .lock()
                .refs
                .values()
                .map(|r| r.next_attempt)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One poll of `r`. Returns whether anything visible changed.
    async fn refresh(&self, r: &OciRef) -> bool {
        let current = self
            .lock()
            .refs
            .get(&r.text)
            .and_then(|s| s.pulled.as_ref().map(|p| p.manifest_digest.clone()));
        let result: Result<Option<Pulled>, RegistryError> = async {
            if r.digest().is_some() {
                // Immutable: pulled once.
                if current.is_some() {
                    return Ok(None);
                }
                return self.client.pull(r, None).await.map(Some);
            }
            let digest = self.client.resolve(r).await?;
            if current.as_deref() == Some(digest.as_str()) {
                return Ok(None);
            }
            self.client.pull(r, Some(&digest)).await.map(Some)
        }
        .await;
        // The signatures of what serves now (a new pull, or the current
        // one: a signature may be added or fixed after the push).
        let wants = self.wants_signatures();
        let signed_digest = match &result {
            Ok(Some(p)) => Some(p.manifest_digest.clone()),
            Ok(None) => current.clone(),
            Err(_) => None,
        };
        let signatures = match signed_digest.filter(|_| wants) {
            Some(d) => Some(
                self.client
                    .signatures(r, &d)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            None => None,
        };
        let mut st = self.lock();
        let config = self.client.config();
        let Some(s) = st.refs.get_mut(&r.text) else {
            return false;
        };
        let first = !s.attempted;
        s.attempted = true;
        let mut signatures_changed = false;
        match (&result, signatures) {
            (Ok(Some(_)), sigs) => {
                signatures_changed = true;
                s.signatures = sigs;
            }
            (Ok(None), Some(Err(e))) if s.signatures.is_some() => {
                // Keep what was read before: a transient failure must not
                // unverify a module that serves.
                tracing::warn!(reference = %r, error = %e, "cannot read the module's signatures; keeping those read before");
            }
            (Ok(None), Some(sigs)) => {
                if s.signatures.as_ref() != Some(&sigs) {
                    signatures_changed = true;
                    s.signatures = Some(sigs);
                }
            }
            _ => {}
        }
        match result {
            Ok(pulled) => {
                let recovered = s.error.take().is_some();
                if recovered {
                    tracing::info!(reference = %r, failures = s.failures, "registry reachable again");
                }
                s.failures = 0;
                s.failing_since = None;
                s.next_attempt = Instant::now()
                    + if r.digest().is_some() {
                        // Nothing to poll: a pinned digest never changes
                        // (its signatures may: polled when wanted).
                        if wants {
                            config.poll
                        } else {
                            Duration::from_secs(365 * 24 * 3600)
                        }
                    } else {
                        config.poll
                    };
                let new = pulled.is_some();
                if let Some(p) = pulled {
                    tracing::info!(
                        reference = %r, manifest_digest = %p.manifest_digest, module_digest = %p.module_digest,
                        previous = current.as_deref().unwrap_or("-"),
                        version = p.annotations.get(annotation::VERSION).map(String::as_str).unwrap_or("-"),
                        "pulled a policy module from the registry"
                    );
                    s.pulled = Some(Arc::new(p));
                }
                new || recovered || first || signatures_changed
            }
            Err(e) => {
                s.failures += 1;
                let wait = config.backoff(s.failures);
                s.next_attempt = Instant::now() + wait;
                s.failing_since.get_or_insert_with(SystemTime::now);
                let serving = s
                    .pulled
                    .as_ref()
                    .map(|p| p.module_digest.clone())
                    .unwrap_or_else(|| "what the version store kept, if anything".into());
                tracing::error!(
                    reference = %r, kind = e.kind(), error = %e, failures = s.failures,
                    retry_in_ms = wait.as_millis() as u64, %serving,
                    "registry poll failed; serving goes on with the module pulled before"
                );
                s.error = Some(e);
                true
            }
        }
    }
}

impl OciSource {
    /// [`PolicySource::fetch`] of `r` for policy `key`, requiring a valid
    /// signature by one of `--verify-key` and `extra_key` (a manifest's
    /// `verify_key`) when any is given. What the version store kept from an
    /// earlier run was verified when it was accepted and is not checked
    /// again (its signatures are read when the registry answers).
    ///
    /// # Errors
    /// [`SourceError`]: not pulled, or [`SourceError::Unverified`].
    pub fn fetch_with(
        &self,
        key: &str,
        r: &OciRef,
        extra_key: Option<&PublicKey>,
    ) -> Result<Fetched, SourceError> {
        if extra_key.is_some() {
            self.wants_signatures
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut st = self.lock();

        let s = st.refs.entry(r.text.clone()).or_insert_with(|| {
            self.wake.notify_one();
            RefState {
                reference: r.clone(),
                pulled: None,
                signatures: None,
                attempted: false,
                failures: 0,
                error: None,
                failing_since: None,
                next_attempt: Instant::now(),
            }
        });
        if let Some(p) = &s.pulled {
            let keys: Vec<&PublicKey> = self
                .client
                .config()
                .verify_keys
                .iter()
                .chain(extra_key)
                .collect();
            if !keys.is_empty() {
                let keys: Vec<PublicKey> = keys.into_iter().cloned().collect();
                let refused = |reason: String| SourceError::Unverified {
                    reference: r.to_string(),
                    digest: p.manifest_digest.clone(),
                    reason,
                };
                match &s.signatures {
                    None => {
                        // Wanted from now on (a manifest's `verify_key`):
                        // read at the next poll, made due now.
                        self.wants_signatures
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        s.next_attempt = Instant::now();
                        self.wake.notify_one();
                        return Err(SourceError::NotPulled {
                            reference: r.to_string(),
                            reason: "its signatures are not read yet".into(),
                            pending: true,
                        });
                    }
                    Some(Err(e)) => {
                        return Err(refused(format!("cannot read its signatures: {e}")));
                    }
                    Some(Ok(layers)) => {
                        if let Err(e) = signing::verify(layers, &p.manifest_digest, &keys) {
                            return Err(refused(e.to_string()));
                        }
                    }
                }
            }
            return Ok(Fetched {
                bytes: p.bytes.clone(),
                origin: format!("oci:{}@{}", r.text, p.manifest_digest),
                by: "registry",
            });
        }
        let reason = match &s.error {
            Some(e) => e.to_string(),
            None => "first pull pending".to_string(),
        };
        let pending = !s.attempted;
        // Not pulled in this run: the version this policy last accepted
        // from this reference, as the version store kept it.
        if let Some(a) = st.index.accepted.get(key).filter(|a| a.reference == r.text)
            && let Ok(bytes) = self.store.read_module(key, &a.digest)
            && crate::cache::digest(&bytes) == a.digest
        {
            return Ok(Fetched {
                bytes,
                origin: format!("oci:{}@{} (kept by the version store)", r.text, a.digest),
                by: "registry",
            });
        }
        Err(SourceError::NotPulled {
            reference: r.to_string(),
            reason,
            pending,
        })
    }
}

impl PolicySource for OciSource {
    fn kind(&self) -> &'static str {
        "oci"
    }

    fn fetch(&self, key: &str, reference: &ModuleRef) -> Result<Fetched, SourceError> {
        let ModuleRef::Oci(r) = reference else {
            return Err(SourceError::NotPulled {
                reference: reference.to_string(),
                reason: "not a registry reference".into(),
                pending: false,
            });
        };
        self.fetch_with(key, r, None)
    }
    fn accepted(&self, key: &str, reference: &ModuleRef, digest: &str) {
        let ModuleRef::Oci(r) = reference else {
            return;
        };
        let mut st = self.lock();
        let entry = Accepted {
            reference: r.text.clone(),
            digest: digest.to_string(),
        };
        if st.index.accepted.get(key) == Some(&entry) {
            return;
        }
        st.index.accepted.insert(key.to_string(), entry);
        let written = serde_json::to_vec_pretty(&st.index)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                if let Some(dir) = self.index_path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                write_atomic(&self.index_path, &json)
            });
        if let Err(e) = written {
            tracing::warn!(file = %self.index_path.display(), error = %e, "cannot record the accepted registry version; a restart with the registry down will not serve it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_registry_and_a_tag_or_digest() {
        let r = OciRef::parse("oci://127.0.0.1:5000/oasis/pid-pacing:v1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "oasis/pid-pacing");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/oasis/pid-pacing:v1");
        let d = format!("registry.example.com/p@sha256:{}", "a".repeat(64));
        let r = OciRef::parse(&d).unwrap();
        assert_eq!(r.digest().unwrap(), format!("sha256:{}", "a".repeat(64)));
        assert_eq!(r.without_scheme(), d);
        for (bad, says) in [
            ("oci://pid-pacing:v1", "names no registry"),
            ("oci://library/pid:v1", "is not a host"),
            ("oci://localhost:5000/pid", "no tag or digest"),
            ("oci://r.example.com/p@sha256:abc", "sha256"),
            ("oci://r.example.com/P:v1", "expected oci://"),
        ] {
            let e = OciRef::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn backoff_doubles_from_the_poll_interval_up_to_the_cap() {
        let c = RegistryConfig {
            poll: Duration::from_millis(200),
            backoff_max: Duration::from_millis(1500),
            ..Default::default()
        };
        let waits: Vec<u128> = (1..=6).map(|n| c.backoff(n).as_millis()).collect();
        assert_eq!(waits, vec![200, 400, 800, 1500, 1500, 1500]);
        let d = RegistryConfig::default();
        assert_eq!(d.backoff(1), Duration::from_secs(1));
        assert_eq!(d.backoff(4), Duration::from_secs(8));
        assert_eq!(d.backoff(40), Duration::from_secs(300));
    }
}
