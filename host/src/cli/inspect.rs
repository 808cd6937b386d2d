//! `oasis inspect`: what a policy is, what it needs, what it accepts.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `oasis inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy component (.wasm).
    pub policy: PathBuf,
    /// Settings to validate (JSON or .toml); defaults when absent.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limits: super::LimitArgs,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = oasis::Runtime::new(oasis::RuntimeConfig {
        max_instances: super::CLI_INSTANCES,
        ..Default::default()
    })?;
    let settings = super::read_settings(args.settings.as_deref())?;
    let policy = super::load_policy(&runtime, &args.policy, &settings, args.limits.limits())?;
    let i = policy.info();
    if args.json {
        println!("{}", serde_json::to_string_pretty(i)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("name:        {}", i.name);
    println!("version:     {}", i.version);
    println!("digest:      {}", i.digest);
    println!("size:        {} bytes", i.size_bytes);
    println!("sdk:         {}", i.sdk_version);
    println!("description: {}", i.description);
    println!("required features: {}", list(&i.required_features));
    println!("optional features: {}", list(&i.optional_features));
    println!("context features:  {}", list(&i.context_features));
    println!("settings:");
    if i.settings.is_empty() {
        println!("  (none)");
    }
    for s in &i.settings {
        println!("  {} = {}  {}", s.name, s.default_json, s.description);
    }
    Ok(ExitCode::SUCCESS)
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}
