//! Command-line interface: argument parsing and one module per subcommand.

pub mod inspect;
pub mod new;
pub mod replay;
pub mod rollout;
pub mod run;
pub mod serve;
pub mod telemetry;
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
    #[arg(long, global = true, value_enum, default_value_t = telemetry::LogFormat::Human)]
    pub log_format: telemetry::LogFormat,
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
    /// promote, rollback, kill, revive, shadow, audit.
    Rollout(rollout::Args),
    /// Replay decision logs: check determinism, or a candidate's divergence.
    Replay(replay::Args),
    /// Scaffold a Rust policy crate (settings, unit tests, a golden fixture).
    New(new::Args),
}

/// Runs the parsed command.
pub fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run::execute(a),
        Command::Test(a) => test::execute(a),
        Command::Inspect(a) => inspect::execute(a),
        Command::Serve(a) => serve::execute(a),
        Command::Rollout(a) => rollout::execute(a),
        Command::Replay(a) => replay::execute(a),
        Command::New(a) => new::execute(a),
    }
}

/// Pool size for one-shot commands (run, test, inspect): they run one call
/// at a time, so a small pool avoids reserving address space for 256.
pub const CLI_INSTANCES: u32 = 4;

/// Limits flags shared by the commands that load a policy.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// CPU deadline per call, milliseconds.
    #[arg(long, default_value_t = oasis::Limits::default().deadline.as_millis() as u64)]
    pub deadline_ms: u64,
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
    pub fn limits(&self) -> oasis::Limits {
        oasis::Limits {
            deadline: std::time::Duration::from_millis(self.deadline_ms),
            memory_bytes: self.memory_mb.saturating_mul(1 << 20),
            max_candidates: self.max_candidates,
            module_bytes: self.max_module_mb.saturating_mul(1 << 20),
        }
    }
}

/// Reads a settings file as JSON text: `.toml` files are converted, anything
/// else must be JSON. No file means the policy's defaults.
pub fn read_settings(path: Option<&Path>) -> anyhow::Result<String> {
    let Some(path) = path else {
        return Ok("{}".into());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read settings file {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "toml") {
        let value: toml::Value = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        Ok(serde_json::to_string(&value)?)
    } else {
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        Ok(value.to_string())
    }
}

/// Loads a policy file, with a message naming the file on failure.
pub fn load_policy(
    runtime: &oasis::Runtime,
    path: &Path,
    settings_json: &str,
    limits: oasis::Limits,
) -> anyhow::Result<oasis::Policy> {
    oasis::Policy::load_file(runtime, path, settings_json, limits)
        .with_context(|| format!("cannot load policy {}", path.display()))
}
