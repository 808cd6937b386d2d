//! Command-line interface: argument parsing and one module per subcommand.

pub mod check;
pub mod fleet;
pub mod inspect;
pub mod native;
pub mod new;
pub mod registry;
pub mod replay;
pub mod rollout;
pub mod run;
pub mod serve;
pub mod test;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Host for sandboxed WebAssembly promotion-scoring policies.
#[derive(Debug, Parser)]
#[command(name = "oasis", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = oasis::telemetry::logging::LogFormat::Human)]
    pub log_format: oasis::telemetry::logging::LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `oasis=debug`.
    #[arg(long, global = true, default_value = "info", env = "OASIS_LOG")]
    pub log_level: String,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score a request with a policy and print the response and resources used.
    Run(run::Args),
    /// Check a policy against golden fixtures (request + expected output).
    Test(test::Args),
    /// Print a policy's metadata, required features, settings and digest.
    Inspect(inspect::Args),
    /// Serve the scoring API on a policy directory, with hot reload.
    Serve(serve::Args),
    /// Operate rollouts through the admin API: status, upload, canary,
    /// promote, unpin, rollback, kill, revive, shadow, audit.
    Rollout(rollout::Args),
    /// The fleet: each replica's generation, age and refusals.
    Fleet(fleet::Args),
    /// Replay decision logs: check determinism, or a candidate's divergence.
    Replay(replay::Args),
    /// Scaffold a policy: a Rust crate, or a Python package with `--lang
    /// python` (settings, unit tests, a golden fixture).
    New(new::Args),
    /// Publish a policy module to an OCI registry (a wasm artifact with the
    /// policy's name, version, contract and settings hash as annotations).
    Push(registry::PushArgs),
    /// Fetch a policy module from an OCI registry, verified against its
    /// digest.
    Pull(registry::PullArgs),
    /// Publish a whole policy directory (manifests, routes.toml, modules)
    /// as one bundle, checked as a set first; `oasis serve --bundle`
    /// follows it.
    PushBundle(registry::PushBundleArgs),
    /// Fetch a policy bundle, verified, checked and installed into a
    /// directory.
    PullBundle(registry::PullBundleArgs),
    /// Validate a policy directory or manifest offline, as reload would
    /// load it; every problem listed, exit 1 if any.
    Check(check::Args),
    /// Print a shell completion script: `source <(oasis completions bash)`.
    Completions(CompletionsArgs),
    /// Internal: compile one component from stdin to stdout under a memory
    /// cap (the server's compile worker; see `oasis::compile_worker`).
    #[command(name = "__compile-worker", hide = true)]
    CompileWorker(CompileWorkerArgs),
}

/// Arguments of `oasis completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The command line as completions offer it: [`Cli`] without its hidden
/// subcommands (clap_complete's generators list them all, and
/// `__compile-worker` is no command for a person). `clap::Command` cannot
/// remove a subcommand, so the root is put together again from `Cli`'s own
/// arguments and visible subcommands: nothing is restated, nothing drifts.
fn completion_command() -> clap::Command {
    use clap::CommandFactory as _;
    let full = Cli::command();
    let mut cmd = clap::Command::new("oasis")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true);
    for arg in full.get_arguments() {
        cmd = cmd.arg(arg.clone());
    }
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(sub.clone());
    }
    cmd
}

/// Arguments of the internal compile worker.
#[derive(Debug, clap::Args)]
pub struct CompileWorkerArgs {
    /// The memory cap (RLIMIT_DATA), bytes.
    #[arg(long)]
    memory_bytes: u64,
    /// The parent's pool size (part of the engine's configuration).
    #[arg(long)]
    max_instances: u32,
    /// The parent counts fuel (part of the engine's configuration).
    #[arg(long)]
    fuel: bool,
    /// The parent's compile cache directory: the child reads and extends
    /// its function cache (`functions/`); the parent stores the artifact.
    #[arg(long)]
    cache_dir: Option<std::path::PathBuf>,
}

/// Runs the parsed command.
pub fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run::execute(a),
        Command::Test(a) => test::execute(a),
        Command::Inspect(a) => inspect::execute(a),
        Command::Serve(a) => serve::execute(a),
        Command::Rollout(a) => rollout::execute(a),
        Command::Fleet(a) => fleet::execute(a),
        Command::Replay(a) => replay::execute(a),
        Command::New(a) => new::execute(a),
        Command::Check(a) => check::execute(a),
        Command::Completions(a) => {
            clap_complete::generate(
                a.shell,
                &mut completion_command(),
                "oasis",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Push(a) => registry::push(a),
        Command::Pull(a) => registry::pull(a),
        Command::PushBundle(a) => registry::push_bundle(a),
        Command::PullBundle(a) => registry::pull_bundle(a),
        Command::CompileWorker(a) => {
            // This binary allocates with mimalloc (main.rs), whose default
            // 1 GiB arena reservation would count in the `VmData` the cap
            // is set above, so the compile could allocate inside it
            // unchecked. The parent always starts the worker without it
            // (runtime::compile_worker); a worker started any other way
            // refuses instead of compiling uncapped.
            if std::env::var_os("MIMALLOC_ARENA_RESERVE").as_deref() != Some("0".as_ref()) {
                eprintln!(
                    "the compile worker must run with MIMALLOC_ARENA_RESERVE=0 (its memory \
                     cap does not hold over mimalloc's arena reservation); `oasis serve` \
                     starts it so"
                );
                return Ok(ExitCode::from(2));
            }
            let config = oasis::RuntimeConfig {
                max_instances: a.max_instances,
                measure_fuel: a.fuel,
                cache_dir: a.cache_dir,
                ..Default::default()
            };
            match oasis::runtime::serve_compile_worker(a.memory_bytes, config) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(message) => {
                    eprintln!("{message}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// Pool size for one-shot commands (run, test, inspect): they run one call
/// at a time, so a small pool avoids reserving address space for 256.
pub const CLI_INSTANCES: u32 = 4;

/// Limits flags shared by the commands that load a policy.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// CPU deadline per call, milliseconds. Default: 20, or 100 for a Python
    /// component; given, it wins over a manifest's `deadline_ms`.
    #[arg(long)]
    pub deadline_ms: Option<u64>,
    /// Memory limit per instance, MiB.
    #[arg(long, default_value_t = oasis::Limits::default().memory_bytes >> 20)]
    pub memory_mb: usize,
    /// Maximum candidates per request.
    #[arg(long, default_value_t = oasis::Limits::default().max_candidates)]
    pub max_candidates: usize,
    /// Largest component accepted, MiB.
    #[arg(long, default_value_t = oasis::Limits::default().module_bytes >> 20)]
    pub max_module_mb: usize,
}

impl LimitArgs {
    /// The limits the flags make (an unset `--deadline-ms` is the
    /// unchosen default: see [`oasis::Limits::for_language`]).
    pub fn limits(&self) -> oasis::Limits {
        let defaults = oasis::Limits::default();
        oasis::Limits {
            deadline: self
                .deadline_ms
                .map_or(defaults.deadline, std::time::Duration::from_millis),
            memory_bytes: self.memory_mb.saturating_mul(1 << 20),
            max_candidates: self.max_candidates,
            module_bytes: self.max_module_mb.saturating_mul(1 << 20),
            // One-off CLI runs use a fresh instance per call; a manifest may opt in.
            reuse_instance_calls: 0,
            deadline_explicit: self.deadline_ms.is_some(),
        }
    }

    /// `base` (a manifest's limits) with an explicit `--deadline-ms` over
    /// its deadline.
    pub fn over(&self, base: oasis::Limits) -> oasis::Limits {
        match self.deadline_ms {
            Some(ms) => oasis::Limits {
                deadline: std::time::Duration::from_millis(ms),
                deadline_explicit: true,
                ..base
            },
            None => base,
        }
    }
}

/// Exit statuses of the `oasis` commands (the table in docs/writing-policies.md).
pub mod exit {
    /// The command ran and found a problem: a fixture mismatch, replay
    /// differences, `oasis check` problems, a refused rollout change.
    pub const CHECK_FAILED: u8 = 1;
    /// Usage: bad arguments, an input file that cannot be read or parsed, a
    /// server that cannot be reached (clap's own code for usage errors).
    pub const USAGE: u8 = 2;
    /// The policy did not load: not a component, does not compile, wrong
    /// contract, bad metadata, refused settings, failed smoke test.
    pub const LOAD_FAILED: u8 = 3;
    /// The policy loaded but failed on the request: trap, timeout, memory,
    /// invalid output.
    pub const POLICY_FAILED: u8 = 4;
}

/// Marks an error as "the policy did not load" ([`exit::LOAD_FAILED`]).
#[derive(Debug)]
pub struct LoadFailed(pub String);

/// Marks an error as "the policy failed on the request"
/// ([`exit::POLICY_FAILED`]).
#[derive(Debug)]
pub struct PolicyFailed(pub String);

impl std::fmt::Display for LoadFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for PolicyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The exit status of a command that failed with `e`.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<LoadFailed>().is_some()
        || e.downcast_ref::<oasis::replay::ReplayError>()
            .is_some_and(|e| e.is_load_failure())
    {
        exit::LOAD_FAILED
    } else if e.downcast_ref::<PolicyFailed>().is_some() {
        exit::POLICY_FAILED
    } else {
        exit::USAGE
    }
}

/// Settings as JSON text, from what the user typed after `--settings`:
///
/// * inline JSON (`'{"theta": 0.3}'`);
/// * a `.toml` file: a policy manifest (its `[settings]`) or a plain
///   settings table;
/// * any other file: JSON.
///
/// No value means the policy's defaults.
pub fn read_settings(arg: Option<&Path>) -> anyhow::Result<String> {
    let Some(path) = arg else {
        return Ok("{}".into());
    };
    let text = path.to_string_lossy();
    if text.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("--settings {text:?} is not valid JSON"))?;
        return Ok(value.to_string());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read settings file {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "toml") {
        if looks_like_manifest(&text) {
            let m = oasis::control::manifest::Manifest::parse(path, &text)?;
            return Ok(m.settings_json);
        }
        let value: toml::Value = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        Ok(serde_json::to_string(&value)?)
    } else {
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        Ok(value.to_string())
    }
}

/// The limits of a policy manifest given as `--settings` (`None` for any
/// other settings value).
fn manifest_limits(path: &Path) -> anyhow::Result<Option<oasis::Limits>> {
    if path.extension().is_none_or(|e| e != "toml") {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read settings file {}", path.display()))?;
    if !looks_like_manifest(&text) {
        return Ok(None);
    }
    Ok(Some(
        oasis::control::manifest::Manifest::parse(path, &text)?.limits,
    ))
}

/// Whether TOML text is a policy manifest (it names its module).
fn looks_like_manifest(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("module"))
}

/// A policy as the commands take it: a component, or a manifest naming one
/// with its settings and limits.
pub struct PolicyArg {
    /// The component file.
    pub module: std::path::PathBuf,
    /// Settings JSON from the manifest, if it was one.
    pub settings: Option<String>,
    /// Limits from the manifest, if it was one.
    pub limits: Option<oasis::Limits>,
}

impl PolicyArg {
    /// Resolves `path`: a `.toml` manifest gives its module, settings and
    /// limits; anything else is the component itself.
    pub fn resolve(path: &Path) -> anyhow::Result<PolicyArg> {
        if path.extension().is_some_and(|e| e == "toml") {
            let m = oasis::control::manifest::Manifest::load(path)?;
            let module = m
                .module
                .local_path()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                .to_path_buf();
            return Ok(PolicyArg {
                module,
                settings: Some(m.settings_json),
                limits: Some(m.limits),
            });
        }
        Ok(PolicyArg {
            module: path.to_owned(),
            settings: None,
            limits: None,
        })
    }

    /// Loads it: `--settings` (when given) over the manifest's settings;
    /// the limits of the manifest given as the policy, else of one given as
    /// `--settings`, over the flags' (an explicit `--deadline-ms` wins over
    /// both).
    pub fn load(
        &self,
        runtime: &oasis::Runtime,
        settings_flag: Option<&Path>,
        limits: &LimitArgs,
    ) -> anyhow::Result<oasis::Policy> {
        let settings = match (settings_flag, &self.settings) {
            (Some(flag), _) => read_settings(Some(flag))?,
            (None, Some(manifest)) => manifest.clone(),
            (None, None) => "{}".into(),
        };
        let manifest_limits = match self.limits {
            Some(l) => Some(l),
            None => settings_flag.map(manifest_limits).transpose()?.flatten(),
        };
        let limits = match manifest_limits {
            Some(l) => limits.over(l),
            None => limits.limits(),
        };
        load_policy(runtime, &self.module, &settings, limits)
    }
}

/// Loads a policy file, with a message naming the file on failure (marked
/// [`LoadFailed`]).
pub fn load_policy(
    runtime: &oasis::Runtime,
    path: &Path,
    settings_json: &str,
    limits: oasis::Limits,
) -> anyhow::Result<oasis::Policy> {
    // A long compile's progress lines name the file.
    let _load = tracing::info_span!("load", module = %path.display()).entered();
    oasis::Policy::load_file(runtime, path, settings_json, limits).map_err(|e| {
        anyhow::Error::from(e).context(LoadFailed(format!("cannot load policy {}", path.display())))
    })
}
