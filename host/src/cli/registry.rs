//! `oasis push` and `oasis pull`: policy modules to and from an OCI
//! registry, as wasm artifacts (config `application/vnd.wasm.config.v0+json`,
//! one `application/wasm` layer) with the policy's name, version, contract
//! and settings hash as annotations. The flags that reach a registry
//! ([`RegistryArgs`]) are shared with `oasis serve`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use oasis::control::source::credentials::Credentials;
use oasis::control::source::oci::{OciRef, RegistryClient, RegistryConfig, annotation};
use oasis::control::source::signing::{self, PrivateKey, PublicKey};

/// How to reach registries (`oasis serve`, `push`, `pull`).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Speak plain HTTP, without TLS, to this registry (`host:port`);
    /// repeatable. Every other registry is spoken to over HTTPS.
    #[arg(long = "registry-plain-http", value_name = "HOST")]
    pub plain_http: Vec<String>,
    /// Registry credentials: a docker config.json (`auths`) [default:
    /// $DOCKER_CONFIG/config.json, else ~/.docker/config.json, if present].
    #[arg(long = "registry-auth", value_name = "FILE")]
    pub auth: Option<PathBuf>,
}

impl RegistryArgs {
    /// The registry configuration these flags give (defaults elsewhere).
    pub fn config(&self) -> anyhow::Result<RegistryConfig> {
        let credentials = Credentials::load(self.auth.as_deref())?;
        if let Some(file) = &credentials.file {
            tracing::debug!(file = %file.display(), registries = ?credentials.hosts().collect::<Vec<_>>(), "registry credentials");
        }
        Ok(RegistryConfig {
            plain_http: self.plain_http.iter().cloned().collect::<BTreeSet<_>>(),
            credentials,
            ..Default::default()
        })
    }
}

/// The public keys of `--verify-key`.
pub fn load_verify_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|p| PublicKey::load(p).context("--verify-key"))
        .collect()
}

fn parse_ref(text: &str) -> anyhow::Result<OciRef> {
    OciRef::parse(text).map_err(anyhow::Error::msg)
}

/// Arguments of `oasis push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The component (.wasm).
    pub module: PathBuf,
    /// Where: REGISTRY/REPOSITORY:TAG (`oci://` optional).
    pub reference: String,
    /// A manifest: the module is validated with its settings and limits,
    /// and the settings' hash is annotated.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Sign the pushed artifact with this private key (unencrypted PEM
    /// PKCS#8, P-256), as `cosign sign --key` does: the signature goes to
    /// the `sha256-<hex>.sig` tag of the same repository.
    #[arg(long, value_name = "KEY.pem")]
    pub sign_key: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub limits: super::LimitArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `oasis pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// What: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:…
    /// (`oci://` optional).
    pub reference: String,
    /// Where to write the component; `-` for stdout [default: the
    /// repository's last segment, `.wasm`, in the current directory].
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Require a cosign signature of the module's digest by this public key
    /// (PEM, P-256); repeatable (any one suffices). Unsigned or wrongly
    /// signed: nothing is written, exit 2.
    #[arg(long = "verify-key", value_name = "PUB.pem")]
    pub verify_keys: Vec<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `oasis push`: validates the module as `oasis inspect` does (with the
/// manifest's settings and limits when given), then publishes it.
pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let r = parse_ref(&args.reference)?;
    // A bad key is found before anything is pushed.
    let sign_key = match &args.sign_key {
        Some(p) => Some(PrivateKey::load(p).context("--sign-key")?),
        None => None,
    };
    let wasm = std::fs::read(&args.module)
        .with_context(|| format!("cannot read {}", args.module.display()))?;
    let runtime = oasis::Runtime::new(oasis::RuntimeConfig {
        max_instances: super::CLI_INSTANCES,
        ..Default::default()
    })?;
    let load_failed = |e: oasis::LoadError| {
        anyhow::Error::from(e).context(super::LoadFailed(format!(
            "{} does not load; not pushed",
            args.module.display()
        )))
    };
    let (info, settings_sha256) = match &args.manifest {
        Some(path) => {
            let m = oasis::control::manifest::Manifest::load(path)?;
            let policy = oasis::Policy::load(&runtime, &wasm, &m.settings_json, m.limits)
                .map_err(load_failed)?;
            (
                policy.info().clone(),
                Some(policy.settings_sha256().to_string()),
            )
        }
        None => (
            oasis::Policy::describe(&runtime, &wasm, args.limits.limits()).map_err(load_failed)?,
            None,
        ),
    };
    let mut annotations = BTreeMap::from([
        (annotation::NAME.to_string(), info.name.clone()),
        (annotation::VERSION.to_string(), info.version.clone()),
        (
            annotation::CONTRACT.to_string(),
            format!("oasis:policy@{}", info.contract),
        ),
        (annotation::OCI_TITLE.to_string(), info.name.clone()),
        (annotation::OCI_VERSION.to_string(), info.version.clone()),
    ]);
    if let Some(h) = &settings_sha256 {
        annotations.insert(annotation::SETTINGS_SHA256.to_string(), h.clone());
    }
    let client = RegistryClient::new(args.registry.config()?);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let pushed = rt.block_on(client.push(&r, &wasm, annotations.clone()))?;
    let signature_tag = match &sign_key {
        Some(key) => Some(
            rt.block_on(client.push_signature(&r, &pushed.manifest_digest, key))
                .context("the module was pushed, but its signature was not")?,
        ),
        None => None,
    };
    let pinned = format!(
        "oci://{}/{}@{}",
        r.registry(),
        r.repository(),
        pushed.manifest_digest
    );
    if args.json {
        let v = serde_json::json!({
            "reference": r.to_string(),
            "pinned": pinned,
            "manifest_digest": pushed.manifest_digest,
            "digest": pushed.module_digest,
            "annotations": annotations,
            "signature": signature_tag.as_ref().map(|t| format!("{}/{}:{t}", r.registry(), r.repository())),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "pushed {} {} ({}) to {r}",
            info.name, info.version, pushed.module_digest
        );
        println!("manifest: {}", pushed.manifest_digest);
        if let Some(t) = &signature_tag {
            println!("signed: {}/{}:{t}", r.registry(), r.repository());
        }
        println!("in a manifest, followed: module = \"{r}\"");
        println!("           or pinned:    module = \"{pinned}\"");
    }
    Ok(ExitCode::SUCCESS)
}

/// `oasis pull`: fetches and verifies a module, and writes it.
pub fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let r = parse_ref(&args.reference)?;
    let client = RegistryClient::new(args.registry.config()?);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let keys = load_verify_keys(&args.verify_keys)?;
    let pulled = rt.block_on(client.pull(&r, None))?;
    let verified_by = if keys.is_empty() {
        None
    } else {
        let layers = rt.block_on(client.signatures(&r, &pulled.manifest_digest))?;
        Some(
            signing::verify(&layers, &pulled.manifest_digest, &keys)
                .map_err(|e| anyhow::anyhow!("{r}: refused: {e}; nothing written"))?,
        )
    };
    let output = args.output.clone().unwrap_or_else(|| {
        let last = r.repository().rsplit('/').next().unwrap_or("module");
        PathBuf::from(format!("{last}.wasm"))
    });
    let to_stdout = output.as_os_str() == "-";
    if to_stdout {
        use std::io::Write as _;
        std::io::stdout()
            .write_all(&pulled.bytes)
            .context("writing the module to stdout")?;
    } else {
        let tmp = output.with_extension("wasm.part");
        std::fs::write(&tmp, &pulled.bytes)
            .and_then(|()| std::fs::rename(&tmp, &output))
            .with_context(|| format!("cannot write {}", output.display()))?;
    }
    let a = |k: &str| pulled.annotations.get(k).cloned().unwrap_or_default();
    let v = serde_json::json!({
        "reference": r.to_string(),
        "file": (!to_stdout).then(|| output.display().to_string()),
        "manifest_digest": pulled.manifest_digest,
        "digest": pulled.module_digest,
        "size_bytes": pulled.bytes.len(),
        "annotations": pulled.annotations,
        "verified_by": verified_by.as_ref().map(|p| p.display().to_string()),
    });
    // With the module on stdout, what was pulled goes to stderr.
    let say = |line: String| {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    if args.json {
        say(serde_json::to_string_pretty(&v)?);
    } else {
        say(format!(
            "pulled {} {} ({}, {} bytes) from {r}",
            a(annotation::NAME),
            a(annotation::VERSION),
            pulled.module_digest,
            pulled.bytes.len()
        ));
        say(format!("manifest: {}", pulled.manifest_digest));
        if let Some(k) = &verified_by {
            say(format!("signature verified with {}", k.display()));
        }
        if !to_stdout {
            say(format!("written to {}", output.display()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `oasis push-bundle`.
#[derive(Debug, clap::Args)]
pub struct PushBundleArgs {
    /// The policy directory: its manifests (*.toml, routes.toml) and
    /// modules (*.wasm); rollout state and hidden files stay behind.
    pub dir: PathBuf,
    /// Where: REGISTRY/REPOSITORY:TAG (`oci://` optional).
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `oasis pull-bundle`.
#[derive(Debug, clap::Args)]
pub struct PullBundleArgs {
    /// What: REGISTRY/REPOSITORY:TAG or …@sha256:… (`oci://` optional).
    pub reference: String,
    /// The policy directory to install it into (created if missing).
    pub dir: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `oasis push-bundle`: checks the directory as one policy set (exit 1
/// with every problem), then publishes it.
pub fn push_bundle(args: PushBundleArgs) -> anyhow::Result<ExitCode> {
    use oasis::control::bundle::{self, BundleError};
    let r = parse_ref(&args.reference)?;
    let files = bundle::collect(&args.dir)?;
    let dir = std::path::absolute(&args.dir).unwrap_or_else(|_| args.dir.clone());
    if let Err(e @ BundleError::Invalid(_)) = bundle::check(&files, &dir) {
        eprintln!("{}: {e}\nnot pushed", args.dir.display());
        return Ok(ExitCode::from(super::exit::CHECK_FAILED));
    }
    let client = RegistryClient::new(args.registry.config()?);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let published = rt.block_on(bundle::push(&client, &r, files))?;
    let names: Vec<&str> = published.files.iter().map(|f| f.name.as_str()).collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "reference": r.to_string(),
                "digest": published.digest,
                "files": names,
            }))?
        );
    } else {
        println!("pushed {} files to {r}: {}", names.len(), names.join(", "));
        println!("pinned: {}@{}", r.without_scheme(), published.digest);
    }
    Ok(ExitCode::SUCCESS)
}

/// `oasis pull-bundle`: fetches a bundle, verifies every digest, checks it
/// as a set and installs it into a directory.
pub fn pull_bundle(args: PullBundleArgs) -> anyhow::Result<ExitCode> {
    use oasis::control::bundle;
    let r = parse_ref(&args.reference)?;
    let client = RegistryClient::new(args.registry.config()?);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let pulled = rt.block_on(bundle::pull(&client, &r, None))?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = std::path::absolute(&args.dir).unwrap_or_else(|_| args.dir.clone());
    let installed = bundle::install(&dir, &r.to_string(), &pulled)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&installed)?);
    } else {
        println!(
            "installed {} ({} files) into {}",
            installed.digest,
            installed.files.len(),
            args.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
